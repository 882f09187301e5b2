"""Every message on the bus: typed schemas, one msgpack encode/decode path, versioned.

Wire format: a msgpack map of the dataclass fields plus `t` (the message type) and `v` (its
schema version). Decoding ignores unknown keys (a newer producer may add fields without
breaking older consumers), fills defaults for optional fields, and refuses with
`DecodeError` (naming the problem) when the bytes are not msgpack, the type or version is
wrong, or a required field is missing or of the wrong kind. The runtime turns a `DecodeError`
into a dead letter and carries on.

Validation is deliberately shallow (container kinds and scalar types of top-level fields):
grids are validated where their meaning matters (`soar_async.arc.check_grid`), and a deep
walk over 50 programs' outputs on every hop would cost more than the bus itself.
"""

from __future__ import annotations

import dataclasses
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgpack

from soar_async.arc import Grid
from soar_async.bus import topology as T

M = TypeVar("M", bound="Message")


class DecodeError(ValueError):
    """A payload that is not a valid message of the expected type; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_REGISTRY: dict[str, type[Message]] = {}


@dataclass(slots=True, kw_only=True)
class Message:
    """Base of all bus messages. Subclasses set TYPE, VERSION and SUBJECT."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    MIN_VERSION: ClassVar[int] = 1
    """Oldest schema version this code still reads (bump VERSION and keep reading old ones)."""
    SUBJECT: ClassVar[str] = ""

    def subject(self) -> str:
        """Where this message is published (subclasses may route by content)."""
        return self.SUBJECT

    def dedup_id(self) -> str | None:
        """Nats-Msg-Id for JetStream dedup, or None: same id = same fact, stored once."""
        return None

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _field_names(type(self))}
        d["t"] = self.TYPE
        d["v"] = self.VERSION
        return d

    def encode(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls: type[M], data: bytes) -> M:
        return decode(data, cls)


_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def encode(msg: Message) -> bytes:
    """The one encoder: msgpack map with `t` and `v`."""
    return msgpack.packb(msg.to_dict(), use_bin_type=True)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = typing.get_type_hints(cls, globalns={**globals(), "Grid": Grid})
        _HINTS[cls] = h
    return h


Check = Callable[[Any], bool]
_CHECKS: dict[Any, Check] = {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_for(hint: Any) -> Check:
    """The shallow check for one annotation: the value's container/scalar kind matches it.
    Worked out once per annotation (typing's introspection costs more than the check)."""
    check = _CHECKS.get(hint)
    if check is not None:
        return check
    origin = get_origin(hint)
    if hint is Any:
        check = _always
    elif origin in (Union, types.UnionType):
        parts = tuple(_check_for(a) for a in get_args(hint))

        def check(value: Any) -> bool:
            return any(p(value) for p in parts)
    elif hint is type(None):
        check = _is_none
    elif origin in (list, tuple):
        check = _is_sequence
    elif origin is dict:
        check = _is_dict
    elif hint is float:
        check = _is_number
    elif hint is int:
        check = _is_int
    elif isinstance(hint, type):
        cls = hint

        def check(value: Any) -> bool:
            return isinstance(value, cls)
    else:
        check = _always
    _CHECKS[hint] = check
    return check


def _always(value: Any) -> bool:
    return True


def _is_none(value: Any) -> bool:
    return value is None


def _is_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


_FIELDS: dict[type, tuple[tuple[str, Check, Any, bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, Check, Any, bool], ...]:
    """Per field of a message type: name, check, annotation (for the error) and whether it is
    required; worked out once per type."""
    out = _FIELDS.get(cls)
    if out is None:
        hints = _hints(cls)
        out = tuple(
            (
                f.name,
                _check_for(hints[f.name]),
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )
        _FIELDS[cls] = out
    return out


def decode(data: bytes, expected: type[M] | None = None) -> M:
    """Decode and validate; `expected` pins the type, otherwise `t` chooses it from the registry."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:
        raise DecodeError(f"not msgpack: {type(e).__name__}: {e or 'invalid data'}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"not a msgpack map but {type(obj).__name__}")
    t = obj.get("t")
    cls: type[Message] | None
    if expected is not None:
        cls = expected
        if t is not None and t != expected.TYPE:
            raise DecodeError(f"message type {t!r}, expected {expected.TYPE!r}")
    else:
        cls = all_message_types().get(t) if isinstance(t, str) else None
        if cls is None:
            raise DecodeError(f"unknown message type {t!r}")
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise DecodeError(f"{cls.TYPE}: missing or non-integer schema version 'v' ({v!r})")
    if v > cls.VERSION or v < cls.MIN_VERSION:
        raise DecodeError(
            f"{cls.TYPE}: schema version {v} not supported (this build reads {cls.MIN_VERSION}..{cls.VERSION})"
        )
    kwargs: dict[str, Any] = {}
    missing = []
    for name, check, hint, required in _fields(cls):
        if name in obj:
            val = obj[name]
            if not check(val):
                raise DecodeError(f"{cls.TYPE}: field {name!r} has {type(val).__name__}, expected {hint}")
            kwargs[name] = val
        elif required:
            missing.append(name)
    if missing:
        raise DecodeError(f"{cls.TYPE}: missing required field(s) {', '.join(missing)}")
    return cls(**kwargs)  # type: ignore[return-value]


def all_message_types() -> dict[str, type[Message]]:
    """Every Message subclass by its TYPE (found by walking subclasses: `slots=True` dataclasses
    are re-created by the decorator, so registering in `__init_subclass__` would keep the wrong class)."""
    if not _REGISTRY:
        stack = list(Message.__subclasses__())
        while stack:
            c = stack.pop()
            stack.extend(c.__subclasses__())
            if c.TYPE and "__slots__" in c.__dict__:
                _REGISTRY[c.TYPE] = c
    return _REGISTRY


def message_type(name: str) -> type[Message]:
    return all_message_types()[name]


# --- the messages of the design (DESIGN section 2) ------------------------------------------


@dataclass(slots=True, kw_only=True)
class TaskSubmitted(Message):
    """A task enters the system (CLI submit, continual feed)."""

    TYPE: ClassVar[str] = "task_submitted"
    SUBJECT: ClassVar[str] = T.EVT_TASK_SUBMITTED
    task_id: str
    task: dict[str, Any] | None = None
    """The task in ARC JSON layout, or None when `task_ref` names an object-store blob."""
    task_ref: str | None = None
    source: str = ""
    budget: int | None = None
    submitted_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        """One subject per task (`<prefix>.<task token>`): the stream keeps each task's latest
        submission, which the conductor reads back after a restart."""
        return f"{T.EVT_TASK_SUBMITTED}.{T.subject_token(self.task_id)}"

    def dedup_id(self) -> str | None:
        import hashlib
        import json

        body = json.dumps(self.task, sort_keys=True) if self.task is not None else str(self.task_ref)
        return f"task:{self.task_id}:{hashlib.sha256(body.encode()).hexdigest()[:16]}"


@dataclass(slots=True, kw_only=True)
class GenRequest(Message):
    """Ask an LLM actor for completions (sampling or refinement)."""

    TYPE: ClassVar[str] = "gen_request"
    SUBJECT: ClassVar[str] = T.WORK_GEN
    request_id: str
    task_id: str
    kind: str = "sample"
    """'sample' or 'refine'."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Chat messages [{role, content}]."""
    n: int = 1
    max_tokens: int = 4096
    temperature: float = 1.0
    min_p: float = 0.05
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    parent_id: str | None = None
    model_version: str | None = None
    """Serve with this version (an adapter's name); None: whatever is current."""
    generation: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    """Opaque to the LLM actor and echoed in the `Completions`: the asker's bookkeeping
    (the search's slot and REX island), so that no map from request to context is kept."""
    submitted_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        return T.gen_subject(self.task_id)

    def dedup_id(self) -> str | None:
        return f"gen:{self.request_id}"


@dataclass(slots=True, kw_only=True)
class Completions(Message):
    """What an LLM actor produced for one GenRequest."""

    TYPE: ClassVar[str] = "completions"
    SUBJECT: ClassVar[str] = T.EVT_COMPLETIONS
    request_id: str
    task_id: str
    texts: list[str]
    kind: str = "sample"
    parent_id: str | None = None
    model_version: str | None = None
    """The version that wrote every one of `texts` (a request never mixes versions)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    """Tokens of each text."""
    finish_reasons: list[str] = field(default_factory=list)
    """Per text: "stop" or "length" (cut at max_tokens)."""
    seconds: float = 0.0
    """Time inside the engine."""
    worker_id: str = ""
    generation: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    """The request's `meta`, unchanged."""
    error: str = ""
    """Why the request could not be served at all (e.g. a prompt longer than the model's
    context); then `texts` is empty. The asker resolves its slot instead of waiting forever."""

    def subject(self) -> str:
        return T.completions_subject(self.task_id)

    def dedup_id(self) -> str | None:
        return f"completions:{self.request_id}"


@dataclass(slots=True, kw_only=True)
class Provenance(Message):
    """Where a program comes from: the fields that travel with it through every hop (request,
    result, their batches), so that the last event alone makes a complete archive record."""

    task_id: str
    parent_id: str | None = None
    generation: int = 0
    origin: str = "sample"
    """'sample' (written from the task alone) or 'refine' (written from `parent_id`)."""
    model_version: str = ""
    """The model that wrote the program ("" for hand-written or baseline programs)."""
    task_digest: str = ""
    """`Task.digest` of the task the inputs come from."""


PROVENANCE = ("task_id", "parent_id", "generation", "origin", "model_version", "task_digest")
"""`Provenance`'s fields: shared by every program of a batch."""


@dataclass(slots=True, kw_only=True)
class ExecRequest(Provenance):
    """Run one program on all of its task's inputs.

    `inputs` are the train inputs then the test inputs; `train_outputs` (known outputs of the
    train pairs, in order) let the executor score the program. Large inputs travel by
    reference: `inputs_ref` names an object in the `soar_blobs` store holding a msgpack map
    {inputs, train_outputs}. Executors cache blobs by name, so a name must never be reused
    for other content: put the task's digest in it (`inputs/<task id>-<Task.digest>`).

    `parent_id`, `origin`, `model_version`, `generation` and `task_digest` are not used to
    run the program: the executor copies them into its `Evaluated`, so that the event alone
    makes a complete archive record (`ProgramRecord.from_evaluated`).
    """

    TYPE: ClassVar[str] = "exec_request"
    SUBJECT: ClassVar[str] = T.WORK_EXEC
    program_id: str
    """`records.program_id(task_id, code, task_digest)`."""
    code: str
    inputs: list[Grid] | None = None
    train_outputs: list[Grid | None] | None = None
    inputs_ref: str | None = None
    norm: str = ""
    """Digest of the normalised code (`search.plan.norm_key`) where the sender computed it,
    so that the archive need not parse the program again."""
    submitted_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        return T.exec_subject(self.task_id)

    def dedup_id(self) -> str | None:
        return f"exec:{self.program_id}"


@dataclass(slots=True, kw_only=True)
class Evaluated(Provenance):
    """A program's outputs on every input, and how it did on the train pairs.

    Carries the program (code, parent, origin, model version, generation, task digest,
    copied from its `ExecRequest`) so that a consumer builds the complete archive record from
    the event and the task alone (`ProgramRecord.from_evaluated`), with no map kept from
    requests to code.

    Version 2: `code` is required (version 1 events never carried it, so they cannot make
    records; they are refused); `origin`, `model_version` and `task_digest` added.
    """

    TYPE: ClassVar[str] = "evaluated"
    VERSION: ClassVar[int] = 2
    MIN_VERSION: ClassVar[int] = 2
    SUBJECT: ClassVar[str] = T.EVT_EVALUATED
    program_id: str
    code: str
    outputs: list[Grid | None]
    errors: list[str | None]
    """Per input: None, or the ErrorKind value (timeout, exception, invalid_output, ...)."""
    details: list[str | None] = field(default_factory=list)
    train_correct: list[bool] = field(default_factory=list)
    fitness: float = 0.0
    """h = fraction of train pairs exactly right (0 when the train outputs were not given)."""
    duration_s: float = 0.0
    """Sandbox time for the program (all inputs)."""
    stdout: str = ""
    worker_id: str = ""
    norm: str = ""
    """The request's `norm`, copied."""

    def subject(self) -> str:
        return T.evaluated_subject(self.task_id)

    def dedup_id(self) -> str | None:
        return f"evaluated:{self.program_id}"


def _rows(batch: Message, cls: type[M], columns: dict[str, str], shared: tuple[str, ...]) -> list[M]:
    """A columnar batch's items: one `cls` per row, the `columns` (batch field -> item field)
    taken row by row and the `shared` fields copied. Refuses columns of unequal length."""
    cols = {item: getattr(batch, col) for col, item in columns.items()}
    n = len(next(iter(cols.values())))
    optional = _optional(type(batch))
    short = [col for col, item in columns.items() if len(cols[item]) != n and (cols[item] or col not in optional)]
    if short:
        raise DecodeError(f"{batch.TYPE}: column(s) {', '.join(short)} do not have {n} rows")
    common = {f: getattr(batch, f) for f in shared}
    try:
        return [cls(**common, **{item: col[i] for item, col in cols.items() if col}) for i in range(n)]
    except (TypeError, ValueError) as e:
        raise DecodeError(f"{batch.TYPE}: a row is not a valid {cls.TYPE}: {e}") from None


def _optional(cls: type) -> frozenset[str]:
    """Fields of `cls` with a default (a batch may leave such a column empty)."""
    return frozenset(name for name, _check, _hint, required in _fields(cls) if not required)


def _columns(items: list[Any], columns: dict[str, str], shared: tuple[str, ...], what: str) -> dict[str, Any]:
    """The batch fields of `items` (the inverse of `_rows`); they must agree on every shared field."""
    if not items:
        raise ValueError(f"an empty {what}")
    first = items[0]
    for f in shared:
        if any(getattr(x, f) != getattr(first, f) for x in items):
            raise ValueError(f"{what}: the programs differ in {f!r}; batch only programs of one completion batch")
    return {
        **{f: getattr(first, f) for f in shared},
        **{col: [getattr(x, item) for x in items] for col, item in columns.items()},
    }


@dataclass(slots=True, kw_only=True)
class ProgramBatch(Provenance):
    """Base of the batch messages: per-program fields as columns (`COLUMNS`: batch field ->
    item field), beside the fields every program of the batch shares (`SHARED`)."""

    ITEM: ClassVar[type[Message]]
    COLUMNS: ClassVar[dict[str, str]]
    SHARED: ClassVar[tuple[str, ...]]
    ROUTE: ClassVar[Callable[[str], str]]
    """Task id -> subject: the one its single messages take, so a batch goes where they go."""

    batch_id: str
    """Unique per batch and stable across resends (the exec batch's: the request id and a hash
    of its program ids; the evaluated batch copies it)."""

    @classmethod
    def of(cls: type[M], batch_id: str, items: list[Any]) -> M:
        b: Any = cls
        b.check_items(items)
        return cls(batch_id=batch_id, **_columns(items, b.COLUMNS, b.SHARED, b.TYPE))

    @classmethod
    def check_items(cls, items: list[Any]) -> None:
        """Refuse (ValueError) items that cannot travel in this kind of batch; all may by default."""

    def items(self) -> list[Any]:
        """The single messages the batch stands for, in order."""
        return _rows(self, self.ITEM, self.COLUMNS, self.SHARED)

    def __len__(self) -> int:
        return len(getattr(self, next(iter(self.COLUMNS))))

    def subject(self) -> str:
        return type(self).ROUTE(self.task_id)

    def dedup_id(self) -> str | None:
        return f"{self.TYPE}:{self.batch_id}"


@dataclass(slots=True, kw_only=True)
class ExecBatch(ProgramBatch):
    """Several programs of one task to run, as one job: the programs of one completion batch.

    Every message on the bus costs a publish, a fetch and an ack (and the sockets' wake-ups)
    on each hop, which is as much CPU as a light program's whole run in the sandbox; the
    search's programs come in batches (one `Completions` writes up to `n` of them) sharing a
    task, parent, origin, model version and generation, so they travel together: columns of
    per-program fields beside the shared ones. `requests()` gives the `ExecRequest`s it stands
    for; the executor answers with one `EvaluatedBatch`. Single `ExecRequest`s remain the
    form for programs sent one by one (`soar exec`, the baseline programs).
    """

    TYPE: ClassVar[str] = "exec_batch"
    SUBJECT: ClassVar[str] = T.WORK_EXEC
    ITEM: ClassVar[type[Message]] = ExecRequest
    ROUTE: ClassVar[Callable[[str], str]] = staticmethod(T.exec_subject)
    COLUMNS: ClassVar[dict[str, str]] = {"program_ids": "program_id", "codes": "code", "norms": "norm"}
    SHARED: ClassVar[tuple[str, ...]] = (*PROVENANCE, "inputs_ref")

    program_ids: list[str]
    codes: list[str]
    norms: list[str] = field(default_factory=list)
    inputs_ref: str | None = None
    """The task's inputs in the object store (as `ExecRequest.inputs_ref`); batches never carry grids."""
    submitted_at: float = field(default_factory=time.time)

    @classmethod
    def check_items(cls, items: list[Any]) -> None:
        if any(r.inputs is not None for r in items):
            raise ValueError("exec batch: requests must name their inputs by inputs_ref")

    def requests(self) -> list[ExecRequest]:
        """`items()`, under the name the executor's readers expect."""
        return self.items()


@dataclass(slots=True, kw_only=True)
class EvaluatedBatch(ProgramBatch):
    """The `Evaluated` of every program of one `ExecBatch`, as one event (columns per program).

    `items()` gives the `Evaluated`s; consumers treat each exactly as a single one."""

    TYPE: ClassVar[str] = "evaluated_batch"
    SUBJECT: ClassVar[str] = T.EVT_EVALUATED
    ITEM: ClassVar[type[Message]] = Evaluated
    ROUTE: ClassVar[Callable[[str], str]] = staticmethod(T.evaluated_subject)
    COLUMNS: ClassVar[dict[str, str]] = {
        "program_ids": "program_id", "codes": "code", "norms": "norm", "outputs": "outputs", "errors": "errors",
        "details": "details", "train_correct": "train_correct", "fitness": "fitness", "duration_s": "duration_s",
        "stdout": "stdout",
    }  # fmt: skip
    SHARED: ClassVar[tuple[str, ...]] = (*PROVENANCE, "worker_id")

    program_ids: list[str]
    codes: list[str]
    outputs: list[list[Grid | None]]
    errors: list[list[str | None]]
    norms: list[str] = field(default_factory=list)
    details: list[list[str | None]] = field(default_factory=list)
    train_correct: list[list[bool]] = field(default_factory=list)
    fitness: list[float] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    worker_id: str = ""


@dataclass(slots=True, kw_only=True)
class TaskStatus(Message):
    """Where a task stands (also kept as the latest value in the `soar_tasks` bucket)."""

    TYPE: ClassVar[str] = "task_status"
    SUBJECT: ClassVar[str] = T.EVT_TASK_STATUS
    task_id: str
    state: str
    """'queued', 'running', 'solved', 'done', 'failed'."""
    programs: int = 0
    correct: int = 0
    generation_correct: int = 0
    """Of `correct` (programs right on every train pair, all generations), those this
    generation found: the early stop counts these, so a later generation searches anew."""
    best_fitness: float = 0.0
    generation: int = 0
    sample_slots: int = 0
    """Sampling requests the search plans for the task (0 when it is not searched)."""
    sample_resolved: int = 0
    """Of those, how many came back or were skipped (the search stopped early)."""
    refine_slots: int = 0
    refine_resolved: int = 0
    pending: int = 0
    """Distinct programs proposed but not evaluated yet."""
    arms: int = 0
    """Programs that ran without error on every input: REX's candidate parents."""
    tokens: int = 0
    """Completion tokens spent on the task."""
    sampling_settled: bool = False
    """Every sampling slot resolved and every sampled program evaluated: no more roots will come."""
    updated_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        return T.task_status_subject(self.task_id)


@dataclass(slots=True, kw_only=True)
class SearchTask(Message):
    """Search a task in a generation with these budgets (the solve driver or the conductor sends it).

    The proposer, the refiner and the archive each read every one (durable, partitioned by
    task). Budgets count completions; requests ask for `n` completions each, so the search
    has ceil(budget / n) request *slots* per phase, numbered from 0, each resolved exactly
    once: by its `Completions` or, when the task stopped early, by being skipped.
    """

    TYPE: ClassVar[str] = "search_task"
    SUBJECT: ClassVar[str] = T.EVT_SEARCH

    task_id: str
    task: dict[str, Any]
    """The task in ARC JSON layout (test outputs included where known: only the archive
    reads them, to score; prompts never show them)."""
    generation: int = 0
    samples: int = 0
    refinements: int = 0
    n_sample: int = 50
    """Completions per sampling request."""
    n_refine: int = 4
    """Completions per refinement request."""
    stop_after_correct: int = 0
    """Stop once this many distinct programs are right on every train pair (0: never)."""
    requests_in_flight: int = 4
    """Requests per phase kept in flight: slot k's completion sends slot k + this."""
    model_version: str = ""
    """The model version this generation's requests name ("": whatever the LLM workers serve).
    The conductor sets it after a hot-swap, so that no request of the new generation is
    answered by the old model."""
    submitted_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        return T.sharded(T.EVT_SEARCH, self.task_id)

    def dedup_id(self) -> str | None:
        return f"search:{self.generation}:{self.task_id}"


@dataclass(slots=True, kw_only=True)
class Proposals(Message):
    """What one generation request slot yielded: one entry per completion, or nothing (skipped).

    Published by the proposer (kind "sample") and the refiner (kind "refine") after they
    extract the programs, so that the archive records every completion, also those without
    a program, with its tokens and model version, and counts each slot once. Each entry:
    {"program_id": str | None, "norm": str | None, "code": str | None, "tokens": int,
    "finish_reason": str}. `norm` is the digest of the program's normalised code: equal
    norms on a task are duplicates, run once and counted in the vote as often as written.
    """

    TYPE: ClassVar[str] = "proposals"
    SUBJECT: ClassVar[str] = T.EVT_PROPOSALS

    task_id: str
    kind: str
    """'sample' or 'refine'."""
    slot: int
    generation: int = 0
    request_id: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: bool = False
    """The slot was never requested: the task stopped before its turn."""
    error: str = ""
    """The LLM could not serve the request (`Completions.error`): resolved with no completions."""
    parent_id: str | None = None
    island: int | None = None
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: float = field(default_factory=time.time)

    def subject(self) -> str:
        return T.sharded(T.EVT_PROPOSALS, self.task_id)

    def dedup_id(self) -> str | None:
        return f"proposals:{self.generation}:{self.kind}:{self.task_id}:{self.slot}"


@dataclass(slots=True, kw_only=True)
class ArchiveQuery(Message):
    """A question to the archive that owns `task_id` (core NATS request/reply, never stored).

    what: "status" (TaskStatus fields), "arms" (programs without errors: id, h, origin,
    parent, island, refinements asked of each per island), "vote" (the attempts per test
    input), "records" (every evaluated program of the task as ProgramRecord dicts, duplicates
    counted in `extra.count`), "record" (one program's ProgramRecord dict, `program_id`),
    "dataset" (the task's relabelled training examples of generations up to `generation`,
    written as JSONL to the blob store: the answer names the object and counts what went in).
    """

    TYPE: ClassVar[str] = "archive_query"
    SUBJECT: ClassVar[str] = T.QUERY_ARCHIVE

    task_id: str
    what: str
    generation: int | None = None
    program_id: str | None = None
    """For "record": the program whose record is wanted."""
    params: dict[str, Any] = field(default_factory=dict)
    """For "dataset": `sampling` and `refinement` examples per task, `test_time` (bool or
    None: when the task has no known test outputs), `seed`, `name` (the object to write)."""

    def subject(self) -> str:
        return T.sharded(T.QUERY_ARCHIVE, self.task_id)


@dataclass(slots=True, kw_only=True)
class ArchiveAnswer(Message):
    """The archive's reply: `result` for the query, or `error` naming what was wrong."""

    TYPE: ClassVar[str] = "archive_answer"

    task_id: str
    what: str
    result: Any = None
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class ModelUpdated(Message):
    """A new model version that every LLM actor takes up for new requests.

    The adapter (a PEFT directory) travels as a tar archive in the `soar_adapters` object
    store under `adapter_ref`, so workers on any machine can load it; `adapter_path` may name
    a directory instead, for workers that share a filesystem with the trainer.
    """

    TYPE: ClassVar[str] = "model_updated"
    SUBJECT: ClassVar[str] = T.EVT_MODEL_UPDATED
    version: str
    adapter_ref: str | None = None
    adapter_path: str | None = None
    base_model: str = ""
    generation: int = 0
    """The generation whose search this version serves (trained on the ones before it)."""
    train: dict[str, Any] = field(default_factory=dict)
    """How it was trained: steps, examples, first and final loss, seconds."""
    created_at: float = field(default_factory=time.time)

    def dedup_id(self) -> str | None:
        return f"model:{self.version}"


@dataclass(slots=True, kw_only=True)
class TrainRequest(Message):
    """Fine-tune a model on a relabelled dataset (object-store reference)."""

    TYPE: ClassVar[str] = "train_request"
    SUBJECT: ClassVar[str] = T.WORK_TRAIN
    request_id: str
    dataset_ref: str
    base_model: str = ""
    generation: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def dedup_id(self) -> str | None:
        return f"train:{self.request_id}"


@dataclass(slots=True, kw_only=True)
class Heartbeat(Message):
    """A live worker: what it is, where, how busy (the `soar_workers` bucket holds the latest)."""

    TYPE: ClassVar[str] = "heartbeat"
    worker_id: str
    role: str
    host: str
    pid: int
    version: str
    concurrency: int = 1
    in_flight: int = 0
    load: float = 0.0
    """in_flight / concurrency, averaged over the last heartbeat interval."""
    counters: dict[str, int] = field(default_factory=dict)
    """ok, failed (nak'd), dead_lettered, redelivered."""
    rate: float = 0.0
    """Messages completed per second over the last minute."""
    started_at: float = field(default_factory=time.time)
    ts: float = field(default_factory=time.time)
    state: str = "running"
    info: dict[str, Any] = field(default_factory=dict)
    """Role-specific figures (an LLM worker: model version, tokens/s, requests in the engine)."""


@dataclass(slots=True, kw_only=True)
class LogEvent(Message):
    """A structured log or progress event, forwarded to `soar.log.<actor>` for `soar logs`."""

    TYPE: ClassVar[str] = "log"
    ts: float
    level: str
    event: str
    actor: str = ""
    worker_id: str = ""
    task_id: str | None = None
    program_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def subject(self) -> str:
        return T.log_subject(self.actor or "unknown")
