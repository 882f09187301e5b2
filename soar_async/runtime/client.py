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
from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.topology import (
    EVALUATED_ALL,
    KV_TASKS,
    dead_letter_subject,
    evaluated_subject,
    provision,
    subject_token,
)
from soar_async.logs import get_logger
from soar_async.messages import DecodeError, Evaluated, ExecRequest, TaskStatus
from soar_async.records import program_id
from soar_async.runtime.deadletter import MSG_ID_HEADER
from soar_async.runtime.registry import live_workers

EXECUTOR_ROLE = "executor"


def exec_request(task: Task, code: str, *, parent_id: str | None = None, generation: int = 0) -> ExecRequest:
    """One program on all of `task`'s inputs; same code on the same task = same program id."""
    return ExecRequest(
        program_id=program_id(task.id, code, task.digest),
        task_id=task.id,
        code=code,
        inputs=task.inputs(),
        train_outputs=[p.output for p in task.train],
        parent_id=parent_id,
        generation=generation,
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
    bc: BusConfig,
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
    bus = await Bus.connect(bc, name="soar-client")
    out = Collected()
    try:
        await provision(bus, queues=["exec"])
        if timeout is None:
            await _publish_all(bus, reqs, log)
            return out
        events = await bus.js.subscribe(
            EVALUATED_ALL,
            ordered_consumer=True,
            config=ConsumerConfig(
                filter_subjects=sorted({evaluated_subject(r.task_id) for r in reqs}),
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        dlq_subject = dead_letter_subject(EXECUTOR_ROLE)
        dead = await bus.js.subscribe(
            dlq_subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        await _publish_all(bus, reqs, log)
        want = {r.program_id for r in reqs}
        by_msg_id = {r.dedup_id(): r.program_id for r in reqs}

        async def follow_dead_letters() -> None:
            while True:
                try:
                    m = await dead.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                pid = by_msg_id.get((m.headers or {}).get(MSG_ID_HEADER, ""))
                if pid is not None and pid not in out.results:
                    out.dead_lettered[pid] = (m.headers or {}).get("Soar-Reason", "dead-lettered")

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_dead_letters)
            with anyio.move_on_after(timeout):
                while want - out.results.keys() - out.dead_lettered.keys():
                    try:
                        m = await events.next_msg(timeout=0.5)
                    except TimeoutError:
                        continue
                    try:
                        ev = Evaluated.decode(m.data)
                    except DecodeError as e:
                        log.warning("undecodable evaluated event skipped", reason=e.reason)
                        continue
                    if ev.program_id in want and ev.program_id not in out.results:
                        out.results[ev.program_id] = ev
                        out.dead_lettered.pop(ev.program_id, None)
                        on_result(ev)
            tg.cancel_scope.cancel()
        await events.unsubscribe()
        await dead.unsubscribe()
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()
    return out


async def _publish_all(bus: Bus, reqs: Sequence[ExecRequest], log: Any) -> None:
    if not any(hb.role == EXECUTOR_ROLE for hb in await live_workers(bus)):
        log.warning("no executor attached: requests wait in the queue until one joins", hint="soar worker")
    for r in reqs:
        await bus.js_publish(r.subject(), r.encode(), msg_id=r.dedup_id())


async def publish_task_status(bc: BusConfig, statuses: Iterable[TaskStatus]) -> None:
    """Record where tasks stand: latest value in the `soar_tasks` bucket (what `soar status`
    shows) and an event on `soar.evt.task.status` (what other actors follow)."""
    bus = await Bus.connect(bc, name="soar-client")
    try:
        kv = await bus.js.key_value(KV_TASKS)
        for st in statuses:
            payload = st.encode()
            with anyio.fail_after(bc.request_timeout):
                await kv.put(subject_token(st.task_id), payload)  # KV keys allow fewer characters than ids
            await bus.js_publish(st.subject(), payload)
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()
