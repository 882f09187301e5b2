"""The LoRA trainer in-process: it learns (real losses), its settings reach the adapter, a finished
training is not repeated, an out_dir is never shared by two specs, and merging keeps the model."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from soar_async.config import ConfigError, TrainConfig
from soar_async.train.lora import (
    RESULT_FILE,
    TrainingError,
    TrainResult,
    TrainSpec,
    dataset_loss,
    merge_adapter,
    train,
)

KNOBS: dict[str, Any] = dict(
    lora_rank=8,
    lora_alpha=16,
    use_rslora=True,
    learning_rate=5e-3,
    epochs=3,
    effective_batch_size=2,
    warmup_ratio=0.0,
    lr_scheduler="constant",
    max_seq_len=1024,
    save_steps=2,
    threads=1,
)
"""Small and fast on the tiny model: 7 examples of ~500-650 tokens, 12 optimiser steps."""

TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@dataclass
class Trained:
    spec: TrainSpec
    result: TrainResult
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, arc_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    spec = TrainSpec(
        base_model=str(tiny_model_dir), dataset=str(arc_jsonl), out_dir=str(tmp_path_factory.mktemp("lora")), **KNOBS
    )
    events: list[dict[str, Any]] = []
    return Trained(spec, train(spec, events.append), events)


def test_training_lowers_the_answer_loss_and_reports_every_step(trained: Trained, tiny_model_dir: Path) -> None:
    spec, result, events = trained.spec, trained.result, trained.events
    base = dataset_loss(tiny_model_dir, None, spec.dataset, spec.max_seq_len)
    tuned = dataset_loss(tiny_model_dir, result.adapter_dir, spec.dataset, spec.max_seq_len)
    print(f"answer-token loss on the training data: base {base:.3f}, adapter {tuned:.3f}; {result}")
    assert base > 5.0, "the random tiny model knows nothing of these programs"
    assert tuned < base - 3.0 and tuned < 3.0
    # 7 examples, 2 per step: 4 steps per epoch, 3 epochs.
    assert (result.examples, result.dropped, result.steps, result.resumed_from_step) == (7, 0, 12, 0)
    assert result.first_loss is not None and abs(result.first_loss - base) < 1.0  # LoRA starts as the identity
    assert result.final_loss is not None and result.final_loss < result.first_loss - 3.0
    assert result.tokens > result.answer_tokens > 0 and result.tokens_per_s > 0 and not result.reused
    # Events: start, one progress per optimiser step, a checkpoint every save_steps, done.
    kinds = [e["event"] for e in events]
    assert kinds[0] == "train_start" and kinds[-1] == "train_done" and kinds.count("train_done") == 1
    start = events[0]
    assert (start["steps"], start["examples"], start["grad_accum"], start["device"]) == (12, 7, 2, "cpu")
    progress = [e for e in events if e["event"] == "train_progress"]
    assert [e["step"] for e in progress] == list(range(1, 13))
    assert all(math.isfinite(e["loss"]) and e["lr"] == pytest.approx(5e-3) for e in progress)
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4, 6, 8, 10, 12]
    assert TrainResult.from_dict(events[-1]) == result
    # The folder: the adapter with its result; the checkpoints are gone once it is there.
    stored = json.loads((result.adapter_dir / RESULT_FILE).read_text())
    assert TrainResult.from_dict(stored) == result
    assert not spec.checkpoints_dir.exists()
    assert not [p for p in Path(spec.out_dir).iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_lora_settings_reach_the_saved_adapter(trained: Trained, tiny_model_dir: Path) -> None:
    config = json.loads((trained.result.adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (8, 16, True)
    assert set(config["target_modules"]) == TARGETS and config["task_type"] == "CAUSAL_LM"
    assert config["lora_dropout"] == 0.0 and config["bias"] == "none"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), trained.result.adapter_dir)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(16 / math.sqrt(8))  # rsLoRA: alpha / sqrt(r), not alpha / r
    assert sum("lora_" in name for name, _ in model.named_parameters()) == 2 * len(TARGETS) * 2  # A, B x 7 x 2 layers


def test_a_finished_training_is_returned_without_training_again(trained: Trained) -> None:
    adapter = trained.result.adapter_dir / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    again = train(trained.spec, events.append)
    assert time.monotonic() - t0 < 2.0
    assert again == replace(trained.result, reused=True)
    assert [e["event"] for e in events] == ["train_done"] and events[0]["reused"] is True
    assert adapter.stat().st_mtime_ns == mtime


def test_an_out_dir_belongs_to_one_spec_and_one_dataset(trained: Trained, tiny_model_dir: Path, tmp_path: Path) -> None:
    other = replace(trained.spec, learning_rate=1e-3)
    with pytest.raises(TrainingError, match=r"holds a training of another spec .*learning_rate"):
        train(other)
    # How it runs may change (a resumed training on another machine); what it learns may not.
    assert train(replace(trained.spec, threads=2, save_steps=7, device="cpu")).reused

    data = tmp_path / "data.jsonl"
    shutil.copy(trained.spec.dataset, data)
    spec = replace(trained.spec, dataset=str(data), out_dir=str(tmp_path / "out"), max_seq_len=64)
    with pytest.raises(TrainingError, match=r"none of the 7 examples .* fits in max_seq_len 64 tokens"):
        train(spec)
    data.write_text(data.read_text().splitlines()[0] + "\n")
    with pytest.raises(TrainingError, match="holds a training on other data"):
        train(spec)


def test_spec_round_trips_through_json_and_is_checked_like_the_config(tmp_path: Path) -> None:
    spec = TrainSpec(base_model="/m", dataset="/d.jsonl", out_dir=tmp_path, **KNOBS)  # type: ignore[arg-type]
    assert spec.out_dir == str(tmp_path)
    assert TrainSpec.from_json(spec.to_json()) == spec
    assert isinstance(TrainSpec.from_json(spec.to_json()).target_modules, tuple)
    assert spec.adapter_dir == tmp_path / "adapter" and spec.checkpoints_dir == tmp_path / "checkpoints"

    cfg = TrainConfig(lora_rank=32, learning_rate=2e-4, effective_batch_size=4, save_steps=5)
    from_cfg = TrainSpec.from_config(cfg, base_model="/m", dataset="/d", out_dir="/o", threads=2)
    assert (from_cfg.lora_rank, from_cfg.learning_rate, from_cfg.save_steps, from_cfg.threads) == (32, 2e-4, 5, 2)
    assert from_cfg.use_rslora and from_cfg.lr_scheduler == "cosine"  # SOAR's defaults stay
    # Every training knob of the config is a spec field, and the defaults agree.
    defaults = TrainSpec(base_model="/m", dataset="/d", out_dir="/o")
    assert TrainSpec.from_config(TrainConfig(), base_model="/m", dataset="/d", out_dir="/o") == defaults

    with pytest.raises(ConfigError, match=r"train.lora_rank must be at least 1, got 0"):
        replace(spec, lora_rank=0)
    with pytest.raises(ConfigError, match=r"train.per_device_batch_size must be a divisor of"):
        replace(spec, effective_batch_size=4, per_device_batch_size=3)
    with pytest.raises(ConfigError, match=r"train.lr_scheduler must be one of"):
        replace(spec, lr_scheduler="warmup_stable_decay")
    with pytest.raises(ConfigError, match=r"train.device must be one of auto, cpu, cuda, got 'tpu'"):
        replace(spec, device="tpu")
    with pytest.raises(ValueError, match=r"base_model must be a non-empty path"):
        replace(spec, base_model="")
    with pytest.raises(ValueError, match=r"unknown key\(s\) lora_rnak"):
        TrainSpec.from_dict({**spec.to_dict(), "lora_rnak": 4})


def test_merged_model_computes_what_the_adapter_does(trained: Trained, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = merge_adapter(tiny_model_dir, trained.result.adapter_dir, tmp_path / "merged")
    assert merge_adapter(tiny_model_dir, trained.result.adapter_dir, merged_dir) == merged_dir  # done: kept
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template and tok.get_vocab() == AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
    ids = torch.tensor([tok("def transform(grid):\n    return grid[::-1]")["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapter = trained.result.adapter_dir
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        want, got, plain = adapted.eval()(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(plain, want, atol=1e-2), "the adapter changes the model"


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_cpu_training_computes_in_bf16_only_on_auto_where_the_cores_have_it(
    dtype: str, tiny_model_dir: Path, arc_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU "auto" keeps fp32 weights and autocasts the products to bf16 exactly where the
    cores do bf16 natively; "float32" never does. Seen from inside: the dtype every Linear
    layer's output had during the training's forward passes."""
    import torch

    from soar_async.devices import cpu_has_native_bf16

    seen: set[torch.dtype] = set()
    forward = torch.nn.Linear.forward

    def spying(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        out = forward(self, x)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", spying)
    two = tmp_path / "two.jsonl"
    two.write_text("".join(arc_jsonl.read_text().splitlines(keepends=True)[:2]))
    knobs = {**KNOBS, "epochs": 1, "save_steps": 100}
    out = str(tmp_path / "out")
    spec = TrainSpec(base_model=str(tiny_model_dir), dataset=str(two), out_dir=out, dtype=dtype, **knobs)
    events: list[dict[str, Any]] = []
    train(spec, events.append)

    bf16 = dtype == "auto" and cpu_has_native_bf16()
    assert seen == {torch.bfloat16 if bf16 else torch.float32}
    start = next(e for e in events if e["event"] == "train_start")
    assert (start["dtype"], start["autocast"]) == ("float32", "bfloat16" if bf16 else None)
