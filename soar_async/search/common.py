"""What the proposer and the refiner share: plans, claims, early stop, turning completions into work.

Both are partitioned readers of durable events that keep no state they cannot rebuild:
the plan of a task comes from its `SearchTask` (kept in the events stream), the decision to
start a phase is claimed once in the key-value store, and everything else is derived from
the slot numbers carried in each request's `meta`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import anyio
import nats.js.errors

from soar_async.bus.conn import Bus
from soar_async.bus.topology import EVT_SEARCH, KV_STATE, KV_TASKS, STREAM_EVENTS, sharded, subject_token
from soar_async.config import SearchConfig
from soar_async.messages import (
    ArchiveAnswer,
    ArchiveQuery,
    Completions,
    DecodeError,
    ExecBatch,
    ExecRequest,
    GenRequest,
    Proposals,
    SearchTask,
    TaskStatus,
)
from soar_async.runtime.actor import TransientError
from soar_async.runtime.client import inputs_ref
from soar_async.search.plan import Plan, entries_of


class Plans:
    """Plans by (task, generation): from the `SearchTask`s seen, else the latest one stored."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._plans: dict[tuple[str, int], Plan] = {}

    def add(self, msg: SearchTask) -> Plan:
        plan = Plan.of(msg)
        self._plans[(msg.task_id, msg.generation)] = plan
        return plan

    async def get(self, task_id: str, generation: int) -> Plan | None:
        """The plan of that search, or None when the task has none in that generation (its
        programs were sent outside a search, or a newer generation has replaced it). A
        search's `SearchTask` is stored before anything it causes, so "not stored" is final."""
        got = self._plans.get((task_id, generation))
        if got is not None:
            return got
        try:
            with anyio.fail_after(self.bus.cfg.request_timeout):
                raw = await self.bus.js.get_last_msg(STREAM_EVENTS, sharded(EVT_SEARCH, task_id))
            msg = SearchTask.decode(raw.data or b"")
        except nats.js.errors.NotFoundError:
            return None
        except DecodeError as e:
            raise TransientError(f"stored SearchTask of {task_id} unreadable: {e.reason}") from None
        if msg.generation != generation:
            return None
        return self.add(msg)


async def begin(bus: Bus, key: str) -> bool:
    """Whether the caller should send the start of a phase: True the first time, and again
    while the start was begun but not confirmed (`started`): a crash in between must not
    lose it, and a resend of the same request ids is dropped by the queue's dedup window."""
    kv = await bus.js.key_value(KV_STATE)
    with anyio.fail_after(bus.cfg.request_timeout):
        try:
            await kv.create(key, b"starting")
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await kv.get(key)
            return entry.value == b"starting"


async def started(bus: Bus, key: str) -> None:
    kv = await bus.js.key_value(KV_STATE)
    with anyio.fail_after(bus.cfg.request_timeout):
        await kv.put(key, b"started")


def claim_key(kind: str, plan: Plan) -> str:
    return f"search.{plan.generation}.{kind}.{subject_token(plan.task.id)}"


async def current_status(bus: Bus, task_id: str) -> TaskStatus | None:
    """The archive's latest word on the task (None before it said anything)."""
    kv = await bus.js.key_value(KV_TASKS)
    try:
        with anyio.fail_after(bus.cfg.request_timeout):
            entry = await kv.get(subject_token(task_id))
    except nats.js.errors.KeyNotFoundError:
        return None
    try:
        return TaskStatus.decode(entry.value or b"")
    except DecodeError:
        return None


async def should_stop(bus: Bus, plan: Plan) -> bool:
    """Whether the task has enough programs right on every train pair to stop searching."""
    if plan.stop_after_correct <= 0:
        return False
    st = await current_status(bus, plan.task.id)
    return st is not None and st.generation == plan.generation and st.generation_correct >= plan.stop_after_correct


async def ask_archive(bus: Bus, query: ArchiveQuery, *, timeout: float = 10.0) -> Any:
    """Ask the archive that owns the task; its `result`, or TransientError (no archive yet, an error)."""
    import nats.errors

    try:
        reply = await bus.nc.request(query.subject(), query.encode(), timeout=timeout)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as e:
        raise TransientError(f"archive did not answer {query.what} for {query.task_id}: {e!r}") from None
    ans = ArchiveAnswer.decode(reply.data)
    if ans.error:
        raise TransientError(f"archive could not answer {query.what} for {query.task_id}: {ans.error}")
    return ans.result


def gen_request(
    plan: Plan,
    kind: str,
    slot: int,
    messages: Sequence[dict[str, Any]],
    search: SearchConfig,
    *,
    parent_id: str | None = None,
    island: int | None = None,
    model_version: str | None = None,
) -> GenRequest:
    return GenRequest(
        request_id=plan.request_id(kind, slot),
        task_id=plan.task.id,
        kind=kind,
        messages=list(messages),
        n=plan.size(kind, slot),
        max_tokens=search.max_tokens_sample if kind == "sample" else search.max_tokens_refine,
        temperature=search.temperature,
        min_p=search.min_p,
        parent_id=parent_id,
        model_version=model_version or plan.model_version or None,
        generation=plan.generation,
        meta={"slot": slot, **({"island": island} if island is not None else {})},
    )


def skipped(plan: Plan, kind: str, slots: Sequence[int]) -> list[Proposals]:
    """Resolve slots that will never be requested (the task stopped early or cannot refine)."""
    return [
        Proposals(
            task_id=plan.task.id,
            kind=kind,
            slot=s,
            generation=plan.generation,
            request_id=plan.request_id(kind, s),
            skipped=True,
        )
        for s in slots
    ]


def chain(plan: Plan, kind: str, slot: int) -> list[int]:
    """The slots after `slot` that its completion is responsible for: slot + window, + 2 window...

    Slots 0..window-1 start a phase; the completion of slot k issues k + window. When the
    task stops, the completion of k skips its whole chain, so every slot resolves once."""
    return list(range(slot + plan.window, plan.slots(kind), plan.window))


class Proposing:
    """Completions in, execution requests and one `Proposals` out; a duplicate norm is not run twice.

    `seen` remembers the norms this worker already sent per task; after a restart it is
    empty and a duplicate may run once more, which the archive absorbs (a norm it already
    has is not stored again; the vote counts it through its completion rows).
    """

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}

    def process(
        self, plan: Plan, msg: Completions, *, origin: str, island: int | None = None, batch: int = 1
    ) -> list[Any]:
        """The execution work (new programs, `batch` per message at most: `exec_messages`) and
        the slot's `Proposals`, last."""
        entries = entries_of(plan.task, msg)
        seen = self.seen.setdefault(plan.task.id, set())
        execs: list[ExecRequest] = []
        for e in entries:
            if e["norm"] is None or e["norm"] in seen:
                continue
            seen.add(e["norm"])
            execs.append(
                ExecRequest(
                    program_id=e["program_id"],
                    task_id=plan.task.id,
                    code=e["code"],
                    inputs_ref=inputs_ref(plan.task),  # stored when the search started
                    parent_id=msg.parent_id,
                    generation=plan.generation,
                    origin=origin,
                    model_version=msg.model_version or "",
                    task_digest=plan.task.digest,
                    norm=e["norm"],
                )
            )
        slot = int(msg.meta.get("slot", -1))
        proposals = Proposals(
            task_id=plan.task.id,
            kind=msg.kind,
            slot=slot,
            generation=plan.generation,
            request_id=msg.request_id,
            entries=entries,
            parent_id=msg.parent_id,
            island=island,
            model_version=msg.model_version or "",
            prompt_tokens=msg.prompt_tokens,
            completion_tokens=msg.completion_tokens,
            error=msg.error,
        )
        return [*exec_messages(msg.request_id, execs, batch), proposals]


def exec_messages(request_id: str, execs: list[ExecRequest], batch: int) -> list[ExecRequest | ExecBatch]:
    """Requests as they go to the executors: single when `batch` is 1, else in `ExecBatch`es of
    up to `batch` programs. A batch's id names its programs (a hash of their ids), so a resend
    after a restart, which may group the programs otherwise, is never mistaken for another
    batch by the queue's dedup; a program sent twice so is stored once by the archive."""
    if batch <= 1 or len(execs) <= 1:
        return list(execs)
    out: list[ExecRequest | ExecBatch] = []
    for i in range(0, len(execs), batch):
        chunk = execs[i : i + batch]
        digest = hashlib.sha1("".join(r.program_id for r in chunk).encode()).hexdigest()[:16]
        out.append(ExecBatch.of(f"{request_id}:{digest}", chunk))
    return out


def slot_of(msg: Completions, plan: Plan) -> int:
    """The slot a completion answers, checked against the plan (a foreign one is a permanent error)."""
    from soar_async.runtime.actor import PermanentError

    slot = msg.meta.get("slot")
    if not isinstance(slot, int) or not 0 <= slot < plan.slots(msg.kind):
        raise PermanentError(f"completions {msg.request_id}: slot {slot!r} is not one of the plan's")
    return slot
