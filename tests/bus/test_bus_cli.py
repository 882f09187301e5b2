"""`soar up`, `soar status`, `soar logs`, `soar exec submit` as a user runs them, from two "terminals"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from bushelpers import ROOT, nats_children
from bushelpers import start_soar_up as start_up

from soar_async.bus.server import NatsServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_built")]

PROG = "def transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n"


def soar(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SOAR_NATS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "soar_async.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        **kw,
    )


SEARCH_ROLES = ("proposer", "refiner", "archive")


def test_up_status_submit_logs_and_clean_shutdown(tmp_path: Path) -> None:
    run = tmp_path / "run"
    up = start_up(run)
    follower: subprocess.Popen[str] | None = None
    try:
        [srv] = nats_children(up)
        prog = tmp_path / "rot180.py"
        prog.write_text(PROG)
        sel = "arc-agi-1:training#3c9b0459"

        follower = subprocess.Popen(
            [sys.executable, "-m", "soar_async.cli", "logs", "-f", "--run-dir", str(run), "--json", "-n", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert follower.stderr is not None
        # Wait for the follower to say it is subscribed: events from now on reach it.
        assert "following" in follower.stderr.readline()

        st = json.loads(soar("status", "--json", "--run-dir", str(run)).stdout)  # URL found via the run dir
        assert sorted(w["role"] for w in st["workers"]) == ["archive", "executor", "proposer", "refiner"]
        sub = soar("exec", "submit", "--run-dir", str(run), "--task", sel, "--file", str(prog), "--wait", "90")
        assert sub.returncode == 0, sub.stderr
        assert "3c9b0459" in sub.stdout and "h=1.00" in sub.stdout
        again = soar("exec", "submit", "--run-dir", str(run), "--task", sel, "--file", str(prog))
        assert again.returncode == 0

        st = json.loads(soar("status", "--json", "--run-dir", str(run)).stdout)
        [task] = st["tasks"]
        # The state is the archive's word: the task is registered (no search) and all its programs are in.
        assert task["task_id"] == "3c9b0459" and task["evaluated"] == 1 and task["state"] == "done"
        assert "executor" in st["throughput_per_s"]
        text = soar("status", "--run-dir", str(run)).stdout
        assert "executor" in text and "soar.work.exec" in text
        logs = soar("logs", "--run-dir", str(run), "-n", "500")
        assert "actor running" in logs.stdout and "sandbox pool ready" in logs.stdout
        only_exec = soar("logs", "--run-dir", str(run), "--actor", "executor", "--json", "-n", "500")
        events = [json.loads(line) for line in only_exec.stdout.splitlines()]
        assert events and {e["actor"] for e in events} == {"executor"}
        # One info event per evaluated program, with the ids the runtime bound: `soar logs --task`.
        by_task = soar("logs", "--run-dir", str(run), "--task", "3c9b0459", "--json", "-n", "50")
        assert by_task.returncode == 0, by_task.stderr
        events = [json.loads(line) for line in by_task.stdout.splitlines()]
        assert events and all(e["task_id"] == "3c9b0459" for e in events)
        [ev] = [e for e in events if e["event"] == "evaluated"]
        assert ev["program_id"] and ev["fields"]["train"] == "4/4" and "errors" not in ev["fields"]
        warn = soar("logs", "--run-dir", str(run), "--level", "warning", "--json")
        assert all(json.loads(x)["level"] in ("warning", "error", "critical") for x in warn.stdout.splitlines())
        # The search actors took the submitted program in their stride (a registered task, no search).
        search_warnings = [x for x in warn.stdout.splitlines() if json.loads(x)["actor"] in SEARCH_ROLES]
        assert not search_warnings, search_warnings

        # The executor reports its counters every progress interval (10 s): follow until one shows.
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
        reader.start()

        def progressed() -> bool:
            events = [json.loads(x) for x in list(lines) if x.startswith("{")]
            return any(e["event"] == "progress" and e["fields"].get("ok", 0) >= 1 for e in events)

        deadline = time.monotonic() + 120
        while not progressed() and time.monotonic() < deadline:
            time.sleep(0.5)
        follower.send_signal(signal.SIGINT)
        follower.wait(30)
        reader.join(10)
        assert progressed(), "".join(lines)[-2000:]
        files = list((run / "logs").glob("up-*.jsonl"))
        assert files and any('"executor"' in f.read_text() for f in files)
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()  # a follower outlives servers on purpose (it reconnects): not here
            follower.wait(10)
        up.send_signal(signal.SIGINT)
        rc = up.wait(60)
    assert rc == 0, (tmp_path / "up.out").read_text()[-3000:]
    assert not srv.is_running() or srv.status() == psutil.STATUS_ZOMBIE
    assert not (run / "nats.url").exists()
    console = (tmp_path / "up.out").read_text()
    assert "actor stopped" in console
    # Per-program events go to the files and the bus, not to `up`'s console.
    assert '"event": "evaluated"' in "".join(f.read_text() for f in (run / "logs").glob("up-*.jsonl"))
    assert not [line for line in console.splitlines() if "] evaluated " in line], console[-2000:]


def test_submit_wait_says_it_timed_out(tmp_path: Path, nats_server: NatsServer) -> None:
    prog = tmp_path / "rot180.py"
    prog.write_text(PROG)
    r = soar(
        "exec", "submit", "--nats", nats_server.url, "--run-dir", str(tmp_path / "run"),
        "--task", "arc-agi-1:training#3c9b0459", "--file", str(prog), "--wait", "1",
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert "soar exec submit: timed out after 1 s with 0 of 1 result(s)" in r.stderr, r.stderr


def test_up_killed_leaves_no_orphan_server(tmp_path: Path) -> None:
    run = tmp_path / "run"
    up = start_up(run)
    [srv] = nats_children(up)
    up.kill()
    up.wait(10)
    srv.wait(15)  # PR_SET_PDEATHSIG: the kernel stops the server with its parent
    assert not srv.is_running()


def test_worker_without_server_fails_in_one_line(tmp_path: Path) -> None:
    from soar_async.bus.server import free_port

    r = soar(
        "worker",
        "--role",
        "executor",
        "--nats",
        f"nats://127.0.0.1:{free_port()}",
        "--run-dir",
        str(tmp_path),
        timeout=60,
    )
    assert r.returncode == 1 and r.stderr.startswith("soar: error: could not connect to NATS")
    r = soar("status", "--run-dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no NATS server given" in r.stderr
    r = soar("worker", "--role", "nope", "--nats", "nats://127.0.0.1:1", "--run-dir", str(tmp_path))
    assert r.returncode == 1 and "unknown role 'nope'" in r.stderr
