"""A quick measurement of the LoRA trainer on one machine: a few optimiser steps per model, as JSON.

`python -m soar_async.train.check [MODEL_DIR ...]` (or `ops/gpu-train-check.sh`) writes the tiny
random Qwen2 model (`soar_async.llm.tiny`) into a temporary folder, trains a LoRA on it for a few
steps on synthetic ARC-shaped chat examples, does the same for every model folder given, and
prints one JSON object: per model the device and dtype, steps, tokens/s of the training loop,
the first and last loss and the peak CUDA memory (`torch.cuda.max_memory_allocated`, null on CPU).

Why synthetic examples: the check must run where only torch, transformers and peft are installed
(a GPU machine without the project's other dependencies, such as the bundled ARC data), and its
examples must be as long as real ones (SOAR's prompts print every grid), which random grids of
a chosen size are. The answer is a fixed program, so the loss must fall within the few steps.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soar_async.config import DTYPES
from soar_async.train.lora import TrainSpec, train

PROGRAM = "```python\ndef transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n```"
"""Every example's answer: rotate by 180 degrees, which is also what the example's outputs show."""


def synthetic_examples(n: int, *, grid: int, pairs: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` sampling-prompt chats on random `grid` x `grid` tasks of `pairs` train pairs, each
    answered by PROGRAM (whose outputs the tasks show)."""
    from soar_async.arc import Pair, Task
    from soar_async.prompts import sampling_messages

    rng = random.Random(seed)

    def rot(g: list[list[int]]) -> list[list[int]]:
        return [row[::-1] for row in g[::-1]]

    def random_grid() -> list[list[int]]:
        return [[rng.choice((0, 0, 0, rng.randint(1, 9))) for _ in range(grid)] for _ in range(grid)]

    out = []
    for i in range(n):
        train_pairs = tuple(Pair(g, rot(g)) for g in (random_grid() for _ in range(pairs)))
        task = Task(id=f"synthetic{i:04d}", train=train_pairs, test=(Pair(random_grid()),))
        out.append({"messages": [*sampling_messages(task), {"role": "assistant", "content": PROGRAM}]})
    return out


def measure(model_dir: Path, dataset: Path, work: Path, ns: argparse.Namespace) -> dict[str, Any]:
    """Train a few steps on `model_dir` and report speed, memory and losses."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    spec = TrainSpec(
        base_model=str(model_dir),
        dataset=str(dataset),
        out_dir=str(work),
        lora_rank=ns.rank,
        lora_alpha=32,
        learning_rate=ns.lr,
        epochs=1,
        effective_batch_size=ns.batch,
        per_device_batch_size=ns.batch,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        max_seq_len=ns.max_seq_len,
        gradient_checkpointing=ns.gradient_checkpointing,
        save_steps=10**6,
        threads=ns.threads,
        dtype=ns.dtype,
    )
    start: dict[str, Any] = {}

    def on_event(e: dict[str, Any]) -> None:
        if e["event"] == "train_start":
            start.update(e)
        elif e["event"] == "train_progress" and ns.verbose:
            print(json.dumps(e), file=sys.stderr, flush=True)

    t0 = time.monotonic()
    result = train(spec, on_event)
    return {
        "model": str(model_dir),
        "device": start.get("device"),
        "dtype": start.get("dtype"),
        "autocast": start.get("autocast"),
        "gradient_checkpointing": ns.gradient_checkpointing,
        "lora_rank": ns.rank,
        "trainable_params": start.get("trainable_params"),
        "examples": result.examples,
        "dropped": result.dropped,
        "longest": start.get("longest"),
        "batch": ns.batch,
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_s": result.tokens_per_s,
        "seconds": round(time.monotonic() - t0, 2),
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "peak_cuda_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soar_async.train.check", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", type=Path, help="Hugging Face model folders to measure after the tiny one")
    parser.add_argument("--examples", type=int, default=8, help="synthetic examples (one epoch over them)")
    parser.add_argument("--batch", type=int, default=2, help="examples per optimiser step (no accumulation)")
    parser.add_argument("--grid", type=int, default=10, help="side of the random grids")
    parser.add_argument("--pairs", type=int, default=3, help="train pairs per synthetic task")
    parser.add_argument("--rank", type=int, default=256, help="LoRA rank (SOAR's 256)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-seq-len", type=int, default=8192)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="train.dtype (auto: see the config reference)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: every core)")
    parser.add_argument("--verbose", action="store_true", help="every step's event on stderr")
    ns = parser.parse_args(argv)

    import torch

    from soar_async.llm.tiny import write_tiny_model

    report: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "models": [],
    }
    if not report["cuda"]:
        report["note"] = "no CUDA device is visible: measured on CPU"
        print("soar: no CUDA device is visible; the check runs on CPU", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="soar-train-check-") as tmp:
        work = Path(tmp)
        dataset = work / "data.jsonl"
        with dataset.open("w") as f:
            for ex in synthetic_examples(ns.examples, grid=ns.grid, pairs=ns.pairs):
                f.write(json.dumps(ex) + "\n")
        models = [write_tiny_model(work / "tiny-model"), *ns.models]
        for i, model in enumerate(models):
            try:
                report["models"].append(measure(model, dataset, work / f"run{i}", ns))
            except Exception as e:  # one model failing must not hide the others' numbers
                report["models"].append({"model": str(model), "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(report, indent=2))
    return 0 if all("error" not in m for m in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
