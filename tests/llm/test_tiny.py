"""The tiny random-weight model: deterministic, loads with transformers, speaks ChatML, tokenizes code."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

import pytest

from soar_async.cli import main
from soar_async.llm.tiny import CHATML_TEMPLATE, IM_END, write_tiny_model


def test_config_fits_vllm_and_qwen2(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["torch_dtype"] == "float32"
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 32
    assert config["max_position_embeddings"] == 4096
    assert (tiny_model_dir / "model.safetensors").is_file()
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert config["eos_token_id"] in generation["eos_token_id"]


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = write_tiny_model(tmp_path / "again", seed=0)
    other = write_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "generation_config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_loads_and_generates_with_transformers(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(tok)
    assert tok.eos_token == IM_END and tok.pad_token_id not in (None, tok.eos_token_id)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=True, top_k=0)
    new = out.shape[1] - enc["input_ids"].shape[1]
    assert 1 <= new <= 8


def test_chat_template_renders_chatml(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template == CHATML_TEMPLATE
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    )
    prompt = tok.apply_chat_template([{"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok.apply_chat_template([{"role": "user", "content": "U"}], add_generation_prompt=True, return_dict=True)
    assert ids["input_ids"].count(tok.convert_tokens_to_ids("<|im_start|>")) == 3


def test_tokenizer_round_trips_python_code(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    code = inspect.getsource(textwrap) + "\n\tdef f(x):  # ünïcode 中文 😀\r\n        return x\n"
    ids = tok(code, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == code
    assert raw.encode(code, add_special_tokens=False).ids == ids  # AutoTokenizer and the file agree
    assert len(ids) < len(code.encode()) / 2  # merges were learnt, not bytes only
    assert tok.tokenize("def transform(grid):")[:2] == ["def", "Ġtransform"]
    special = tok.decode(tok("<|im_start|>user\nx<|im_end|>", add_special_tokens=False)["input_ids"])
    assert special == "<|im_start|>user\nx<|im_end|>"


def test_cli_init_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "init-tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()


def test_cli_prepare_missing_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "prepare", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("soar: error: model path") and "never downloaded" in err and "Traceback" not in err
