"""A program the executors give up on does not leave its task waiting forever.

The archive reads the executors' dead letters and records such a program (or every program of
such a batch) as crashed on every input; the task's pending count drops and it is done. Real
nats-server, real archive actor; the dead letter is published as the runtime publishes one.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from soar_async.arc import load_tasks
from soar_async.bus.conn import BusConfig
from soar_async.bus.server import NatsServer
from soar_async.config import Config, SearchConfig
from soar_async.messages import Completions, ExecBatch
from soar_async.runtime.client import exec_request
from soar_async.runtime.deadletter import publish_dead_letter
from soar_async.runtime.system import ActorSpec, bring_up
from soar_async.search.common import Proposing
from soar_async.search.plan import Plan, search_task
from soar_async.search.store import ArchiveStore, UnknownTask
from tests.waiting import wait_for

CODE = "def transform(grid):\n    return grid\n"


@pytest.mark.parametrize("batch", [1, 16], ids=["one program", "exec batch"])
def test_dead_lettered_program_is_recorded_as_crashed_and_the_task_finishes(tmp_path: Path, batch: int) -> None:
    task = load_tasks("arc-agi-1:training#3c9b0459")[0]
    codes = [CODE] if batch == 1 else [CODE, CODE.replace("grid\n", "grid[::-1]\n"), CODE.replace("grid\n", "[]\n")]
    cfg = SearchConfig(samples_per_task=len(codes), refinements_per_task=0, completions_per_sample_request=len(codes))
    search = search_task(task, cfg)
    plan = Plan.of(search)
    done = Completions(
        request_id=plan.request_id("sample", 0), task_id=task.id, texts=[f"```python\n{c}```" for c in codes],
        kind="sample", tokens=[9] * len(codes), finish_reasons=["stop"] * len(codes), meta={"slot": 0},
    )  # fmt: skip
    [req, proposals] = Proposing().process(plan, done, origin="sample", batch=batch)
    ids = [r.program_id for r in req.requests()] if isinstance(req, ExecBatch) else [req.program_id]
    assert ids == [exec_request(task, c).program_id for c in codes]
    run = tmp_path / "run"

    async def main() -> None:
        with NatsServer(tmp_path / "nats") as srv:
            async with bring_up(
                Config(),
                run_dir=run, bus=BusConfig.from_url(srv.url), actors=[ActorSpec("archive")], owner=True,
            ) as system:  # fmt: skip
                bus = system.bus
                for m in (search, proposals):
                    await bus.js_publish(m.subject(), m.encode(), msg_id=m.dedup_id())
                store = ArchiveStore.open_readonly(run / "archive.sqlite")

                def pending_is(n: int) -> bool:
                    try:
                        return store.status(task.id).pending == n
                    except UnknownTask:  # the plan is not stored yet
                        return False

                await wait_for(lambda: pending_is(len(codes)), 30, "the programs proposed")
                # The executors give up on it: the runtime copies it to soar.dlq.executor.
                await publish_dead_letter(
                    bus, "executor", req.encode(), source_subject=req.subject(), seq="7",
                    reason="permanent: test", deliveries=5,
                )  # fmt: skip
                await wait_for(lambda: pending_is(0), 30, "the task settled")
                st = store.status(task.id)
                assert st.state == "done" and st.programs == len(codes) and st.arms == 0
                for pid in ids:
                    rec = store.record(pid)
                    assert rec is not None and all(e and e.startswith("crash") for e in rec.train_errors)
                store.close()

    anyio.run(main)
