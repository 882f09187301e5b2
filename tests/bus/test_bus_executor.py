"""The executor actor in-process on a real server, running programs in the real wasm sandbox."""

from __future__ import annotations

import anyio
import msgpack
import pytest
from bushelpers import dead_letters, evaluated, read_subject, run_actor, submit, wait_for

from actors.executor import Executor
from soar_async.arc import load_tasks
from soar_async.bus.conn import PayloadTooLarge
from soar_async.bus.server import NatsServer
from soar_async.bus.topology import EVALUATED_ALL, OBJ_BLOBS, STREAM_EVENTS, WORK_EXEC
from soar_async.messages import EvaluatedBatch, ExecBatch, ExecRequest, decode
from soar_async.records import program_id
from soar_async.runtime.client import exec_requests, submit_and_collect

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_built")]

FLIP = "def transform(grid):\n    return [row[::-1] for row in grid]\n"
RAISES = "def transform(grid):\n    return grid[99]\n"
SYNTAX = "def transform(grid)\n    return grid\n"
NUMPY = "import numpy as np\ndef transform(grid):\n    return np.fliplr(np.array(grid)).tolist()\n"


async def _with_executor(url: str, body, concurrency: int = 2, **kw):  # type: ignore[no-untyped-def]
    return await run_actor(url, Executor, body, concurrency, **kw)


def test_programs_evaluated_with_fitness_and_errors(nats_server: NatsServer) -> None:
    grids = [[[1, 2], [3, 4]], [[5, 6, 7]]]
    train_out = [[[2, 1], [4, 3]]]

    def req(pid: str, code: str) -> ExecRequest:
        return ExecRequest(program_id=pid, task_id="toy", code=code, inputs=grids, train_outputs=train_out)

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        await submit(bus, [req("flip", FLIP), req("raises", RAISES), req("syntax", SYNTAX), req("np", NUMPY)])
        await wait_for(lambda: runner.counters.ok >= 4, 120, "four programs evaluated")
        evs = {e.program_id: e for e in await evaluated(bus)}
        assert set(evs) == {"flip", "raises", "syntax", "np"}
        for pid in ("flip", "np"):
            assert evs[pid].outputs == [[[2, 1], [4, 3]], [[7, 6, 5]]]
            assert evs[pid].errors == [None, None]
            assert evs[pid].train_correct == [True] and evs[pid].fitness == 1.0
            assert evs[pid].worker_id == runner.worker_id and evs[pid].duration_s > 0
        assert evs["raises"].errors == ["exception", "exception"] and evs["raises"].fitness == 0.0
        assert "IndexError" in (evs["raises"].details[0] or "")
        assert evs["syntax"].errors == ["syntax_error", "syntax_error"]

    anyio.run(_with_executor, nats_server.url, body)


def test_real_arc_task_and_inputs_by_reference(nats_server: NatsServer) -> None:
    task = load_tasks("arc-agi-1:training#3c9b0459")[0]
    rot180 = "def transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n"

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        [direct] = exec_requests([task], [rot180])
        assert direct.program_id == program_id(task.id, rot180, task.digest)
        store = await bus.js.object_store(OBJ_BLOBS)
        blob = msgpack.packb({"inputs": task.inputs(), "train_outputs": [p.output for p in task.train]})
        await store.put(f"inputs/{task.id}", blob)
        by_ref = ExecRequest(program_id="byref", task_id=task.id, code=rot180, inputs_ref=f"inputs/{task.id}")
        missing = ExecRequest(program_id="missing", task_id=task.id, code=rot180, inputs_ref="inputs/nope")
        await submit(bus, [direct, by_ref, missing])
        await wait_for(
            lambda: runner.counters.ok >= 2 and runner.counters.dead_lettered >= 1,
            120,
            "two evaluated, one dead letter",
        )
        evs = {e.program_id: e for e in await evaluated(bus)}
        assert set(evs) == {direct.program_id, "byref"}
        for e in evs.values():
            assert e.fitness == 1.0 and len(e.outputs) == len(task.inputs())
        [dl] = await dead_letters(bus)
        assert "inputs/nope" in dl.headers["Soar-Reason"] and ExecRequest.decode(dl.data).program_id == "missing"

    anyio.run(_with_executor, nats_server.url, body)


def test_an_exec_batch_is_run_whole_and_answered_with_one_event(nats_server: NatsServer) -> None:
    """The programs of one completion batch travel as one job and come back as one event,
    each program judged exactly as when it travels alone; a batch whose columns disagree is
    dead-lettered with the reason."""
    grids = [[[1, 2], [3, 4]], [[5, 6, 7]]]
    singles = [
        ExecRequest(program_id=pid, task_id="toy", code=code, inputs_ref="inputs/toy", norm=f"n-{pid}", generation=3)
        for pid, code in (("flip", FLIP), ("raises", RAISES), ("syntax", SYNTAX), ("np", NUMPY))
    ]
    batch = ExecBatch.of("req-1:abc", singles)
    malformed = {**batch.to_dict(), "batch_id": "req-2:def", "codes": [FLIP]}

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        store = await bus.js.object_store(OBJ_BLOBS)
        await store.put("inputs/toy", msgpack.packb({"inputs": grids, "train_outputs": [[[2, 1], [4, 3]]]}))
        await submit(bus, [batch])
        await bus.js.publish(WORK_EXEC + ".toy", msgpack.packb(malformed))
        await wait_for(lambda: runner.counters.ok >= 1 and runner.counters.dead_lettered >= 1, 120, "batch handled")
        [stored] = await read_subject(bus, EVALUATED_ALL, STREAM_EVENTS)
        got = decode(stored.data)
        assert isinstance(got, EvaluatedBatch) and got.batch_id == batch.batch_id and len(got) == 4
        evs = {e.program_id: e for e in got.items()}
        assert list(evs) == ["flip", "raises", "syntax", "np"]
        for pid in ("flip", "np"):
            assert evs[pid].outputs == [[[2, 1], [4, 3]], [[7, 6, 5]]] and evs[pid].train_correct == [True]
            assert evs[pid].norm == f"n-{pid}" and evs[pid].generation == 3 and evs[pid].worker_id == runner.worker_id
        assert evs["raises"].errors == ["exception", "exception"] and evs["raises"].fitness == 0.0
        assert evs["syntax"].errors == ["syntax_error", "syntax_error"]
        [dl] = await dead_letters(bus)
        assert "codes do not have 4 rows" in dl.headers["Soar-Reason"]

    anyio.run(_with_executor, nats_server.url, body)


def test_malformed_and_oversized_then_next_good_message(nats_server: NatsServer) -> None:
    good = ExecRequest(program_id="after", task_id="toy", code=FLIP, inputs=[[[1, 2]]], train_outputs=[[[2, 1]]])

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        bad = [
            b"garbage",
            msgpack.packb({**good.to_dict(), "v": 2}),
            msgpack.packb({"t": "exec_request", "v": 1, "program_id": "x"}),
        ]
        for b in bad:
            await bus.js.publish(WORK_EXEC, b)
        huge = ExecRequest(program_id="huge", task_id="toy", code="#" * 10_000_000, inputs=[[[1]]])
        with pytest.raises(PayloadTooLarge) as err:
            await bus.js_publish(huge.subject(), huge.encode(), msg_id=huge.dedup_id())
        assert "10000" in str(err.value) and "1048576" in str(err.value) and "object store" in str(err.value)
        await submit(bus, [good])
        await wait_for(
            lambda: runner.counters.ok >= 1 and runner.counters.dead_lettered >= 3,
            60,
            "good message processed after the bad ones",
        )
        assert [e.program_id for e in await evaluated(bus)] == ["after"]
        assert [m.data for m in await dead_letters(bus)] == bad

    anyio.run(_with_executor, nats_server.url, body)


def test_collector_reports_dead_lettered_requests_instead_of_waiting(nats_server: NatsServer) -> None:
    """A request that can never be evaluated comes back as dead-lettered, well before the timeout."""
    good = ExecRequest(program_id="good", task_id="toy", code=FLIP, inputs=[[[1, 2]]], train_outputs=[[[2, 1]]])
    hopeless = ExecRequest(program_id="hopeless", task_id="toy", code=FLIP, inputs_ref="inputs/none")

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        got = await submit_and_collect(bus, [good, hopeless], timeout=600)
        assert set(got.results) == {"good"} and got.results["good"].fitness == 1.0
        assert set(got.dead_lettered) == {"hopeless"} and "inputs/none" in got.dead_lettered["hopeless"]

    anyio.run(_with_executor, nats_server.url, body)
