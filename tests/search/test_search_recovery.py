"""Killing things mid-search: nothing lost, nothing stored twice, no budget spent twice.

Real processes, killed with SIGKILL: `soar solve` (with its embedded server and actors), and
an archive worker attached to a running `soar up`. The LLM is the scripted test double,
slowed down so that the kill lands in the middle of the search.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soar_async.arc import load_tasks
from tests.bus.bushelpers import ROOT, soar_env, start_soar_up
from tests.search.scripted import EXPECTED_SCORE, TASK_IDS, write_script

SELECTOR = "arc-agi-1:training#" + ",".join(TASK_IDS)
SLOTS_PER_TASK = 4 + 8  # 16 samples at 4 per request, 16 refinements at 2 per request


def search_args(script: Path) -> list[str]:
    return [
        "--tasks", SELECTOR, "--samples", "16", "--refinements", "16",
        "--set", "model.engine=double", "--set", f"model.path={script}",
        "--set", "search.completions_per_sample_request=4", "--set", "search.completions_per_refine_request=2",
        "--set", "search.requests_in_flight=2", "--set", "search.stop_after_correct=0",
        "--set", "search.rex_islands=2", "--set", "sandbox.workers=1",
    ]  # fmt: skip


def soar(*args: str) -> list[str]:
    return [sys.executable, "-m", "soar_async.cli", *args]


def slots_done(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM slots").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the archive is creating its tables


def wait_until(cond, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc is None or proc.poll() is None, f"process exited early while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def archive_facts(run: Path) -> dict[str, object]:
    with sqlite3.connect(run / "archive.sqlite") as db:
        return {
            "slots": db.execute("SELECT task_id, kind, COUNT(*), SUM(skipped) FROM slots GROUP BY 1, 2").fetchall(),
            "programs_per_norm": db.execute(
                "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM programs GROUP BY task_id, norm)"
            ).fetchone()[0],
            "unevaluated_norms": db.execute(
                "SELECT COUNT(DISTINCT c.norm) FROM completions c WHERE c.norm IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM programs p WHERE p.task_id = c.task_id AND p.norm = c.norm)"
            ).fetchone()[0],
        }


def llm_calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_killed_solve_resumes_without_spending_budget_twice(tmp_path: Path) -> None:
    tasks = load_tasks(SELECTOR)
    log = tmp_path / "llm.jsonl"
    script = write_script(tmp_path / "script.json", tasks, log=log, delay_s=0.3)
    run = tmp_path / "run"
    out = open(tmp_path / "first.out", "wb")
    first = subprocess.Popen(
        soar("solve", "--run-dir", str(run), *search_args(script)), stdout=out, stderr=subprocess.STDOUT,
        env=soar_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(lambda: slots_done(run / "archive.sqlite") >= 10, 120, "a quarter of the slots", first)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = slots_done(run / "archive.sqlite")
    assert before < len(TASK_IDS) * SLOTS_PER_TASK, "the kill came too late to test anything"
    calls_before = llm_calls(log)

    # Without --resume the run directory is refused; with it, the search goes on.
    refused = subprocess.run(
        soar("solve", "--run-dir", str(run), *search_args(script)), capture_output=True, env=soar_env(), cwd=ROOT
    )
    assert refused.returncode != 0 and b"--resume" in refused.stderr
    done = subprocess.run(
        soar("solve", "--run-dir", str(run), "--resume", *search_args(script)),
        capture_output=True, env=soar_env(), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    resumed = json.loads((run / "report.json").read_text())
    facts = archive_facts(run)

    # An uninterrupted run of the same search, for comparison.
    log2 = tmp_path / "llm2.jsonl"
    script2 = write_script(tmp_path / "script2.json", tasks, log=log2, delay_s=0.0)
    run2 = tmp_path / "run2"
    whole = subprocess.run(
        soar("solve", "--run-dir", str(run2), *search_args(script2)),
        capture_output=True, env=soar_env(), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]
    uninterrupted = json.loads((run2 / "report.json").read_text())

    assert resumed["score"] == uninterrupted["score"] == sum(EXPECTED_SCORE.values()) / len(EXPECTED_SCORE)
    assert {t: r["score"] for t, r in resumed["per_task"].items()} == EXPECTED_SCORE
    # Every slot resolved exactly once, as in the uninterrupted run; every program stored once
    # and every proposed program evaluated.
    assert facts["slots"] == archive_facts(run2)["slots"]
    assert facts["programs_per_norm"] == 1 and facts["unevaluated_norms"] == 0
    # Budget: the model was asked once per requested slot, plus at most the requests that were
    # inside the engine when the kill came (2 per task and phase in flight).
    asked = sum(n - skipped for _t, _k, n, skipped in facts["slots"])  # type: ignore[union-attr]
    assert llm_calls(log2) == asked
    assert asked <= llm_calls(log) <= asked + 2 * 2 * len(TASK_IDS)
    assert calls_before < llm_calls(log)


@pytest.mark.slow
def test_archive_killed_mid_run_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    tasks = load_tasks(SELECTOR)
    script = write_script(tmp_path / "script.json", tasks, delay_s=0.3)
    run = tmp_path / "run"
    conf = search_args(script)[6:]  # the --set options
    up = start_soar_up(run, "--role", "executor", "--role", "llm", "--role", "proposer", "--role", "refiner", *conf)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        url = (run / "nats.url").read_text().strip()

        def archive_worker(i: int) -> subprocess.Popen[bytes]:
            out = open(tmp_path / f"archive{i}.out", "wb")
            p = subprocess.Popen(
                soar("worker", "--role", "archive", "--nats", url, "--run-dir", str(run), *conf),
                stdout=out, stderr=subprocess.STDOUT, env=soar_env(), cwd=ROOT,
            )  # fmt: skip
            workers.append(p)
            return p

        first = archive_worker(1)
        solve_out = open(tmp_path / "solve.out", "wb")
        solve = subprocess.Popen(
            soar("solve", "--nats", url, "--run-dir", str(run), *search_args(script)),
            stdout=solve_out, stderr=subprocess.STDOUT, env=soar_env(), cwd=ROOT,
        )  # fmt: skip
        wait_until(lambda: slots_done(run / "archive.sqlite") >= 10, 120, "a quarter of the slots", first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(1.0)  # events keep arriving for nobody
        archive_worker(2)
        assert solve.wait(timeout=300) == 0, (tmp_path / "solve.out").read_text()[-3000:]
        facts = archive_facts(run)
        report = json.loads((run / "report.json").read_text())
        assert report["score"] == sum(EXPECTED_SCORE.values()) / len(EXPECTED_SCORE)
        assert facts["programs_per_norm"] == 1 and facts["unevaluated_norms"] == 0
        assert sorted((t, k, n) for t, k, n, _s in facts["slots"]) == sorted(  # type: ignore[union-attr]
            (t, k, 4 if k == "sample" else 8) for t in TASK_IDS for k in ("sample", "refine")
        )
        # `soar status` follows the search: every task done, its slots all resolved.
        st = subprocess.run(
            soar("status", "--json", "--run-dir", str(run)), capture_output=True, env=soar_env(), cwd=ROOT
        )
        tasks = {t["task_id"]: t for t in json.loads(st.stdout)["tasks"]}
        for t in TASK_IDS:
            assert tasks[t]["state"] == "done" and tasks[t]["sample_resolved"] == tasks[t]["sample_slots"] == 4
        table = subprocess.run(
            soar("status", "--run-dir", str(run)), capture_output=True, text=True, env=soar_env(), cwd=ROOT
        )
        assert "sampled" in table.stdout and "8/8" in table.stdout
    finally:
        for p in [*workers, up]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*workers, up]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
