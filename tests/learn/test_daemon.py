"""`soar daemon`: two generations with training and a hot-swap in between; killed and restarted
in every phase, it resumes in the right one without redoing finished work.

The LLM is the scripted test double (`soar_async.llm.double`), because relabelling needs
programs that pass the reuse filters, which a tiny random model never writes. Everything else
is real: NATS, the sandbox, the archive, the relabelling, a LoRA trained by the trainer's own
process on the tiny Qwen2 model, the adapter travelling through the object store to the LLM
worker (the double takes up a version only from a real PEFT directory). The double's script
answers differently once a trained version serves it, so the two generations' programs differ.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from soar_async.arc import load_tasks
from soar_async.prompts import grid_text
from tests.bus.bushelpers import ROOT, soar_env
from tests.search.scripted import IDENTITY, PROSE, REFINES, SAMPLES, fenced

TASK_IDS = ["3c9b0459", "67a3c6ac"]
SELECTOR = "arc-agi-1:training#" + ",".join(TASK_IDS)
TRAINED = {
    # What the trained model writes: the same transformations in other words (other norms,
    # so they are new programs of generation 1, archived with the new version).
    "3c9b0459": [fenced("    return np.flip(np.array(grid)).tolist()"), IDENTITY],
    "67a3c6ac": [fenced("    return [row[::-1] for row in grid]"), PROSE],
}


def write_script(path: Path, log: Path, delay_s: float = 0.0) -> Path:
    rules: list[dict[str, Any]] = []
    for t in load_tasks(SELECTOR):
        key = grid_text(t.train[0].input)
        rules.append({"contains": key, "trained": True, "texts": TRAINED[t.id]})
        if t.id in REFINES:
            rules.append({"contains": key, "kind": "refine", "texts": REFINES[t.id]})
        rules.append({"contains": key, "kind": "sample", "texts": SAMPLES[t.id]})
    path.write_text(json.dumps({"rules": rules, "default": [PROSE], "log": str(log), "delay_s": delay_s}))
    return path


def daemon_args(run: Path, script: Path, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "soar_async.cli", "daemon", "--tasks", SELECTOR, "--generations", "2",
        "--run-dir", str(run), "--quiet",
        "--set", "model.engine=double", "--set", f"model.path={script}",
        "--set", "search.samples_per_task=8", "--set", "search.refinements_per_task=4",
        "--set", "search.completions_per_sample_request=4", "--set", "search.completions_per_refine_request=2",
        "--set", "search.requests_in_flight=1", "--set", "search.stop_after_correct=0",
        "--set", "sandbox.workers=1",
        "--set", f"train.base_model={model}", "--set", "train.lora_rank=4", "--set", "train.lora_alpha=8",
        "--set", "train.epochs=2", "--set", "train.effective_batch_size=2", "--set", "train.learning_rate=0.001",
        "--set", "train.max_seq_len=4096", "--set", "train.save_steps=1",
        *extra,
    ]  # fmt: skip


def programs(run: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(run / "archive.sqlite") as db:
        return db.execute("SELECT generation, model_version, code FROM programs ORDER BY generation").fetchall()


def requests(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_until(cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the daemon exited early (rc {proc.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def log_events(run: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for f in (run / "logs").glob("*.jsonl"):
        for line in f.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == event:
                out.append(ev)
    return out


def finish(args: list[str], tmp: Path, name: str) -> str:
    done = subprocess.run(args, capture_output=True, env=soar_env(), cwd=ROOT, timeout=900)
    (tmp / f"{name}.out").write_bytes(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-4000:]
    return done.stdout.decode()


@pytest.mark.slow
def test_two_generations_train_swap_and_search_with_the_new_version(tmp_path: Path, tiny_model_dir: Path) -> None:
    log = tmp_path / "llm.jsonl"
    run = tmp_path / "run"
    out = finish(daemon_args(run, write_script(tmp_path / "script.json", log), tiny_model_dir), tmp_path, "daemon")

    # Generation 0 searched with the base model, generation 1 with the trained version: every
    # program records the version that wrote it.
    rows = programs(run)
    versions = {g: {v for gg, v, _ in rows if gg == g} for g in (0, 1)}
    assert versions[0] == {"base"}
    (new,) = versions[1]
    assert new.startswith("g1-")
    gen1 = {code for g, _, code in rows if g == 1}
    assert any("np.flip(" in c for c in gen1) and any("row[::-1]" in c for c in gen1)
    # Every request the double answered after the swap named the new version; none was
    # answered by the base model once the new version was asked for.
    seen = [r["version"] for r in requests(log)]
    assert set(seen) == {"base", new}
    assert seen.index(new) > 0 and "base" not in seen[seen.index(new) :]

    # The adapter was trained from relabelled data of generation 0 (the right programs of both
    # tasks pass the filters; the identity does not), and it is a real PEFT adapter.
    (work,) = list((run / "train").iterdir())
    dataset = [json.loads(line) for line in (work / "dataset.jsonl").read_text().splitlines()]
    answers = [e["messages"][-1]["content"] for e in dataset]
    assert any("rot90" in a for a in answers) and any("fliplr" in a for a in answers)
    assert not any(a.strip().endswith("return grid\n```") for a in answers)
    config = json.loads((work / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["use_rslora"] is True

    # The table: two generations, the second with the new model.
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [line.split()[0] for line in lines] == ["0", "1"]
    assert "base" in lines[0] and new[:14] in lines[1]
    assert len(log_events(run, "train start")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["search", "train", "swap"])
def test_killed_daemon_resumes_in_the_right_phase(tmp_path: Path, tiny_model_dir: Path, phase: str) -> None:
    """SIGKILL in generation 0's search, during training, or right after the swap; the same command
    then finishes both generations, and nothing finished runs twice."""
    log = tmp_path / "llm.jsonl"
    run = tmp_path / "run"
    args = daemon_args(run, write_script(tmp_path / "script.json", log, delay_s=0.2), tiny_model_dir)
    out = open(tmp_path / "first.out", "wb")
    first = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=soar_env(), cwd=ROOT)
    try:
        if phase == "search":
            wait_until(lambda: len(requests(log)) >= 3, 240, "the first generation's requests", first)
        elif phase == "train":
            wait_until(lambda: bool(log_events(run, "checkpoint")), 400, "a training checkpoint", first)
        else:
            wait_until(lambda: bool(log_events(run, "model swapped")), 400, "the hot-swap", first)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = requests(log)
    finish(args, tmp_path, "second")

    rows = programs(run)
    assert {v for g, v, _ in rows if g == 0} == {"base"}
    assert len({v for g, v, _ in rows if g == 1}) == 1
    # Each program once; each generation's 4 request slots per task (2 sampling, 2 refinement)
    # resolved once: the budget was not spent twice.
    with sqlite3.connect(run / "archive.sqlite") as db:
        assert db.execute("SELECT COUNT(*) = COUNT(DISTINCT task_id || norm) FROM programs").fetchone() == (1,)
        slots = db.execute("SELECT generation, COUNT(*), COUNT(DISTINCT task_id || kind || slot) FROM slots GROUP BY 1")
        assert slots.fetchall() == [(0, 8, 8), (1, 8, 8)]
    base_requests = [r for r in requests(log) if r["version"] == "base"]
    assert len(base_requests) <= 8 + 4, len(base_requests)  # only those in flight at the kill asked again
    assert len(list((run / "train").iterdir())) == 1  # one training request, whenever the kill came
    starts = log_events(run, "train start")
    if phase == "swap":
        assert len(starts) == 1  # trained before the kill; not again after it
        assert len([r for r in before if r["version"] != "base"]) == len(
            [r for r in requests(log)[: len(before)] if r["version"] != "base"]
        )
    if phase == "train":
        done = log_events(run, "train done")
        assert len(done) == 1 and done[0].get("resumed_from_step", 0) > 0, done


@pytest.mark.slow
def test_a_task_submitted_to_a_running_daemon_is_searched_and_trained_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Continual mode: the daemon starts with one task and waits for data; a task submitted with
    `soar submit` joins the running generation, its programs bring the new data to the
    threshold, training starts, and the next generation searches both tasks with the new model."""
    log = tmp_path / "llm.jsonl"
    run = tmp_path / "run"
    args = daemon_args(run, write_script(tmp_path / "script.json", log), tiny_model_dir)
    args[args.index("--tasks") + 1] = "arc-agi-1:training#3c9b0459"
    args[args.index("--generations") + 1] = "0"
    args += ["--mode", "continual", "--set", "daemon.train_after_programs=5"]
    out = open(tmp_path / "daemon.out", "wb")
    daemon = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=soar_env(), cwd=ROOT)
    try:
        wait_until(lambda: bool(log_events(run, "waiting for tasks")), 240, "the first task's search", daemon)
        assert not (run / "train").exists()  # 3 programs so far: not enough to train on
        sub = subprocess.run(
            [sys.executable, "-m", "soar_async.cli", "submit", "arc-agi-1:training#67a3c6ac", "--run-dir", str(run)],
            capture_output=True, env=soar_env(), cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert sub.returncode == 0 and b"submitted 1 task" in sub.stdout, sub.stderr.decode()[-2000:]

        def both_searched_by_the_new_model() -> bool:
            if not (run / "archive.sqlite").exists():
                return False
            return {(g, t) for g, _, t in tasks_of(run) if g == 1} == {(1, "3c9b0459"), (1, "67a3c6ac")}

        wait_until(both_searched_by_the_new_model, 400, "generation 1 on both tasks", daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(120)
    assert rc == 0, (tmp_path / "daemon.out").read_text()[-3000:]
    rows = tasks_of(run)
    assert {(g, v) for g, v, t in rows if t == "67a3c6ac"} >= {(0, "base")}
    assert len({v for g, v, _ in rows if g == 1}) == 1 and "base" not in {v for g, v, _ in rows if g == 1}
    # The training waited for the submitted task: its program is in the data.
    (work,) = list((run / "train").iterdir())
    answers = [
        json.loads(line)["messages"][-1]["content"] for line in (work / "dataset.jsonl").read_text().splitlines()
    ]
    assert any("rot90" in a for a in answers) and any("fliplr" in a for a in answers)


def tasks_of(run: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(run / "archive.sqlite", timeout=5) as db:
        return db.execute("SELECT generation, model_version, task_id FROM programs").fetchall()


@pytest.mark.slow
def test_a_training_the_trainer_gives_up_on_stops_the_daemon_with_the_reason(tmp_path: Path) -> None:
    """No model at `train.base_model`: the trainer dead-letters the request; the daemon does not
    wait forever for a model that will never come, it exits naming the reason, and its state is
    set back so that the next start (with the model fixed) trains anew."""
    log = tmp_path / "llm.jsonl"
    run = tmp_path / "run"
    missing = tmp_path / "no-such-model"
    args = daemon_args(run, write_script(tmp_path / "script.json", log), missing)
    done = subprocess.run(args, capture_output=True, env=soar_env(), cwd=ROOT, timeout=300)
    text = (done.stdout + done.stderr).decode()
    assert done.returncode != 0, text[-3000:]
    assert "gave up on training" in text and "no-such-model" in text, text[-3000:]
    assert {g for g, _, _ in programs(run)} == {0}  # generation 0 was searched and kept
