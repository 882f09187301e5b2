"""`soar bench learning`: three generations of the loop and a seed-trained control, end to end.

The LLM is the scripted test double, whose "trained" rules answer once any trained version
serves the requests: generation 0 (base) writes one right program among wrong, crashing and
code-less answers, every trained model (generations 1 and 2, and the control) writes right
programs half the time. So the numbers are known, and the test checks that the benchmark
reads them from the right searches: the loop's archive for the generations, the control's own
for the control (its adapter really trained on seed data of other tasks, taken up by the LLM
worker as its own version). The trainer's base model is the tiny random Qwen2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from soar_async.arc import load_tasks
from soar_async.prompts import grid_text
from tests.bus.bushelpers import ROOT, soar_env
from tests.search.scripted import IDENTITY, PROSE, SAMPLES, fenced

TASK_IDS = ["3c9b0459", "67a3c6ac"]
SELECTOR = "arc-agi-1:training#" + ",".join(TASK_IDS)
TRAINED = {
    "3c9b0459": [fenced("    return np.flip(np.array(grid)).tolist()"), IDENTITY],
    "67a3c6ac": [fenced("    return [row[::-1] for row in grid]"), PROSE],
}
KEYS = ("usable_share", "mean_train_accuracy", "right_on_train", "tasks_right_on_train", "tasks_solved", "score")


def write_script(path: Path, log: Path) -> Path:
    rules: list[dict[str, Any]] = []
    for t in load_tasks(SELECTOR):
        key = grid_text(t.train[0].input)
        rules.append({"contains": key, "trained": True, "texts": TRAINED[t.id]})
        rules.append({"contains": key, "kind": "sample", "texts": SAMPLES[t.id]})
    path.write_text(json.dumps({"rules": rules, "default": [PROSE], "log": str(log)}))
    return path


def bench(run: Path, script: Path, model: Path, *extra: str) -> str:
    args = [
        sys.executable, "-m", "soar_async.cli", "bench", "learning", "--run-dir", str(run),
        "--tasks", SELECTOR, "--samples", "4", "--seed-tasks", "2", "--seed-examples-per-task", "2",
        "--learning-rate", "0.001",
        "--set", "model.engine=double", "--set", f"model.path={script}",
        "--set", "search.completions_per_sample_request=4", "--set", "search.requests_in_flight=1",
        "--set", "sandbox.workers=1",
        "--set", f"train.base_model={model}", "--set", "train.lora_rank=4", "--set", "train.lora_alpha=8",
        "--set", "train.epochs=1", "--set", "train.effective_batch_size=2", "--set", "train.max_seq_len=4096",
        "--set", "train.save_steps=100",
        *extra,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, env=soar_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-4000:]
    return done.stdout.decode()


def results(run: Path) -> list[dict[str, Any]]:
    args = [sys.executable, "-m", "soar_async.cli", "results", "--json", "--run", str(run)]
    done = subprocess.run(args, capture_output=True, env=soar_env(), cwd=ROOT, timeout=120, check=True)
    return json.loads(done.stdout)["generations"]


@pytest.mark.slow
def test_three_generations_and_a_control(tmp_path: Path, tiny_model_dir: Path) -> None:
    log = tmp_path / "llm.jsonl"
    run = tmp_path / "run"
    script = write_script(tmp_path / "script.json", log)
    res = json.loads(bench(run, script, tiny_model_dir, "--json"))

    gens, control = res["generations"], res["control"]
    assert [g["generation"] for g in gens] == [0, 1, 2]
    for row in [*gens, control]:
        assert set(KEYS) <= set(row) and "rejected_share" in row and "tokens_per_s" in row
    assert gens[0]["model_version"] == "base"
    assert gens[1]["model_version"].startswith("g1-") and gens[2]["model_version"].startswith("g2-")
    assert control["model_version"].startswith("control-")
    assert res["settings"]["tasks"] == TASK_IDS and res["settings"]["repeats"] == 1

    # The same numbers as `soar results` on the loop's and the control's run directories.
    for rows, where in ((gens, run / "loop"), ([control], run / "control")):
        theirs = {(g["generation"], g["model_version"]): g for g in results(where)}
        for row in rows:
            other = theirs[(row["generation"], row["model_version"])]
            for k in ("usable_share", "mean_train_accuracy", "right_on_train", "tasks_right_on_train", "tokens"):
                assert row[k] == other[k], (row["generation"], k)
            assert row["tasks_solved"] == other["solved"] and row["completions"] == other["completions"] == 8

    # What the script makes each model write: base 1 usable of 8, every trained model 4 of 8.
    assert gens[0]["usable_share"] == pytest.approx(1 / 8)
    assert [g["usable_share"] for g in gens[1:]] == [pytest.approx(0.5)] * 2
    assert control["usable_share"] == pytest.approx(0.5)
    assert gens[0]["rejected_share"]["identity_like"] == pytest.approx(4 / 8)  # IDENTITY x3, rewritten
    assert gens[0]["no_code_share"] == pytest.approx(2 / 8) and gens[0]["not_runnable_share"] == pytest.approx(1 / 8)
    v = res["verdict"]
    assert v["usable_share_vs_control"]["difference"] == pytest.approx(0.0)
    assert v["usable_share_vs_control"]["beats_control"] is False
    assert v["usable_share_by_generation"]["rises_every_step"] is False  # 1 -> 2 is flat
    # Task by task: both tasks gain from 0 to 1 (beyond the noise), none from 2 to the control.
    assert set(gens[2]["per_task"]) == set(control["per_task"]) == set(TASK_IDS)
    assert [control["per_task"][t]["usable_share"] for t in TASK_IDS] == [0.5, 0.5]
    paired = v["usable_share_vs_control"]["paired"]
    assert (paired["tasks"], paired["mean_difference"], paired["beyond_noise"]) == (2, 0.0, False)
    step01, step12 = v["usable_share_by_generation"]["paired_steps"]
    assert step01["beyond_noise"] and step01["tasks_higher"] == 2 and step01["interval95"][0] > 0
    assert step12["mean_difference"] == 0.0 and not step12["beyond_noise"]

    # Each model answered under its own version; the control's adapter was trained on seed data
    # of other tasks only, with about as many tokens as generation 2's training.
    versions = {json.loads(line)["version"] for line in log.read_text().splitlines()}
    assert versions == {"base", gens[1]["model_version"], gens[2]["model_version"], control["model_version"]}
    data = control["data"]
    assert control["train"]["tokens"] == data["tokens_counted"] and data["target_tokens"] == gens[2]["train"]["tokens"]
    assert abs(data["tokens_counted"] - data["target_tokens"]) <= 0.5 * data["target_tokens"]
    seed_ids = set(res["settings"]["seed_tasks"])
    assert seed_ids and not seed_ids & set(TASK_IDS) and not set(data["tasks"]) & set(TASK_IDS)
    used = [json.loads(line) for line in (run / "control-train" / "dataset.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in used} == {"seed"} and not {e["task_id"] for e in used} & set(TASK_IDS)

    # Again on the same run directory, as a table: nothing runs again, every row is named.
    trainings = sorted(p.name for p in (run / "loop" / "train").iterdir())
    out = bench(run, script, tiny_model_dir)
    assert sorted(p.name for p in (run / "loop" / "train").iterdir()) == trainings and len(trainings) == 2
    names = [line.split()[0] + (" " + line.split()[1] if line.startswith("gen") else "") for line in out.splitlines()
             if line.startswith(("gen ", "control "))]  # fmt: skip
    assert names[:4] == ["gen 0", "gen 1", "gen 2", "control"]
    assert any(line.startswith("verdict: generation 2 vs control") for line in out.splitlines())
    assert "no spread measured" in out
    assert "paired over 2 tasks: 95% interval +0.000..+0.000, within the noise" in out

    # More repeats on the finished run: each model searched once more, with another engine
    # seed; nothing trained again, and the spread is over both searches of each model.
    again = json.loads(bench(run, script, tiny_model_dir, "--repeats", "2", "--json"))
    assert sorted(p.name for p in (run / "loop" / "train").iterdir()) == trainings
    assert sorted(p.name for p in (run / "repeats").iterdir()) == ["control-r1", "g0-r1", "g1-r1", "g2-r1"]
    assert again["settings"]["repeats"] == 2 and again["verdict"]["repeats"] == 2
    for row in [*again["generations"], again["control"]]:
        assert row["spread"]["usable_share"]["n"] == 2
    # The scripted model writes the same answers whatever the seed: no spread, the same verdict.
    assert again["control"]["spread"]["usable_share"] == {"n": 2, "min": 0.5, "max": 0.5, "mean": 0.5}
    assert again["verdict"]["usable_share_vs_control"]["beyond_spread"] is False
    assert again["verdict"]["usable_share_vs_control"]["paired"] == paired


def test_paired_over_tasks_tells_a_steady_gain_from_noise() -> None:
    from soar_async.bench.learning import paired_over_tasks, task_means

    tasks = [f"t{i:02d}" for i in range(20)]
    old = {t: 0.1 * (i % 5) for i, t in enumerate(tasks)}  # tasks differ a lot from each other
    steady = paired_over_tasks({t: v + 0.05 for t, v in old.items()}, old)
    assert steady is not None
    assert steady["mean_difference"] == pytest.approx(0.05) and steady["interval95"] == pytest.approx([0.05, 0.05])
    assert steady["beyond_noise"] and (steady["tasks_higher"], steady["tasks_lower"]) == (20, 0)

    # The same mean gain, but half the tasks up 0.3 and half down 0.2: the data cannot tell.
    mixed = paired_over_tasks({t: v + (0.3 if i % 2 else -0.2) for i, (t, v) in enumerate(old.items())}, old)
    assert mixed is not None and mixed["mean_difference"] == pytest.approx(0.05)
    lo, hi = mixed["interval95"]
    assert lo < 0 < hi and not mixed["beyond_noise"] and (mixed["tasks_higher"], mixed["tasks_lower"]) == (10, 10)
    assert paired_over_tasks(old, old) == {**steady, "mean_difference": 0.0, "interval95": [0.0, 0.0],
                                           "beyond_noise": False, "tasks_higher": 0}  # fmt: skip

    # Only the tasks both searched count; fewer than two: no interval.
    assert paired_over_tasks({"a": 1.0, "b": 0.5, "c": 0.0}, {"b": 0.0, "c": 0.5})["tasks"] == 2  # type: ignore[index]
    assert paired_over_tasks({"a": 1.0}, {"a": 0.0}) is None

    # Several searches of one model: each task's mean over them (a task without a value is left out).
    searches = [
        {"per_task": {"a": {"usable_share": 0.5}, "b": {"usable_share": None}}},
        {"per_task": {"a": {"usable_share": 0.25}, "b": {"usable_share": 1.0}}},
    ]
    assert task_means(searches, "usable_share") == {"a": 0.375, "b": 1.0}
