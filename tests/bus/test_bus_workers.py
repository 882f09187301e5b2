"""Workers as real processes on real servers: crashes, scale-out, drains, restarts, auth, clusters.

Every scenario checks the same end state: each submitted program is evaluated exactly once
downstream (at-least-once delivery + JetStream dedup on the program id), ids preserved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from bushelpers import (
    OPS,
    ROOT,
    Workers,
    cluster_ports,
    connect,
    dead_letters,
    evaluated,
    provisioned,
    submit,
    topology,
    wait_for,
)

from soar_async.bus.conn import Bus, BusError
from soar_async.bus.server import NatsServer, free_port
from soar_async.messages import ExecRequest, Heartbeat
from soar_async.runtime.registry import live_workers

pytestmark = [pytest.mark.slow]

ROLE = os.environ.get("SOAR_TEST_ROLE", "executor")
"""The role under test: the real executor (wasm sandbox). SOAR_TEST_ROLE=helper_actors:Echo
exercises the same scenarios on a sandbox-free actor when working on the runtime alone."""

PROGRAM = """
def transform(grid):
    total = 0
    for i in range({n}):
        total += i % 7
    return [row[::-1] for row in grid]
"""
"""A real program that takes a noticeable moment in the guest and gives a checkable answer."""


@pytest.fixture(autouse=True)
def _sandbox(request: pytest.FixtureRequest) -> None:
    if ROLE == "executor":
        request.getfixturevalue("sandbox_built")


def batch(n: int, prefix: str = "p", loops: int = 200_000) -> list[ExecRequest]:
    grids = [[[1, 2, 3], [4, 5, 6]], [[7, 8], [9, 0]]]
    return [
        ExecRequest(
            program_id=f"{prefix}{i:04d}",
            task_id=f"task{i % 3}",
            code=PROGRAM.format(n=loops + i),  # distinct code per program, as a real batch has
            inputs=grids,
            train_outputs=[[r[::-1] for r in grids[0]]],
        )
        for i in range(n)
    ]


async def heartbeats(bus: Bus) -> dict[str, Heartbeat]:
    return {h.worker_id: h for h in await live_workers(bus)}


async def by_pid(bus: Bus, pid: int) -> Heartbeat | None:
    return next((h for h in (await heartbeats(bus)).values() if h.pid == pid), None)


async def assert_exactly_once(bus: Bus, reqs: list[ExecRequest], timeout: float = 180) -> list[Any]:
    want = sorted(r.program_id for r in reqs)

    async def done() -> bool:
        return len({e.program_id for e in await evaluated(bus)}) >= len(want)

    await wait_for(done, timeout, f"{len(want)} programs evaluated", period=0.5)
    evs = await evaluated(bus)
    assert sorted(e.program_id for e in evs) == want, "each program evaluated exactly once"
    byid = {r.program_id: r for r in reqs}
    for e in evs:
        assert e.task_id == byid[e.program_id].task_id
        if ROLE == "executor":
            assert e.errors == [None, None], e.details
            assert e.train_correct == [True] and e.fitness == 1.0
            assert e.outputs[1] == [[8, 7], [0, 9]]
    return evs


def test_kill9_mid_batch_redelivers_to_other_executor(nats_server: NatsServer, workers: Workers) -> None:
    async def main() -> None:
        bus = await provisioned(nats_server.url)
        reqs = batch(24, loops=1_000_000)  # about a second each: A surely holds unacked work
        a = workers.start(nats_server.url, ROLE, 2)
        b = workers.start(nats_server.url, ROLE, 1)
        await submit(bus, reqs)
        hb = await wait_for(lambda: _busy(bus, a.pid), 120, "worker A busy after finishing some work")
        assert hb.in_flight >= 1
        a.kill()  # SIGKILL: no drain, no nak; its unacked requests come back after ack_wait
        a.wait(10)
        await wait_for(lambda: _redelivered(bus, b.pid), 120, "B to receive A's unacked requests")
        evs = await assert_exactly_once(bus, reqs)
        assert {e.worker_id for e in evs} >= {hb.worker_id}
        await bus.close()

    async def _redelivered(bus: Bus, pid: int) -> bool:
        hb = await by_pid(bus, pid)
        return bool(hb and hb.counters.get("redelivered", 0) >= 1)

    async def _busy(bus: Bus, pid: int) -> Heartbeat | None:
        hb = await by_pid(bus, pid)
        return hb if hb and hb.counters.get("ok", 0) >= 2 and hb.in_flight >= 1 else None

    anyio.run(main)


def test_second_worker_shares_work_and_sigterm_loses_nothing(
    nats_server: NatsServer, workers: Workers, tmp_path: Path
) -> None:
    async def main() -> None:
        bus = await provisioned(nats_server.url)
        reqs = batch(40, loops=1_000_000)
        a = workers.start(nats_server.url, ROLE, 1)
        await submit(bus, reqs)
        await wait_for(lambda: _ok(bus, a.pid, 2), 120, "worker A working")
        b = workers.start(nats_server.url, ROLE, 1)
        await wait_for(lambda: _ok(bus, b.pid, 1), 120, "worker B gets a share while work flows")
        st = status_json(nats_server.url)
        live = {w["pid"] for w in st["workers"] if w["role"] in (ROLE, "echo")}
        assert {a.pid, b.pid} <= live, st["workers"]
        assert len(await evaluated(bus)) < len(reqs), "still mid-batch when A is told to stop"
        a.send_signal(signal.SIGTERM)  # drain: finish in-flight, hand back nothing unfinished
        assert await anyio.to_thread.run_sync(a.wait, 60) == 0, workers.output(a)
        evs = await assert_exactly_once(bus, reqs)
        by_worker: dict[str, int] = {}
        for e in evs:
            by_worker[e.worker_id] = by_worker.get(e.worker_id, 0) + 1
        assert len(by_worker) == 2, by_worker
        assert "actor draining" in workers.output(a)
        await bus.close()

    async def _ok(bus: Bus, pid: int, n: int) -> bool:
        hb = await by_pid(bus, pid)
        return bool(hb and hb.counters.get("ok", 0) >= n)

    anyio.run(main)


def status_json(url: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    p = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "status", "--json", "--nats", url, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_server_restart_actors_reconnect_and_finish(nats_server: NatsServer, workers: Workers) -> None:
    async def main() -> None:
        bus = await provisioned(nats_server.url)
        reqs = batch(30)
        a = workers.start(nats_server.url, ROLE, 2)
        await submit(bus, reqs)

        async def some_done() -> bool:
            return len(await evaluated(bus)) >= 5

        await wait_for(some_done, 120, "some programs evaluated before the restart")
        await anyio.to_thread.run_sync(nats_server.restart)  # JetStream state on disk survives
        await assert_exactly_once(bus, reqs)
        assert a.poll() is None, "the worker rode out the restart"
        assert "nats reconnected" in workers.output(a) or "nats disconnected" in workers.output(a)
        await bus.close()

    anyio.run(main)


def ops_server(tmp_path: Path, conf: str, password: str) -> NatsServer:
    """A server from one of the shipped configs in ops/nats (free ports, password from env)."""
    return NatsServer(
        None,
        config=OPS / "nats" / conf,
        cwd=tmp_path,
        extra_args=["-m", str(free_port())],
        env={"SOAR_NATS_PASSWORD": password},
        log_file=tmp_path / f"nats-{conf}.log",
    )


def test_auth_refuses_anonymous_and_accepts_credentials(tmp_path: Path, workers: Workers) -> None:
    secret = "s3cret-for-tests"
    srv = ops_server(tmp_path, "auth.conf", secret)
    srv.start()
    try:

        async def main() -> None:
            with pytest.raises(BusError, match="authorization"):
                await connect(srv.url, connect_timeout=2.0)
            with pytest.raises(BusError, match="authorization"):
                await connect(srv.url, user="soar", password="wrong", connect_timeout=2.0)
            bus = await provisioned(srv.url, user="soar", password=secret)
            reqs = batch(6)
            await submit(bus, reqs)
            workers.start(srv.url, ROLE, 2, env={"SOAR_NATS_USER": "soar", "SOAR_NATS_PASSWORD": secret})
            anon = workers.start(srv.url, ROLE, 1)
            await assert_exactly_once(bus, reqs)
            assert await anyio.to_thread.run_sync(anon.wait, 60) == 1
            assert "authorization" in workers.output(anon)
            await bus.close()

        anyio.run(main)
        p = subprocess.run(
            [sys.executable, "-m", "soar_async.cli", "status", "--nats", srv.url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and "authorization" in p.stderr
        st = status_json(srv.url, env={"SOAR_NATS_USER": "soar", "SOAR_NATS_PASSWORD": secret})
        assert st["streams"]["SOAR_EVENTS"]["messages"] >= 6
    finally:
        srv.stop()


class Cluster:
    """The three node configs from ops/nats/cluster on free loopback ports."""

    def __init__(self, tmp: Path) -> None:
        ports = cluster_ports(3)
        routes = ",".join(f"nats://127.0.0.1:{r}" for _, r in ports)
        self.nodes = []
        for i, (cport, rport) in enumerate(ports, start=1):
            self.nodes.append(
                NatsServer(
                    None,
                    port=cport,
                    config=OPS / "nats" / "cluster" / f"n{i}.conf",
                    cwd=tmp,
                    extra_args=["-m", str(free_port()), "--cluster", f"nats://127.0.0.1:{rport}", "--routes", routes],
                    log_file=tmp / f"n{i}.log",
                )
            )

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    c = Cluster(tmp_path)
    c.start()
    yield c
    c.stop()


def test_cluster_failover_exactly_once(cluster: Cluster, workers: Workers) -> None:
    async def main() -> None:
        bus = await provisioned(cluster.urls, topology(replicas=3))
        info = await bus.js.stream_info("SOAR_EXEC")
        assert info.config.num_replicas == 3
        reqs = batch(40)
        workers.start(cluster.urls, ROLE, 2)
        workers.start(cluster.urls, ROLE, 1)
        await submit(bus, reqs)

        async def some_done() -> bool:
            return len(await evaluated(bus)) >= 6

        await wait_for(some_done, 120, "some programs evaluated before the failover")
        leader = (await bus.js.stream_info("SOAR_EXEC")).cluster.leader
        victim = cluster.nodes[int(leader.removeprefix("n")) - 1]  # server names n1..n3 come from ops/
        await anyio.to_thread.run_sync(victim.stop)  # the exec stream's leader goes away mid-batch
        await assert_exactly_once(bus, reqs)
        await bus.close()

    anyio.run(main)


def test_tls_with_ca_and_password(tmp_path: Path, workers: Workers) -> None:
    subprocess.run(
        [str(OPS / "scripts" / "make-dev-certs.sh"), str(tmp_path / "certs")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    secret = "tls-test-password"
    srv = ops_server(tmp_path, "tls.conf", secret)
    srv.start()
    url = srv.url.replace("nats://", "tls://")
    ca = str(tmp_path / "certs" / "ca.pem")
    try:

        async def main() -> None:
            with pytest.raises(BusError, match="CERTIFICATE_VERIFY_FAILED"):
                await connect(url, user="soar", password=secret, connect_timeout=2.0)
            bus = await provisioned(url, user="soar", password=secret, tls_ca=ca)
            reqs = batch(4)
            await submit(bus, reqs)
            workers.start(
                url, ROLE, 2, env={"SOAR_NATS_USER": "soar", "SOAR_NATS_PASSWORD": secret, "SOAR_NATS_CA": ca}
            )
            await assert_exactly_once(bus, reqs)
            await bus.close()

        anyio.run(main)
    finally:
        srv.stop()


def test_worker_dying_on_last_delivery_still_dead_letters(nats_server: NatsServer, workers: Workers) -> None:
    """Workers that die holding a poison message: after max deliveries it lands in the dead letter."""
    from soar_async.runtime.deadletter import watch_max_deliveries
    from soar_async.runtime.inputs import WorkQueue

    async def main() -> None:
        topo = topology(ack_wait=2.0, max_deliver=2)
        bus = await provisioned(nats_server.url, topo)
        feed = await WorkQueue("exec", ExecRequest).open(bus, topo, role="echo", worker_id="test", partition=None)
        async with anyio.create_task_group() as tg:
            await tg.start(watch_max_deliveries, bus, feed, "echo")  # what every live runner does
            poison = ExecRequest(program_id="poison", task_id="t", code="exit", inputs=[[[1]]])
            await submit(bus, [poison])
            for _ in range(2):  # each delivery kills its worker
                w = workers.start(nats_server.url, "helper_actors:Echo", 1, env={"ECHO_CRASH": "1"})
                assert await anyio.to_thread.run_sync(w.wait, 60) == 9
            # A healthy worker pulls next: the server gives up on the message (advisory), and both
            # listeners (its runner and ours) dead-letter it - once, thanks to the dedup id.
            workers.start(nats_server.url, "helper_actors:Echo", 1)

            async def dead() -> list[Any]:
                return await dead_letters(bus, "echo")

            [dl] = await wait_for(dead, 30, "the poison message in the dead letter stream")
            tg.cancel_scope.cancel()
        assert ExecRequest.decode(dl.data).program_id == "poison"
        assert "max deliveries (2)" in dl.headers["Soar-Reason"]
        assert (await bus.js.stream_info("SOAR_EXEC")).state.messages == 0
        await bus.close()

    anyio.run(main)
