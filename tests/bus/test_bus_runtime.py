"""The actor runtime on a real server, with a scriptable in-process actor (no sandbox)."""

from __future__ import annotations

import anyio
import msgpack
import pytest
from bushelpers import connect, dead_letters, evaluated, provisioned, requests, run_actor, submit, topology, wait_for
from helper_actors import Echo

from soar_async.bus.conn import PayloadTooLarge
from soar_async.bus.server import NatsServer
from soar_async.bus.topology import WORK_EXEC
from soar_async.messages import ExecRequest
from soar_async.runtime.actor import ActorRunner


async def _run_echo(url: str, body, concurrency: int = 2, **kw):  # type: ignore[no-untyped-def]
    return await run_actor(url, Echo, body, concurrency, **kw)


def test_batch_evaluated_once(nats_server: NatsServer) -> None:
    async def body(bus, runner):  # type: ignore[no-untyped-def]
        reqs = requests(40)
        await submit(bus, reqs)
        await submit(bus, reqs[:10])  # duplicates of the same requests: deduplicated by the stream
        await wait_for(lambda: runner.counters.ok >= 40, 60, "40 results")
        evs = await evaluated(bus)
        assert sorted(e.program_id for e in evs) == sorted(r.program_id for r in reqs)
        assert all(e.outputs == r.inputs for e, r in zip(sorted(evs, key=lambda e: e.program_id), reqs, strict=True))

    anyio.run(_run_echo, nats_server.url, body)


def test_bad_payloads_dead_lettered_and_next_processed(nats_server: NatsServer) -> None:
    async def body(bus, runner):  # type: ignore[no-untyped-def]
        good = ExecRequest(program_id="good", task_id="t", code="ok", inputs=[[[1]]]).to_dict()
        bad = [
            b"\xc1\xff not msgpack",
            msgpack.packb([1, 2, 3]),
            msgpack.packb({**good, "v": 99}),  # schema from the future
            msgpack.packb({k: v for k, v in good.items() if k != "code"}),  # missing field
            msgpack.packb({**good, "inputs": "not a list"}),  # wrong kind
        ]
        for b in bad:
            await bus.js.publish(WORK_EXEC, b)
        big = ExecRequest(program_id="big", task_id="t", code="x" * (10 * 1024 * 1024), inputs=[])
        with pytest.raises(PayloadTooLarge, match=r"10485\d+ bytes .* max_payload of 1048576"):
            await bus.js_publish(big.subject(), big.encode())
        extra = msgpack.packb({**good, "program_id": "good2", "future_field": {"x": 1}})  # unknown: ignored
        await bus.js.publish(WORK_EXEC, extra)
        await submit(bus, [ExecRequest.decode(msgpack.packb(good))])
        await wait_for(lambda: runner.counters.ok >= 2, 30, "good messages")
        await wait_for(lambda: runner.counters.dead_lettered >= len(bad), 30, "dead letters")
        dl = await dead_letters(bus, "echo")
        assert [m.data for m in dl] == bad
        reasons = [m.headers["Soar-Reason"] for m in dl]
        assert "not msgpack" in reasons[0]
        assert "not a msgpack map" in reasons[1]
        assert "schema version 99" in reasons[2]
        assert "missing required field(s) code" in reasons[3]
        assert "'inputs'" in reasons[4]
        assert sorted(e.program_id for e in await evaluated(bus)) == ["good", "good2"]

    anyio.run(_run_echo, nats_server.url, body)


def test_retry_then_dead_letter_after_max_deliveries(nats_server: NatsServer) -> None:
    async def body(bus, runner):  # type: ignore[no-untyped-def]
        await submit(bus, requests(1, code="flaky:2", prefix="flaky"))
        await submit(bus, requests(1, code="fail", prefix="fail"))
        await submit(bus, requests(1, code="permanent", prefix="perm"))
        await wait_for(
            lambda: runner.counters.ok >= 1 and runner.counters.dead_lettered >= 2,
            120,
            "flaky success and two dead letters",
        )
        dl = await dead_letters(bus, "echo")
        why = {ExecRequest.decode(m.data).program_id: m.headers for m in dl}
        assert why["fail0000"]["Soar-Deliveries"] == "4"
        assert "failed 4 times" in why["fail0000"]["Soar-Reason"]
        assert why["perm0000"]["Soar-Deliveries"] == "1"
        assert [e.program_id for e in await evaluated(bus)] == ["flaky0000"]

    anyio.run(_run_echo, nats_server.url, body)


def test_drain_hands_back_unfinished_work(nats_server: NatsServer) -> None:
    """A stop with a short drain timeout naks in-flight work; a second runner finishes all of it."""

    async def main() -> None:
        bus = await provisioned(nats_server.url)
        await submit(bus, requests(4, code="sleep:2", prefix="slow"))
        r1 = ActorRunner(Echo, bus, concurrency=2, topology=topology(), drain_timeout=0.2)
        async with anyio.create_task_group() as tg:
            await tg.start(r1.run)
            await wait_for(lambda: r1.in_flight == 2, 30, "two jobs in flight")
            r1.request_stop()
        assert r1.counters.handed_back == 2 and r1.counters.ok == 0
        r2 = ActorRunner(Echo, bus, concurrency=4, topology=topology())
        async with anyio.create_task_group() as tg:
            await tg.start(r2.run)
            await wait_for(lambda: r2.counters.ok == 4, 60, "all four done")
            r2.request_stop()
        assert sorted(e.program_id for e in await evaluated(bus)) == [f"slow{i:04d}" for i in range(4)]
        await bus.close()

    anyio.run(main)


def test_heartbeat_registry(nats_server: NatsServer) -> None:
    from soar_async.runtime.status import gather_status

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        async def status_with_worker():  # type: ignore[no-untyped-def]
            st = await gather_status(bus)
            return st if st["workers"] else None

        st = await wait_for(status_with_worker, 20, "heartbeat")
        w = st["workers"][0]
        assert w["role"] == "echo" and w["worker_id"] == runner.worker_id and w["concurrency"] == 2
        assert {q["queue"] for q in st["queues"]} >= {"exec"}

    anyio.run(_run_echo, nats_server.url, body)

    async def after() -> None:
        bus = await connect(nats_server.url)
        st = await gather_status(bus)
        await bus.close()
        assert st["workers"] == []  # deregistered on stop

    anyio.run(after)


def test_connect_errors_are_one_line(nats_server: NatsServer) -> None:
    from soar_async.bus.conn import BusError
    from soar_async.bus.server import free_port

    async def main() -> None:
        with pytest.raises(BusError, match="could not connect"):
            await connect(f"nats://127.0.0.1:{free_port()}", connect_timeout=1.0)

    anyio.run(main)


def test_long_job_kept_alive_past_ack_wait(nats_server: NatsServer) -> None:
    """A job longer than ack_wait (4 s here) is not redelivered: in-progress acks keep it ours."""

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        await submit(bus, requests(1, code="sleep:6", prefix="long"))
        await wait_for(lambda: runner.counters.ok >= 1, 60, "the long job")
        ci = await bus.js.consumer_info("SOAR_EXEC", "executor")
        assert ci.num_redelivered == 0 and runner.counters.redelivered == 0
        assert [e.program_id for e in await evaluated(bus)] == ["long0000"]

    anyio.run(_run_echo, nats_server.url, body)
