"""ops/gpu-train-check.sh, the prepared GPU measurement of the trainer, runs here on CPU and says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from soar_async.devices import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_train_check_runs_on_cpu_and_prints_its_numbers_as_json() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [str(ROOT / "ops" / "gpu-train-check.sh"), "--examples", "4", "--batch", "2", "--grid", "4", "--rank", "16",
         "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd="/", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no CUDA device is visible" in r.stderr
    report = json.loads(r.stdout)
    assert report["cuda"] is False and report["note"].startswith("no CUDA device")
    (tiny,) = report["models"]
    assert (tiny["device"], tiny["dtype"], tiny["lora_rank"]) == ("cpu", "float32", 16)
    assert tiny["autocast"] == ("bfloat16" if cpu_has_native_bf16() else None)
    assert (tiny["examples"], tiny["steps"], tiny["dropped"]) == (4, 2, 0)
    assert tiny["tokens_per_s"] > 0 and tiny["peak_cuda_memory_gib"] is None
    assert tiny["final_loss"] < tiny["first_loss"]
