"""Submitting execution requests and collecting their results: what `soar exec submit` and
`soar solve` share (and, later, the proposer and refiner).

Collection replays the Evaluated events already stored for the requests' tasks before
following new ones. Resubmitting finished work is therefore cheap and safe: the work queue
drops the duplicate request (same program id = same dedup id) and the stored result answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import anyio
from nats.js.api import ConsumerConfig, DeliverPolicy

from soar_async.arc import Task
from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.topology import EVALUATED_ALL, KV_TASKS, evaluated_subject, provision
from soar_async.logs import get_logger
from soar_async.messages import DecodeError, Evaluated, ExecRequest, TaskStatus
from soar_async.records import program_id
from soar_async.runtime.registry import live_workers


def exec_request(task: Task, code: str, *, parent_id: str | None = None, generation: int = 0) -> ExecRequest:
    """One program on all of `task`'s inputs; same code on the same task = same program id."""
    return ExecRequest(
        program_id=program_id(task.id, code),
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


async def submit_and_collect(
    bc: BusConfig,
    reqs: Sequence[ExecRequest],
    *,
    timeout: float | None,
    on_result: Callable[[Evaluated], None] = lambda _e: None,
) -> dict[str, Evaluated]:
    """Publish `reqs`; unless `timeout` is None, gather their Evaluated events for up to `timeout` s."""
    log = get_logger(actor="client")
    bus = await Bus.connect(bc, name="soar-client")
    results: dict[str, Evaluated] = {}
    try:
        await provision(bus, queues=["exec"])
        sub = None
        if timeout is not None:
            subjects = sorted({evaluated_subject(r.task_id) for r in reqs})
            sub = await bus.js.subscribe(
                EVALUATED_ALL,
                ordered_consumer=True,
                config=ConsumerConfig(filter_subjects=subjects, deliver_policy=DeliverPolicy.ALL),
            )
        if not any(hb.role == "executor" for hb in await live_workers(bus)):
            log.warning("no executor attached: requests wait in the queue until one joins", hint="soar worker")
        for r in reqs:
            await bus.js_publish(r.subject(), r.encode(), msg_id=r.dedup_id())
        if sub is None:
            return results
        want = {r.program_id for r in reqs}
        with anyio.move_on_after(timeout):
            while want - results.keys():
                try:
                    m = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    ev = Evaluated.decode(m.data)
                except DecodeError as e:
                    log.warning("undecodable evaluated event skipped", reason=e.reason)
                    continue
                if ev.program_id in want and ev.program_id not in results:
                    results[ev.program_id] = ev
                    on_result(ev)
        await sub.unsubscribe()
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()
    return results


async def publish_task_status(bc: BusConfig, statuses: Iterable[TaskStatus]) -> None:
    """Record where tasks stand: latest value in the `soar_tasks` bucket (what `soar status`
    shows) and an event on `soar.evt.task.status` (what other actors follow)."""
    bus = await Bus.connect(bc, name="soar-client")
    try:
        kv = await bus.js.key_value(KV_TASKS)
        for st in statuses:
            payload = st.encode()
            with anyio.fail_after(bc.request_timeout):
                await kv.put(st.task_id, payload)
            await bus.js_publish(st.subject(), payload)
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()
