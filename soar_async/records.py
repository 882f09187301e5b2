"""The archive's unit: one program for one task, with what it produced and how it scored.

A `ProgramRecord` is what the executor reports, what the archive stores, what REX reads
fitness from, and what relabelling turns into training data, so it carries everything
needed by all of them and serialises to plain msgpack/JSON types.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from soar_async.arc import Grid, Task
from soar_async.scoring import correctness, outputs_key, validate_output

if TYPE_CHECKING:
    from soar_async.messages import Evaluated

ORIGINS = ("sample", "refine")


def program_id(task_id: str, code: str, task_digest: str) -> str:
    """The one program id: the same code for the same task (id and grids) is the same program
    wherever and whenever it was written, which lets the bus and the archive skip duplicates.

    `task_digest` (`Task.digest`) keeps tasks that share an id but not their grids apart
    (ARC-AGI-1 and -2 share task ids), so a result computed on other grids is never reused.
    It is required: "" means "grids unknown" (released SOAR data carries no grids) and gives
    ids of their own, never equal to those of a known task.
    """
    return hashlib.sha256(f"{task_id}\x00{task_digest}\x00{code}".encode()).hexdigest()[:20]


@dataclass(slots=True)
class ProgramRecord:
    """One program's run on all inputs of its task (train inputs first, then test inputs).

    `train_correct[i]` is exact equality with the true train output; `test_correct[i]` is
    None where the test output is unknown. An error string (exception text, "invalid
    output: ...", timeout...) stands in for each output that is None.

    `id` is always `program_id(task_id, code, task_digest)`: left empty it is computed, given
    it is checked (a mismatch raises ValueError), so no record carries an id of another form.
    """

    task_id: str
    task_digest: str
    """`Task.digest` of the task the program ran on ("" when its grids are unknown)."""
    code: str
    train_outputs: list[Grid | None]
    test_outputs: list[Grid | None]
    train_errors: list[str | None]
    test_errors: list[str | None]
    train_correct: list[bool]
    test_correct: list[bool | None]
    parent_id: str | None = None
    origin: str = "sample"
    model_version: str = ""
    generation: int = 0
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata (timings, sampling parameters...) carried along untouched."""

    def __post_init__(self) -> None:
        expected = program_id(self.task_id, self.code, self.task_digest)
        if not self.id:
            self.id = expected
        elif self.id != expected:
            raise ValueError(
                f"record id {self.id!r} is not the program id {expected!r} of its task "
                f"({self.task_id!r}, digest {self.task_digest!r}) and code"
            )
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {self.origin!r}")
        for name, outs, errs, corr in (
            ("train", self.train_outputs, self.train_errors, self.train_correct),
            ("test", self.test_outputs, self.test_errors, self.test_correct),
        ):
            if not len(outs) == len(errs) == len(corr):
                raise ValueError(
                    f"{name}: {len(outs)} outputs, {len(errs)} errors, {len(corr)} correctness flags"
                )

    # ----------------------------------------------------------------- derived facts

    @property
    def train_accuracy(self) -> float:
        """SOAR's h: fraction of train pairs exactly right."""
        return sum(self.train_correct) / len(self.train_correct) if self.train_correct else 0.0

    @property
    def n_train_correct(self) -> int:
        return sum(self.train_correct)

    @property
    def all_train_correct(self) -> bool:
        return bool(self.train_correct) and all(self.train_correct)

    @property
    def test_known(self) -> bool:
        """Whether every test output's ground truth is known."""
        return bool(self.test_correct) and all(c is not None for c in self.test_correct)

    @property
    def test_accuracy(self) -> float | None:
        """Fraction of test inputs right, or None when any ground truth is unknown."""
        if not self.test_known:
            return None
        return sum(bool(c) for c in self.test_correct) / len(self.test_correct)

    @property
    def fully_correct(self) -> bool:
        """Right on every train pair and on every test input whose answer is known."""
        return self.all_train_correct and all(c is not False for c in self.test_correct)

    @property
    def raised_any(self) -> bool:
        """Whether any input gave an error instead of a valid grid (such programs are not REX arms)."""
        return any(e is not None for e in self.train_errors) or any(e is not None for e in self.test_errors)

    @property
    def all_outputs_valid(self) -> bool:
        """Every input produced a valid grid: the program can be relabelled."""
        return all(g is not None for g in self.train_outputs) and all(
            g is not None for g in self.test_outputs
        )

    @property
    def outputs(self) -> list[Grid | None]:
        return list(self.train_outputs) + list(self.test_outputs)

    def outputs_key(self) -> tuple:
        """Hashable tuple of all outputs (train then test): programs that behave the same share it."""
        return outputs_key(self.outputs)

    def test_key(self) -> tuple:
        """Hashable tuple of the test outputs: the vote's key."""
        return outputs_key(self.test_outputs)

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_outputs(
        cls,
        task: Task,
        code: str,
        outputs: Sequence[object],
        errors: Sequence[str | None] | None = None,
        *,
        parent_id: str | None = None,
        origin: str = "sample",
        model_version: str = "",
        generation: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> ProgramRecord:
        """Build a record from raw outputs (one per input of `task.inputs()`), judging them.

        Each output is validated (`scoring.validate_output`): a valid one is normalised to a
        list of ints, an invalid one becomes None with the validation message as its error.
        An existing error for an input wins over its output.
        """
        n_train, n_test = len(task.train), len(task.test)
        if len(outputs) != n_train + n_test:
            raise ValueError(f"task {task.id}: {len(outputs)} outputs for {n_train + n_test} inputs")
        errs = list(errors) if errors is not None else [None] * len(outputs)
        if len(errs) != len(outputs):
            raise ValueError(f"task {task.id}: {len(errs)} errors for {len(outputs)} outputs")
        grids: list[Grid | None] = []
        final_errs: list[str | None] = []
        for out, err in zip(outputs, errs, strict=True):
            if err is not None:
                grids.append(None)
                final_errs.append(err)
                continue
            grid, problem = validate_output(out)
            grids.append(grid)
            final_errs.append(problem)
        train_correct = [bool(c) for c in correctness([p.output for p in task.train], grids[:n_train])]
        test_correct = correctness([p.output for p in task.test], grids[n_train:])
        return cls(
            task_id=task.id,
            task_digest=task.digest,
            code=code,
            train_outputs=grids[:n_train],
            test_outputs=grids[n_train:],
            train_errors=final_errs[:n_train],
            test_errors=final_errs[n_train:],
            train_correct=train_correct,
            test_correct=test_correct,
            parent_id=parent_id,
            origin=origin,
            model_version=model_version,
            generation=generation,
            extra=dict(extra or {}),
        )

    @classmethod
    def from_evaluated(cls, task: Task, ev: Evaluated) -> ProgramRecord:
        """The complete record of an executor's `Evaluated` event for `task`, from the event alone.

        Outputs are split into train and test and judged against `task`'s known outputs;
        each error becomes "kind: detail" (or the kind alone) as the sandbox reported it.
        Parent, origin, model version and generation come from the event, and its sandbox
        time and worker go to `extra`. Raises ValueError when the event is not about `task`
        (other task id or digest) or its program id is not that of its code on `task`.
        """
        if ev.task_id != task.id:
            raise ValueError(f"evaluated {ev.program_id} is for task {ev.task_id!r}, not {task.id!r}")
        if ev.task_digest and ev.task_digest != task.digest:
            raise ValueError(
                f"evaluated {ev.program_id} ran on task {task.id} with digest {ev.task_digest!r}, "
                f"not {task.digest!r} (another task with the same id?)"
            )
        expected = program_id(task.id, ev.code, task.digest)
        if ev.program_id != expected:
            raise ValueError(
                f"evaluated {ev.program_id!r} does not carry the program id {expected!r} "
                f"of its code on task {task.id} (digest {task.digest!r})"
            )
        details = list(ev.details) if ev.details else [None] * len(ev.errors)
        if len(details) != len(ev.errors):
            raise ValueError(f"evaluated {ev.program_id}: {len(details)} details for {len(ev.errors)} errors")
        errors = [
            None if kind is None else f"{kind}: {detail}" if detail else kind
            for kind, detail in zip(ev.errors, details, strict=True)
        ]
        extra: dict[str, Any] = {"duration_s": ev.duration_s}
        if ev.worker_id:
            extra["worker_id"] = ev.worker_id
        return cls.from_outputs(
            task,
            ev.code,
            ev.outputs,
            errors,
            parent_id=ev.parent_id,
            origin=ev.origin,
            model_version=ev.model_version,
            generation=ev.generation,
            extra=extra,
        )

    def rescored(self, task: Task) -> ProgramRecord:
        """The same code and outputs judged against another task with the same inputs (e.g. relabelled).

        The result is a record of `task`: its task id, digest and so its id are `task`'s. They
        equal this record's when only what the digest leaves out differs (test outputs hidden
        or revealed); other train outputs or another pair order make another task, hence
        another program id.
        """
        if len(task.train) != len(self.train_outputs) or len(task.test) != len(self.test_outputs):
            raise ValueError(f"task {task.id} has a different number of pairs than record {self.id}")
        train_correct = [bool(c) for c in correctness([p.output for p in task.train], self.train_outputs)]
        test_correct = correctness([p.output for p in task.test], self.test_outputs)
        return ProgramRecord(
            task_id=task.id,
            task_digest=task.digest,
            code=self.code,
            train_outputs=self.train_outputs,
            test_outputs=self.test_outputs,
            train_errors=self.train_errors,
            test_errors=self.test_errors,
            train_correct=train_correct,
            test_correct=test_correct,
            parent_id=self.parent_id,
            origin=self.origin,
            model_version=self.model_version,
            generation=self.generation,
            extra=dict(self.extra),
        )

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, strings, ints, bools and None: fit for msgpack, JSON and SQLite blobs."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProgramRecord:
        """Inverse of `to_dict`; unknown keys are ignored (newer writers, older readers)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in (
            "train_outputs",
            "test_outputs",
            "train_errors",
            "test_errors",
            "train_correct",
            "test_correct",
        ):
            kw[k] = list(kw.get(k) or [])
        kw["extra"] = dict(kw.get("extra") or {})
        return cls(**kw)


def run_native(code: str, inputs: Sequence[Grid]) -> tuple[list[object], list[str | None]]:
    """Run `transform` from `code` on each input IN THIS PROCESS, without any sandbox.

    For tests and development on trusted, hand-written programs only: no time or memory
    limit, full access to the machine. Never call it on model-written code; the sandbox
    (`soar_async.sandbox`) exists for that. Returns raw outputs (validate them with
    `ProgramRecord.from_outputs`) and per-input error strings ("ExcType: message").
    """
    namespace: dict[str, Any] = {"__name__": "soar_program"}
    try:
        exec(compile(code, "<program>", "exec"), namespace)
    except BaseException as e:
        msg = f"{type(e).__name__}: {e}"
        return [None] * len(inputs), [msg] * len(inputs)
    fn = namespace.get("transform")
    if not callable(fn):
        return [None] * len(inputs), ["NameError: no function named transform"] * len(inputs)
    outs: list[object] = []
    errs: list[str | None] = []
    for grid in inputs:
        try:
            outs.append(fn(copy.deepcopy(grid)))
            errs.append(None)
        except Exception as e:
            outs.append(None)
            errs.append(f"{type(e).__name__}: {e}")
    return outs, errs


def evaluate_native(task: Task, code: str, **kw: Any) -> ProgramRecord:
    """`run_native` then `ProgramRecord.from_outputs`: trusted code only (see `run_native`)."""
    outs, errs = run_native(code, task.inputs())
    return ProgramRecord.from_outputs(task, code, outs, errs, **kw)
