"""Submitting execution requests and collecting their results: what `soar exec submit` and
`soar solve` share (and, later, the proposer and refiner).

Collection replays the Evaluated events already stored for the requests' tasks before
following new ones. Resubmitting finished work is therefore cheap and safe: the work queue
drops the duplicate request (same program id = same dedup id) and the stored result answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from nats.js.api import ConsumerConfig, DeliverPolicy

from soar_async.arc import Task
from soar_async.bus.conn import Bus
from soar_async.bus.topology import (
    EVALUATED_ALL,
    KV_TASKS,
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


async def submit_and_collect(
    bus: Bus,
    reqs: Sequence[ExecRequest],
    *,
    timeout: float | None,
    on_result: Callable[[Evaluated], None] = lambda _e: None,
) -> Collected:
    """Publish `reqs`; unless `timeout` is None, gather their Evaluated events for up to `timeout` s.

    A request that was dead-lettered (undecodable, failing on every delivery) will never be
    evaluated: it is reported in `dead_lettered` instead of being waited for.
    """
    log = get_logger(actor="client")
    out = Collected()
    if timeout is None:
        await _publish_all(bus, reqs, log)
        return out
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
    want = {r.program_id for r in reqs}
    by_msg_id = {r.dedup_id(): r.program_id for r in reqs}
    everything = anyio.Event()

    def settle() -> None:
        if not want - out.results.keys() - out.dead_lettered.keys():
            everything.set()

    async def follow_results() -> None:
        async for m in events.messages:
            try:
                ev = Evaluated.decode(m.data)
            except DecodeError as e:
                log.warning("undecodable evaluated event skipped", reason=e.reason)
                continue
            if ev.program_id in want and ev.program_id not in out.results:
                out.results[ev.program_id] = ev
                out.dead_lettered.pop(ev.program_id, None)
                on_result(ev)
                settle()

    async def follow_dead_letters() -> None:
        async for m in dead.messages:
            pid = by_msg_id.get((m.headers or {}).get(MSG_ID_HEADER, ""))
            if pid is not None and pid not in out.results:
                out.dead_lettered[pid] = (m.headers or {}).get("Soar-Reason", "dead-lettered")
                settle()

    try:
        await _publish_all(bus, reqs, log)
        settle()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_results)
            tg.start_soon(follow_dead_letters)
            with anyio.move_on_after(timeout):
                await everything.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await events.unsubscribe()
            await dead.unsubscribe()
    return out


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
