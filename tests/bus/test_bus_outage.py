"""The NATS server going away: stopped past the ack wait, killed under `soar up`, never coming
back, or never there. Real nats-server processes, real workers; nothing is lost, nothing runs
more often than its redeliveries require, and every wait ends with a clear word."""

from __future__ import annotations

import re
import signal
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from bushelpers import (
    ROOT,
    connect,
    evaluated,
    nats_children,
    requests,
    run_actor,
    soar_env,
    start_soar_up,
    submit,
    wait_for,
)
from helper_actors import Echo

from soar_async.bus.server import NatsServer, free_port, nats_server_binary
from soar_async.bus.topology import EVALUATED_ALL, STREAM_EVENTS, STREAM_EXEC
from soar_async.runtime.client import submit_and_collect

pytestmark = pytest.mark.slow

ACK_WAIT = 4.0  # the test topology's (bushelpers.TEST_TOPOLOGY)


async def deliveries(bus, consumer: str = "executor") -> int:  # type: ignore[no-untyped-def]
    """Every delivery the queue's consumer made, redeliveries included."""
    ci = await bus.js.consumer_info(STREAM_EXEC, consumer)
    return int(ci.delivered.consumer_seq)


def test_server_down_longer_than_the_ack_wait(nats_server: NatsServer) -> None:
    """No pull requests pile up during the outage: the worker never holds more than its slots,
    and only the jobs in flight when the server died are delivered a second time."""
    reqs = requests(40, code="sleep:0.25", prefix="out")
    concurrency = 2

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        await submit(bus, reqs)
        await wait_for(lambda: runner.counters.ok >= 8, 60, "some work done before the outage")
        await anyio.to_thread.run_sync(nats_server.kill)
        await anyio.sleep(ACK_WAIT + 3)  # the outage itself: longer than the ack wait
        await anyio.to_thread.run_sync(nats_server.start)
        await bus.wait_connected()

        async def all_in() -> bool:
            return len({e.program_id for e in await evaluated(bus)}) == len(reqs)

        await wait_for(all_in, 120, "every job evaluated after the restart")
        evs = await evaluated(bus)
        assert sorted(Counter(e.program_id for e in evs).values()) == [1] * len(reqs)  # stored once
        assert runner.peak_in_flight <= concurrency
        assert await deliveries(bus) <= len(reqs) + concurrency, "more redeliveries than jobs in flight"

    anyio.run(run_actor, nats_server.url, Echo, body, concurrency)


def test_resubmitted_pass_after_a_restart_runs_nothing_again(nats_server: NatsServer) -> None:
    """The queue forgets message ids over a restart; the stored results still answer."""
    reqs = requests(12, code="ok", prefix="again")

    async def body(bus, runner):  # type: ignore[no-untyped-def]
        first = await submit_and_collect(bus, reqs, timeout=60)
        assert len(first.results) == len(reqs) and first.already_stored == 0
        before = await deliveries(bus)
        await anyio.to_thread.run_sync(nats_server.stop)
        await anyio.to_thread.run_sync(nats_server.start)
        await bus.wait_connected()
        again = await submit_and_collect(bus, reqs, timeout=60)
        assert set(again.results) == {r.program_id for r in reqs} and again.already_stored == len(reqs)
        assert await deliveries(bus) == before and runner.counters.ok == len(reqs)

    anyio.run(run_actor, nats_server.url, Echo, body, 2)


def test_embedded_server_killed_under_up_during_solve(tmp_path: Path, sandbox_built: object) -> None:
    """kill -9 of `soar up`'s server mid-pass: it is restarted, the pass completes, nothing is
    lost or stored twice, and the queue's deliveries stay bounded."""
    run = tmp_path / "run"
    up = start_soar_up(run)
    solve: subprocess.Popen[str] | None = None
    try:
        [srv] = nats_children(up)
        url = (run / "nats.url").read_text().strip()
        solve = subprocess.Popen(
            [sys.executable, "-m", "soar_async.cli", "solve", "--programs", "baseline", "--run-dir", str(run),
             "--tasks", "arc-agi-1:evaluation[:40]", "--timeout", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=soar_env(), cwd=ROOT,
        )  # fmt: skip

        async def some_evaluated() -> bool:
            bus = await connect(url)
            try:
                info = await bus.js.stream_info(STREAM_EVENTS, subjects_filter=EVALUATED_ALL)
                return sum((info.state.subjects or {}).values()) >= 50
            finally:
                await bus.close()

        anyio.run(lambda: wait_for(some_evaluated, 120, "the pass under way"))
        srv.kill()
        out, err = solve.communicate(timeout=600)
        assert solve.returncode == 0, err[-3000:]
        [restarted] = nats_children(up)
        assert restarted.pid != srv.pid
        log = (tmp_path / "up.out").read_text()
        assert "embedded nats-server died" in log and "embedded nats-server restarted" in log

        async def check() -> None:
            bus = await connect(url)
            evs = await evaluated(bus)
            m = re.search(r"evaluated (\d+)/(\d+) programs", out)
            assert m is not None, out
            programs = int(m.group(2))
            assert len(evs) == len({e.program_id for e in evs}) == programs  # none lost, none twice
            assert await deliveries(bus) <= programs + 4  # only what was in flight at the kill, again
            await bus.close()

        anyio.run(check)
    finally:
        if solve is not None and solve.poll() is None:
            solve.kill()
        up.send_signal(signal.SIGINT)
        rc = up.wait(60)
    assert rc == 0, (tmp_path / "up.out").read_text()[-3000:]


def test_embedded_server_that_cannot_come_back_ends_up_with_an_error(tmp_path: Path) -> None:
    """The server binary refuses to start again: `up` says so within the configured time and exits 1."""
    run = tmp_path / "run"
    refuse = tmp_path / "refuse-restart"
    wrapper = tmp_path / "nats-server"
    wrapper.write_text(
        f'#!/bin/sh\nif [ -e "{refuse}" ]; then echo "refusing to start" >&2; exit 3; fi\n'
        f'exec "{nats_server_binary()}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    up = start_soar_up(
        run, "--set", "bus.server_restart_timeout_s=3", env=soar_env(SOAR_NATS_SERVER=str(wrapper))
    )
    try:
        [srv] = nats_children(up)
        refuse.touch()
        srv.kill()
        rc = up.wait(120)
    finally:
        if up.poll() is None:
            up.kill()
    out = (tmp_path / "up.out").read_text()
    assert rc == 1, out[-3000:]
    assert "could not be restarted within 3 s" in out
    assert out.strip().splitlines()[-1].startswith("soar: error:")
    assert "Traceback" not in out


def test_solve_against_a_dead_address_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "solve", "--nats", f"nats://127.0.0.1:{free_port()}",
         "--tasks", "3c9b0459", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=soar_env(), cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("soar: error:")]
    assert errors == [r.stderr.strip().splitlines()[-1]] and "could not connect to NATS" in errors[0]
    assert "Traceback" not in r.stderr


def test_solve_whose_server_goes_away_gives_up_after_the_outage_timeout(tmp_path: Path) -> None:
    """An attached `solve` says what it waits for, and ends with an error once the server has
    been gone for `bus.outage_timeout_s`, instead of waiting out its whole --timeout."""
    srv = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    try:
        solve = subprocess.Popen(
            [sys.executable, "-m", "soar_async.cli", "solve", "--programs", "baseline", "--nats", srv.url,
             "--tasks", "3c9b0459",
             "--run-dir", str(tmp_path / "run"), "--timeout", "3600", "--set", "bus.outage_timeout_s=3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=soar_env(), cwd=ROOT,
        )  # fmt: skip
        assert solve.stderr is not None
        # Progress says what the pass waits for: here, an executor (none is attached).
        for line in solve.stderr:
            if "waiting for an executor to attach" in line:
                break
        srv.kill()
        _, err = solve.communicate(timeout=120)
    finally:
        srv.stop()
    assert solve.returncode == 1
    assert "no connection to NATS" in err and "bus.outage_timeout_s" in err
    assert "Traceback" not in err


def test_worker_reaches_no_server_is_one_line_and_fails_fast(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "worker", "--role", "executor", "--nats",
         f"nats://127.0.0.1:{free_port()}", "--run-dir", str(tmp_path), "--set", "bus.connect_timeout_s=0.5"],
        capture_output=True, text=True, timeout=60, env=soar_env(), cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("soar: error: could not connect to NATS")
    assert len(r.stderr.strip().splitlines()) == 1
