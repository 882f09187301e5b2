"""The archive's task statuses go out in the order of its state, whatever the bus delays.

Handlers run concurrently and each status publish awaits the bus twice (key-value put, then
the event); a status worked out earlier must never be published after a later one, or a
follower sees a done task go back to running and waits for it forever (`soar solve` hung so).
Real nats-server and archive actor; the publish is slowed by random delays to shuffle it.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import anyio
import pytest

import actors.archive
from soar_async.arc import Task, load_tasks
from soar_async.bus.conn import BusConfig
from soar_async.bus.server import NatsServer
from soar_async.bus.topology import STREAM_EVENTS, task_status_subject
from soar_async.config import Config, SearchConfig
from soar_async.messages import Completions, Evaluated, ExecRequest, TaskStatus
from soar_async.records import evaluate_native
from soar_async.runtime.system import ActorSpec, bring_up
from soar_async.search.common import Proposing
from soar_async.search.plan import Plan, search_task
from tests.bus.bushelpers import read_subject

SLOTS = 12


def _evaluated(task: Task, req: ExecRequest) -> Evaluated:
    """What an executor sends for `req` (outputs from a native run of the same program)."""
    rec = evaluate_native(task, req.code)
    return Evaluated(
        program_id=req.program_id, task_id=task.id, code=req.code, outputs=rec.train_outputs + rec.test_outputs,
        errors=[None] * (len(task.train) + len(task.test)), train_correct=rec.train_correct,
        fitness=rec.train_accuracy, task_digest=task.digest, norm=req.norm,
    )  # fmt: skip


def test_statuses_are_published_in_the_order_of_the_archive_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = load_tasks("arc-agi-1:training#3c9b0459")[0]
    search = search_task(
        task, SearchConfig(samples_per_task=SLOTS, refinements_per_task=0, completions_per_sample_request=1)
    )
    plan = Plan.of(search)
    proposing = Proposing()
    events: list = []
    for slot in range(SLOTS):
        code = f"def transform(grid):\n    return [[{slot % 10}]] * {1 + slot // 10}\n"
        done = Completions(
            request_id=plan.request_id("sample", slot), task_id=task.id, texts=[f"```python\n{code}```"],
            kind="sample", tokens=[9], finish_reasons=["stop"], meta={"slot": slot},
        )  # fmt: skip
        [req, proposals] = proposing.process(plan, done, origin="sample", batch=16)
        events += [proposals, _evaluated(task, req)]

    real = actors.archive.publish_task_status
    rng = random.Random(7)

    async def slow_publish(bus, statuses):  # type: ignore[no-untyped-def]
        await anyio.sleep(rng.random() * 0.05)  # the bus answers late, by a different delay each time
        await real(bus, statuses)

    monkeypatch.setattr(actors.archive, "publish_task_status", slow_publish)
    run = tmp_path / "run"

    async def main() -> list[TaskStatus]:
        with NatsServer(tmp_path / "nats") as srv:
            async with bring_up(
                Config(), run_dir=run, bus=BusConfig.from_url(srv.url), actors=[ActorSpec("archive")], owner=True,
            ) as system:  # fmt: skip
                bus = system.bus
                await bus.js_publish(search.subject(), search.encode(), msg_id=search.dedup_id())
                for m in events:
                    await bus.js_publish(m.subject(), m.encode(), msg_id=m.dedup_id())

                async def statuses() -> list[TaskStatus]:
                    return [
                        TaskStatus.decode(m.data)
                        for m in await read_subject(bus, task_status_subject(task.id), STREAM_EVENTS)
                    ]

                got: list[TaskStatus] = []

                async def finished() -> bool:
                    got[:] = await statuses()
                    return bool(got) and got[-1].state == "done"

                with anyio.fail_after(60):
                    while not await finished():
                        await anyio.sleep(0.2)
                await anyio.sleep(0.5)  # anything published late would land now
                return await statuses()

    got = anyio.run(main)
    assert len(got) >= 2 and got[-1].sample_resolved == SLOTS and got[-1].programs == SLOTS
    for earlier, later in itertools.pairwise(got):
        assert later.updated_at >= earlier.updated_at
        assert later.sample_resolved >= earlier.sample_resolved and later.programs >= earlier.programs
    assert [s.state for s in got].index("done") == len(got) - 1  # done is the last word
