"""The presets in config/: each loads through the real loader and its engine settings fit the model.

Model facts (parameters, attention heads, native context) come from each model's config.json as
published; the memory check assumes 80 GB GPUs, as the presets say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from soar_async.cli import main as cli_main
from soar_async.config import Config, load

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
CPU_PRESETS = ("cpu-small",)
"""Presets for CPU machines and the default model; checked by their own test, not the GPU one."""
PRESETS = sorted(p for p in CONFIG.glob("*.toml") if p.name != "default.toml" and p.stem not in CPU_PRESETS)
GPU_GB = 80
BF16_BYTES = 2


@dataclass(frozen=True)
class Model:
    params_b: float
    """Parameters, in billions."""
    heads: int
    kv_heads: int
    context: int
    """The model's native context (max_position_embeddings)."""


MODELS = {
    "soar-qwen-7b": Model(7.6, 28, 4, 32768),
    "soar-qwen-14b": Model(14.7, 40, 8, 32768),
    "soar-qwen-32b": Model(32.8, 40, 8, 32768),
    "soar-qwen-72b": Model(72.7, 64, 8, 32768),
    "soar-mistral-123b": Model(122.6, 96, 8, 131072),
    "qwen2.5-coder-7b": Model(7.6, 28, 4, 32768),
    "qwen2.5-coder-14b": Model(14.7, 40, 8, 32768),
    "qwen2.5-coder-32b": Model(32.8, 40, 8, 32768),
}
"""Every preset's model. A new preset needs its line here."""

PROMPT_ROOM = 8192
"""Tokens a preset must leave for the prompt beside the longest completion: ARC prompts of the
largest tasks run to ~8-10k tokens."""


def test_every_released_model_has_a_preset_and_every_preset_a_model() -> None:
    assert {p.stem for p in PRESETS} == set(MODELS)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_fits_its_model(preset: Path) -> None:
    cfg = load(preset, environ={})  # the real loader: unknown keys, types and ranges are checked
    m, model = MODELS[preset.stem], cfg.model
    assert model.engine == "vllm" and model.dtype == "bfloat16"
    assert model.path.startswith("/models/"), "a preset names the local directory the weights live in"
    # GPU serving: adapters per request, at SOAR's rank.
    assert model.update_mode == "lora"
    assert model.max_lora_rank >= 256 and model.max_lora_rank >= cfg.train.lora_rank
    # Tensor parallelism: a power of two that splits the attention heads evenly (vLLM needs
    # both query and KV heads divisible, or KV heads replicated evenly).
    tp = model.tensor_parallel_size
    assert tp in (1, 2, 4, 8) and m.heads % tp == 0 and (m.kv_heads % tp == 0 or tp % m.kv_heads == 0)
    # Memory: the bf16 weights take at most 60% of what vLLM may use on the GPUs, the rest goes
    # to the KV cache and the LoRA slots; and half the GPUs would not do.
    usable_gb = tp * GPU_GB * model.gpu_memory_utilization
    weights_gb = m.params_b * BF16_BYTES
    assert 0.8 <= model.gpu_memory_utilization <= 0.95
    assert weights_gb <= 0.6 * usable_gb, f"{weights_gb:.0f} GB of weights on {tp} GPU(s)"
    assert tp == 1 or weights_gb > 0.6 * usable_gb / 2, f"{tp // 2} GPU(s) would do"
    # Context: the prompt of a large task plus the longest completion, within the model's own.
    longest = max(cfg.search.max_tokens_sample, cfg.search.max_tokens_refine)
    assert longest + PROMPT_ROOM <= model.max_model_len <= m.context
    # Search and training as in the paper.
    s, t = cfg.search, cfg.train
    assert (s.samples_per_task, s.refinements_per_task, s.temperature, s.min_p) == (3000, 3000, 1.0, 0.05)
    assert (t.lora_rank, t.lora_alpha, t.learning_rate, t.epochs) == (256, 32, 5e-5, 3)
    # Nothing else differs from the defaults: a preset is model and engine settings only.
    assert (cfg.vote, cfg.sandbox, cfg.bus, cfg.run) == (Config().vote, Config().sandbox, Config().bus, Config().run)


def test_config_show_reads_a_preset_and_set_still_wins(capsys: pytest.CaptureFixture[str]) -> None:
    preset = CONFIG / "soar-qwen-7b.toml"
    assert cli_main(["config", "show", "--config", str(preset), "--set", "model.path=/data/Soar-qwen-7b"]) == 0
    out = capsys.readouterr().out
    assert 'path = "/data/Soar-qwen-7b"' in out and 'dtype = "bfloat16"' in out and 'update_mode = "lora"' in out


def test_readme_lists_every_preset() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"config/([\w.-]+)\.toml", readme)) - {"default"}
    assert listed >= set(MODELS), f"presets missing from README.md: {sorted(set(MODELS) - listed)}"


def test_cpu_small_preset_trains_the_default_model_on_cpu() -> None:
    """The CPU preset: the bundled model, a small adapter at a higher learning rate, sequences that
    fit small ARC tasks within SmolLM2's 8192-token context, a small search and seeded training."""
    assert {p.stem for p in CONFIG.glob("*.toml")} >= set(CPU_PRESETS)
    cfg = load(CONFIG / "cpu-small.toml", environ={})
    t, d = cfg.train, Config().train
    assert cfg.model.path == "" and cfg.model.engine == "vllm" and cfg.model.update_mode == "auto"
    assert (t.lora_rank, t.lora_alpha, t.learning_rate, t.epochs, t.effective_batch_size) == (32, 32, 2e-4, 3, 4)
    assert t.use_rslora and t.lora_rank <= cfg.model.max_lora_rank
    assert 2048 <= t.max_seq_len <= 8192
    assert (t.device, t.dtype, t.per_device_batch_size) == ("cpu", "auto", 1)
    assert t.save_steps * t.effective_batch_size <= 32, "a killed trainer loses little"
    # The SOAR defaults are untouched by the preset.
    assert (d.lora_rank, d.lora_alpha, d.learning_rate, d.epochs) == (256, 32, 5e-5, 3)
    assert all(getattr(cfg, s) == getattr(Config(), s) for s in ("vote", "sandbox", "bus", "run"))
    # A search a 2-core machine finishes in minutes, and seeds for the first training (the base
    # model writes nothing that passes the reuse filters), from the baseline on training tasks.
    s = cfg.search
    assert s.samples_per_task + s.refinements_per_task <= 32 and max(s.max_tokens_sample, s.max_tokens_refine) <= 1024
    assert cfg.daemon.seed_programs.startswith("baseline:arc-agi-1:training")
    assert cfg.daemon.mode == "train-tasks" and cfg.daemon.generations == 0
