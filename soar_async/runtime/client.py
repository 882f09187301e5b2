"""Submitting execution requests and collecting their results: what `soar exec submit` and
`soar solve` share (and, later, the proposer and refiner).

Collection reads the Evaluated events already stored for the requests' tasks before it
publishes anything, and sends only the requests without a result. Resubmitting finished work
is therefore cheap and safe, also after a server restart: the stored result answers, and a
request sent twice within the queue's duplicate window is stored once (same program id =
same dedup id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from nats.js.api import ConsumerConfig, DeliverPolicy

from soar_async.arc import Task
from soar_async.bus.conn import Bus, BusError
from soar_async.bus.topology import (
    EVALUATED_ALL,
    KV_TASKS,
    STREAM_EXEC,
    dead_letter_subject,
    evaluated_filter,
    subject_token,
)
from soar_async.logs import get_logger
from soar_async.messages import DecodeError, Evaluated, ExecRequest, TaskStatus
from soar_async.records import program_id
from soar_async.runtime.deadletter import MSG_ID_HEADER
from soar_async.runtime.registry import live_workers

EXECUTOR_ROLE = "executor"


def exec_request(
    task: Task,
    code: str,
    *,
    parent_id: str | None = None,
    generation: int = 0,
    origin: str = "sample",
    model_version: str = "",
) -> ExecRequest:
    """One program on all of `task`'s inputs; same code on the same task = same program id.

    The program's provenance travels with the request and comes back in its `Evaluated`.
    """
    return ExecRequest(
        program_id=program_id(task.id, code, task.digest),
        task_id=task.id,
        code=code,
        inputs=task.inputs(),
        train_outputs=[p.output for p in task.train],
        parent_id=parent_id,
        generation=generation,
        origin=origin,
        model_version=model_version,
        task_digest=task.digest,
    )


def exec_requests(tasks: Iterable[Task], codes: Iterable[str]) -> list[ExecRequest]:
    """Every code on every task, duplicates (same code on the same task) dropped."""
    code_list = list(codes)
    reqs = {r.program_id: r for t in tasks for r in (exec_request(t, c) for c in code_list)}
    return list(reqs.values())


@dataclass
class Collected:
    """What came back for a batch of requests: results, and requests that never will."""

    results: dict[str, Evaluated] = field(default_factory=dict)
    dead_lettered: dict[str, str] = field(default_factory=dict)
    """program id -> reason, for requests the executors gave up on (see `soar.dlq.executor`)."""
    already_stored: int = 0
    """Requests answered by results stored before this batch (not sent again)."""
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a batch stands, reported every few seconds while its results are awaited.

    Attributes:
        total: requests in the batch.
        done: results in (stored ones included).
        dead_lettered: requests the executors gave up on.
        connected: whether the bus connection is up.
        down_for: seconds since the connection was lost (0 while connected).
        executors: live executor workers (None while disconnected).
        queued: requests in the execution queue, waiting or running (None while disconnected).
        elapsed: seconds since the batch was submitted.
    """

    total: int
    done: int
    dead_lettered: int
    connected: bool
    down_for: float
    executors: int | None
    queued: int | None
    elapsed: float

    @property
    def waiting_for(self) -> str:
        """What the batch is waiting on, in words a user can act on."""
        if not self.connected:
            return f"the NATS server (connection lost {self.down_for:.0f} s ago; reconnecting)"
        if self.done + self.dead_lettered >= self.total:
            return "nothing"
        if self.executors == 0:
            return f"an executor to attach ({self.queued} request(s) queued; `soar worker --role executor`)"
        return f"{self.executors} executor(s): {self.queued} request(s) queued or running"


async def submit_and_collect(
    bus: Bus,
    reqs: Sequence[ExecRequest],
    *,
    timeout: float | None,
    on_result: Callable[[Evaluated], None] = lambda _e: None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 2.0,
    outage_timeout: float | None = None,
) -> Collected:
    """Publish `reqs`; unless `timeout` is None, gather their Evaluated events for up to `timeout` s.

    Results already stored for the requests' tasks are read first, and only requests without
    one are published: a pass resubmitted after a server restart (when the queue's memory of
    message ids is gone) does not rerun finished programs. A request that was dead-lettered
    (undecodable, failing on every delivery) will never be evaluated: it is reported in
    `dead_lettered` instead of being waited for. While waiting, `on_progress` hears every
    `progress_every` s how far the batch is and what it waits for; without a connection for
    `outage_timeout` s the wait ends with a `BusError` saying so.
    """
    log = get_logger(actor="client")
    out = Collected()
    if timeout is None:
        await _publish_all(bus, reqs, log)
        return out
    started = anyio.current_time()
    want = {r.program_id for r in reqs}
    by_msg_id = {r.dedup_id(): r.program_id for r in reqs}
    everything = anyio.Event()

    def settle() -> None:
        if not want - out.results.keys() - out.dead_lettered.keys():
            everything.set()

    def take(data: bytes) -> None:
        try:
            ev = Evaluated.decode(data)
        except DecodeError as e:
            log.warning("undecodable evaluated event skipped", reason=e.reason)
            return
        if ev.program_id in want and ev.program_id not in out.results:
            out.results[ev.program_id] = ev
            out.dead_lettered.pop(ev.program_id, None)
            on_result(ev)
            settle()

    filters = sorted({evaluated_filter(r.task_id) for r in reqs})
    events = await bus.js.subscribe(
        EVALUATED_ALL,
        ordered_consumer=True,
        config=ConsumerConfig(
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            deliver_policy=DeliverPolicy.ALL,
        ),
    )
    dead = await bus.js.subscribe(
        dead_letter_subject(EXECUTOR_ROLE),
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )

    async def follow_results() -> None:
        async for m in events.messages:
            take(m.data)

    async def follow_dead_letters() -> None:
        async for m in dead.messages:
            pid = by_msg_id.get((m.headers or {}).get(MSG_ID_HEADER, ""))
            if pid is not None and pid not in out.results:
                out.dead_lettered[pid] = (m.headers or {}).get("Soar-Reason", "dead-lettered")
                settle()

    async def watch() -> None:
        """Report progress; give up when the connection stays down for too long."""
        while True:
            await anyio.sleep(progress_every)
            down = bus.online.down_for()
            if outage_timeout is not None and down > outage_timeout:
                raise BusError(
                    f"no connection to NATS at {bus.cfg.redacted()} for {down:.0f} s (bus.outage_timeout_s); "
                    f"{len(out.results)} of {len(want)} result(s) in"
                )
            if on_progress is not None:
                on_progress(await _progress(bus, out, len(want), anyio.current_time() - started))

    try:
        # Stored results first. The consumer knows how many match (those already pushed to us
        # plus those still pending on the server); read exactly that many before publishing.
        with anyio.fail_after(bus.cfg.request_timeout * 6):
            ci = await events.consumer_info()
            stored = (ci.delivered.consumer_seq if ci.delivered else 0) + (ci.num_pending or 0)
            for _ in range(stored):
                take((await events.next_msg(timeout=bus.cfg.request_timeout)).data)
        out.already_stored = len(out.results)
        await _publish_all(bus, [r for r in reqs if r.program_id not in out.results], log)
        settle()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_results)
            tg.start_soon(follow_dead_letters)
            tg.start_soon(watch)
            with anyio.move_on_after(timeout) as waited:
                await everything.wait()
            out.timed_out = waited.cancelled_caught
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as eg:
        # The watcher's verdict (or another single failure) as itself, not as a group.
        raise eg.exceptions[0] from None
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await events.unsubscribe()
            await dead.unsubscribe()
    return out


async def _progress(bus: Bus, out: Collected, total: int, elapsed: float) -> Progress:
    executors = queued = None
    if bus.connected:
        try:
            with anyio.fail_after(bus.cfg.request_timeout):
                executors = sum(hb.role == EXECUTOR_ROLE for hb in await live_workers(bus))
                queued = (await bus.js.stream_info(STREAM_EXEC)).state.messages
        except Exception:  # a status detail, not worth failing the wait over
            pass
    return Progress(
        total=total,
        done=len(out.results),
        dead_lettered=len(out.dead_lettered),
        connected=bus.connected,
        down_for=bus.online.down_for(),
        executors=executors,
        queued=queued,
        elapsed=round(elapsed, 1),
    )


async def _publish_all(bus: Bus, reqs: Sequence[ExecRequest], log: Any) -> None:
    if not any(hb.role == EXECUTOR_ROLE for hb in await live_workers(bus)):
        log.warning("no executor attached: requests wait in the queue until one joins", hint="soar worker")
    for r in reqs:
        await bus.js_publish(r.subject(), r.encode(), msg_id=r.dedup_id())


async def publish_task_status(bus: Bus, statuses: Iterable[TaskStatus]) -> None:
    """Record where tasks stand: latest value in the `soar_tasks` bucket (what `soar status`
    shows) and an event on `soar.evt.task.status.<task>` (what other actors follow)."""
    kv = await bus.js.key_value(KV_TASKS)
    for st in statuses:
        payload = st.encode()
        with anyio.fail_after(bus.cfg.request_timeout):
            await kv.put(subject_token(st.task_id), payload)  # KV keys allow fewer characters than ids
        await bus.js_publish(st.subject(), payload)


REGISTERED_GENERATION = -1
"""The generation of a task known to the archive without a search of its own (programs sent
directly, imported, or the baseline's): below any search's generation."""


async def register_tasks(bus: Bus, tasks: Iterable[Task]) -> None:
    """Tell the archive about tasks whose programs arrive without a search (zero budgets), so
    that it can judge and keep them; a task already known is left as it is."""
    from soar_async.messages import SearchTask

    for t in tasks:
        msg = SearchTask(task_id=t.id, task=t.to_json(), generation=REGISTERED_GENERATION)
        await bus.js_publish(msg.subject(), msg.encode(), msg_id=msg.dedup_id())


def inputs_ref(task: Task) -> str:
    """The object-store name of a task's inputs: its digest is in it, so a name never changes content."""
    return f"inputs/{subject_token(task.id)}-{task.digest}"


async def put_task_inputs(bus: Bus, task: Task) -> str:
    """Store the task's inputs and train outputs once (`ExecRequest.inputs_ref`), so that each
    execution request carries only its program: a search sends thousands per task."""
    import msgpack

    from soar_async.bus.topology import OBJ_BLOBS

    name = inputs_ref(task)
    blob = msgpack.packb({"inputs": task.inputs(), "train_outputs": [p.output for p in task.train]})
    with anyio.fail_after(bus.cfg.request_timeout * 3):
        store = await bus.js.object_store(OBJ_BLOBS)
        await store.put(name, blob)
    return name
