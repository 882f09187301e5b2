"""The trainer in its own process: killed, it resumes from its checkpoint to the run it would have
been; cancelled, it is gone; failing, it says why; orphaned, it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from soar_async.train.lora import TrainResult, TrainSpec, train
from soar_async.train.process import TrainingFailed, run_training, worker_command

KNOBS: dict[str, Any] = dict(
    lora_rank=8,
    lora_alpha=16,
    learning_rate=2e-3,
    epochs=8,
    effective_batch_size=1,
    max_seq_len=1024,
    save_steps=3,
    threads=1,
)
"""7 examples, one per step, 8 epochs: 56 steps (two or three seconds), a checkpoint every 3."""


def spec_for(tiny_model_dir: Path, arc_jsonl: Path, out: Path, **kw: Any) -> TrainSpec:
    return TrainSpec(base_model=str(tiny_model_dir), dataset=str(arc_jsonl), out_dir=str(out), **{**KNOBS, **kw})


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_killed_training_resumes_from_its_checkpoint(tiny_model_dir: Path, arc_jsonl: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_model_dir, arc_jsonl, tmp_path / "killed")
    seen: list[dict[str, Any]] = []

    def kill_at_first_checkpoint(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["event"] == "checkpoint" and event["step"] == 3:
            os.kill(seen[0]["pid"], signal.SIGKILL)  # events already in the pipe may still be read

    with pytest.raises(TrainingFailed, match="killed by signal 9") as info:
        anyio.run(run_training, spec, kill_at_first_checkpoint)
    assert info.value.returncode == -signal.SIGKILL
    assert seen[0]["event"] == "train_process" and gone(seen[0]["pid"])
    assert next(e["step"] for e in seen if e["event"] == "checkpoint") == 3
    assert not spec.adapter_dir.exists() and spec.checkpoints_dir.is_dir()
    # A checkpoint cut short (killed while writing it: no trainer state yet) is passed over.
    partial = spec.checkpoints_dir / "checkpoint-999"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 100)

    events: list[dict[str, Any]] = []

    async def collect(event: dict[str, Any]) -> None:  # an async handler works too
        events.append(event)

    resumed = anyio.run(run_training, spec, collect)
    start = next(e for e in events if e["event"] == "train_start")
    assert start["step"] == start["resumed_from_step"] == resumed.resumed_from_step
    assert 3 <= resumed.resumed_from_step < 56 and resumed.resumed_from_step % 3 == 0
    assert not spec.checkpoints_dir.exists(), "checkpoints, the partial one too, go once the adapter is there"
    assert next(e["step"] for e in events if e["event"] == "train_progress") == resumed.resumed_from_step + 1
    assert events[-1]["event"] == "train_done" and TrainResult.from_dict(events[-1]) == resumed

    # The same run as one never interrupted: same steps, same losses, same weights.
    whole = train(replace(spec, out_dir=str(tmp_path / "whole")))
    print(f"resumed from step {resumed.resumed_from_step}: {resumed}\nuninterrupted: {whole}")
    assert resumed.steps == whole.steps == 56 and whole.resumed_from_step == 0
    assert resumed.first_loss == pytest.approx(whole.first_loss, rel=1e-6)
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-4)
    from safetensors.torch import load_file

    a = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    b = load_file(whole.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)

    # Asked again (a redelivered request): the finished adapter, no training, no process needed.
    again = train(spec)
    assert again.reused and again.steps == 56 and again.adapter_dir == resumed.adapter_dir


def test_cancelling_run_training_kills_the_trainer(tiny_model_dir: Path, arc_jsonl: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_model_dir, arc_jsonl, tmp_path / "cancelled", epochs=100)  # far longer than the test
    pids: list[int] = []
    cancelled_at: list[float] = []

    async def main() -> None:
        with anyio.CancelScope() as scope:

            def on_event(event: dict[str, Any]) -> None:
                if event["event"] == "train_process":
                    pids.append(event["pid"])
                elif event["event"] == "train_progress" and not cancelled_at:
                    cancelled_at.append(time.monotonic())
                    scope.cancel()

            await run_training(spec, on_event)
        assert scope.cancelled_caught

    anyio.run(main)
    assert cancelled_at, "the trainer reported progress before it was cancelled"
    took = time.monotonic() - cancelled_at[0]
    assert gone(pids[0]), "the trainer process is still there"
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)  # nothing left in its process group either
    assert took < 5.0, f"cancelling took {took:.1f} s (SIGTERM should do, not the SIGKILL after 5 s)"
    assert not spec.adapter_dir.exists()


def test_a_failing_trainer_raises_with_its_error_and_stderr(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_model_dir, tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(TrainingFailed, match=r"failed \(exit status 1\): FileNotFoundError: .*missing.jsonl") as info:
        anyio.run(run_training, spec)
    assert info.value.returncode == 1 and "Traceback" in info.value.stderr_tail


def test_an_orphaned_trainer_stops_when_its_parent_goes(tiny_model_dir: Path, arc_jsonl: Path, tmp_path: Path) -> None:
    """The parent's end of the stdin pipe closing (the parent died) ends the trainer at once."""
    spec = spec_for(tiny_model_dir, arc_jsonl, tmp_path / "orphan", epochs=100)
    request = tmp_path / "spec.json"
    request.write_text(spec.to_json())
    child = subprocess.Popen(
        worker_command(request, python=sys.executable),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        for line in child.stdout:
            if '"train_progress"' in line:
                break
        child.stdin.close()
        assert child.wait(timeout=10) == 3
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
