"""LoRA fine-tuning on hindsight-relabelled chat examples (SOAR's training step).

- `data`: chat examples -> token ids with the loss on the assistant's answer only.
- `lora`: `TrainSpec`, `train` (resumable, idempotent), `dataset_loss`, `merge_adapter`.
- `process`: `run_training`, the same training in a child process for async callers.
- `worker`: that child (`python -m soar_async.train.worker SPEC.json`).
- `check`: a quick speed and memory measurement (`ops/gpu-train-check.sh`).

Importing this package is cheap: torch, transformers and peft load only when training starts.
"""

from __future__ import annotations

from soar_async.train.lora import TrainingError, TrainResult, TrainSpec, dataset_loss, merge_adapter, train
from soar_async.train.process import TrainingFailed, run_training

__all__ = [
    "TrainResult",
    "TrainSpec",
    "TrainingError",
    "TrainingFailed",
    "dataset_loss",
    "merge_adapter",
    "run_training",
    "train",
]
