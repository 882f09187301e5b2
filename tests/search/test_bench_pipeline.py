"""`soar bench pipeline`: distinct programs for the LLM test double, and a tiny run end to end.

No wall-clock thresholds: the run asserts that every program went through the pipeline and
that the reported numbers agree with each other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soar_async.bench.pipeline import Workload, completion, programs, workload, write_script
from soar_async.prompts import extract_code, grid_text, sampling_messages
from soar_async.search.plan import norm_key

ROOT = Path(__file__).resolve().parents[2]


def test_programs_are_distinct_beyond_the_corpus() -> None:
    codes = programs(450, offset=3)
    assert len({norm_key(c) for c in codes}) == 450
    # Each one survives the proposer's extraction unchanged in meaning (same norm).
    extracted = [extract_code(completion(c)) for c in codes[:5] + codes[-5:]]
    assert all(e is not None for e in extracted)
    assert [norm_key(e or "") for e in extracted] == [norm_key(c) for c in codes[:5] + codes[-5:]]
    assert "_variant = 2" in codes[-1]


def test_workload_and_script(tmp_path: Path) -> None:
    wl = workload(3, 7)
    assert isinstance(wl, Workload) and len(wl.tasks) == 3 and len(wl.jobs) == 21
    assert all(len(wl.completions[t.id]) == 7 for t in wl.tasks)
    script = json.loads(write_script(tmp_path / "s.json", wl).read_text())
    assert [r["contains"] for r in script["rules"]] == [grid_text(t.train[0].input) for t in wl.tasks]
    # Every task's sampling prompt is matched by its own rule only.
    for t in wl.tasks:
        prompt = "\n".join(m["content"] for m in sampling_messages(t))
        hits = [i for i, r in enumerate(script["rules"]) if r["contains"] in prompt]
        assert hits == [wl.tasks.index(t)]
    # The pool runs exactly the code the proposer will extract, on the task's inputs.
    first = wl.tasks[0]
    assert wl.jobs[0] == (extract_code(wl.completions[first.id][0]), first.inputs())


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox_built")
def test_bench_pipeline_tiny_json() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "bench", "pipeline", "--json", "--tasks", "2",
         "--programs-per-task", "6", "--executors", "1,2", "--completions-per-request", "3"],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    for k in ("pipeline_programs_per_s", "pool_programs_per_s", "ratio", "scaling", "speedup", "timing"):
        assert k in r
    assert r["programs"] == 12 and r["executors"] == [1, 2] and r["exec_batch"] == 16
    assert set(r["scaling"]) == {"1", "2"}
    for w, s in r["scaling"].items():
        pipe, pool = s["pipeline"], s["pool"]
        assert pipe["executor_workers"] == int(w)
        assert pipe["programs"] == pipe["programs_reported"] == pool["programs"] == 12
        assert pipe["completions"] == pipe["distinct_programs_written"] == 12
        assert pipe["slots"] == 2 * 2  # 6 samples at 3 per request, per task
        assert pipe["unfinished"] == []
        assert pipe["programs_per_s"] > 0 and pool["programs_per_s"] > 0
        assert math.isclose(pipe["programs_per_s"], pipe["programs"] / pipe["seconds"])
        assert math.isclose(s["ratio"], s["pipeline_programs_per_s"] / s["pool_programs_per_s"])
        assert s["pipeline_programs_per_s"] == pipe["programs_per_s"]
        assert pipe["search_wall_s"] >= pipe["seconds"]
        cpu_pipe, cpu_pool = sum(pipe["cpu_ms_per_program"].values()), sum(pool["cpu_ms_per_program"].values())
        assert cpu_pipe > 0 and math.isclose(s["cpu_ratio"], cpu_pool / cpu_pipe)
        assert pipe["cpu_ms_per_program"]["nats_server"] > 0  # the server was found and read while it ran
        assert s["rounds"]["pipeline_programs_per_s"] == [pipe["programs_per_s"]]
        # CPU in the timed windows, when they were long enough to be sampled (a 12-program run may
        # not be): the same parts, the machine's idle share a fraction, the ratio of their sums.
        for side in (pipe, pool):
            win = side["window"]
            if win is not None:
                assert win["sampled_s"] > 0 and 0.0 <= win["machine_idle"] <= 1.0
                assert set(win["cpu_ms_per_program"]) == {"process", "nats_server", "sandbox_workers"}
                assert all(v >= 0 for v in win["cpu_ms_per_program"].values())
        if pipe["window"] is not None:
            assert pipe["window"]["event_loop_ms_per_program"] >= 0  # the main thread: the actors' event loop
        if pipe["window"] is not None and pool["window"] is not None:
            a = sum(pool["window"]["cpu_ms_per_program"].values())
            assert math.isclose(s["window_cpu_ratio"], a / sum(pipe["window"]["cpu_ms_per_program"].values()))
        else:
            assert s["window_cpu_ratio"] is None
    top = r["scaling"]["2"]
    assert r["pipeline_programs_per_s"] == top["pipeline_programs_per_s"]
    assert r["pool_programs_per_s"] == top["pool_programs_per_s"]
    assert math.isclose(r["ratio"], r["pipeline_programs_per_s"] / r["pool_programs_per_s"])
    lo = r["scaling"]["1"]
    assert math.isclose(r["speedup"]["pipeline"], top["pipeline_programs_per_s"] / lo["pipeline_programs_per_s"])
    assert r["meets_goal"] == all(s["ratio"] >= r["goal"] for s in r["scaling"].values())
