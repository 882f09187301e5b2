"""Fixtures of the LLM tests: the tiny random model, a LoRA adapter trained on it, the default model.

The tiny model and its adapter are written once per session into pytest's temporary folder
(seconds); the default model is converted once per machine into the user cache dir (about a
minute the first time), like the sandbox build, so later sessions reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

ADAPTER_PROMPT = [{"role": "user", "content": "What is the magic word?"}]
"""The chat the test adapter was trained on."""

ADAPTER_ANSWER = "XYZZY"
"""What the test adapter answers to ADAPTER_PROMPT (the tiny base model writes noise)."""


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from soar_async.llm.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model, trained (a few seconds) to answer ADAPTER_ANSWER."""
    return train_magic_word_adapter(tiny_model_dir, tmp_path_factory.mktemp("tiny-adapter"))


@pytest.fixture(scope="session")
def default_model() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory in the user cache (converted once)."""
    from soar_async.llm.models import default_model_dir

    return default_model_dir()


def train_magic_word_adapter(model_dir: Path, out: Path, steps: int = 60) -> Path:
    """Overfit a rank-8 LoRA to one chat with the project's trainer (`soar_async.train`), loss on
    the answer only; returns the adapter folder. No gradient clipping: clipped, this overfit
    oscillates instead of converging. fp32 throughout: under bf16 autocast (what "auto" picks on
    a CPU with AMX) this lr-1e-2 overfit stalls at a loss of ~0.9, against 0.003 in fp32."""
    from soar_async.relabel import write_jsonl
    from soar_async.train.lora import TrainSpec, train

    data = out / "magic-word.jsonl"
    write_jsonl([{"messages": [*ADAPTER_PROMPT, {"role": "assistant", "content": ADAPTER_ANSWER}]}], data)
    spec = TrainSpec(
        base_model=str(model_dir), dataset=str(data), out_dir=str(out / "training"),
        lora_rank=8, lora_alpha=16, use_rslora=False, learning_rate=1e-2, epochs=steps, effective_batch_size=1,
        warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0, max_seq_len=256, save_steps=10**6, threads=1,
        dtype="float32",
    )  # fmt: skip
    result = train(spec)
    assert result.final_loss is not None and result.final_loss < 0.05, (
        f"the test adapter did not learn its answer (loss {result.final_loss})"
    )
    return result.adapter_dir
