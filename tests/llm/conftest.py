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
    """Overfit a rank-8 LoRA to one chat with plain torch AdamW: loss on the answer only."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template(ADAPTER_PROMPT, add_generation_prompt=True, return_dict=True)["input_ids"]
    answer = tok(ADAPTER_ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(
            model,
            LoraConfig(
                r=8,
                lora_alpha=16,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
        opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        peft_model.train()
        for _ in range(steps):
            loss = peft_model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.05, f"the test adapter did not learn its answer (loss {loss.item():.3f})"
    peft_model.save_pretrained(out)
    return out
