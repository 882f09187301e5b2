"""The training data: answer-only labels checked on token ids, dropping, padding, file errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from soar_async.config import load
from soar_async.train.data import (
    IGNORE_INDEX,
    EncodedExample,
    ExampleTooLong,
    PadCollator,
    TemplateMismatch,
    encode_dataset,
    encode_example,
    load_examples,
    pad_id,
)


def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def check_mask(tok: Any, messages: list[dict[str, str]], enc: EncodedExample) -> None:
    """Every prompt token (the rendered prompt with the generation header) is -100; the rest are
    the answer's own ids, decoding to its content and the end-of-turn marker, nothing after."""
    prompt_text = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
    n = len(prompt)
    assert enc.input_ids[:n] == prompt, "training must see the very ids the served model is prompted with"
    assert enc.labels[:n] == [IGNORE_INDEX] * n
    answer = enc.labels[n:]
    assert answer and IGNORE_INDEX not in answer and answer == enc.input_ids[n:]
    assert tok.decode(answer) == messages[-1]["content"] + "<|im_end|>"
    assert answer[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert enc.attention_mask == [1] * len(enc.input_ids) == [1] * len(enc.labels)


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_only_the_answer_and_its_end_of_turn_carry_a_loss(
    which: str, request: pytest.FixtureRequest, arc_examples: list[dict[str, Any]]
) -> None:
    """On both ChatML tokenizers (the tiny model's and SmolLM2's, whose default system prompts
    differ): real relabelled ARC chats, and the same with a system message of our own."""
    tok = tokenizer(request.getfixturevalue("tiny_model_dir" if which == "tiny" else "default_model"))
    chats = [ex["messages"] for ex in arc_examples]
    chats.append([{"role": "system", "content": "Be brief."}, *chats[0]])
    chats.append([{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": " hi\n\n"}])
    for messages in chats:
        enc = encode_example(tok, messages, 100_000)
        check_mask(tok, messages, enc)
    # The prompt is most of a sampling example: the answer is the fenced program alone.
    enc = encode_example(tok, chats[0], 100_000)
    assert 0 < enc.answer_tokens < len(enc) / 4


def test_the_cpu_preset_fits_relabelled_examples_of_small_tasks(
    default_model: Path, arc_examples: list[dict[str, Any]]
) -> None:
    """config/cpu-small.toml's max_seq_len holds whole SOAR examples of small tasks in SmolLM2 tokens."""
    limit = load(Path(__file__).resolve().parents[2] / "config" / "cpu-small.toml", environ={}).train.max_seq_len
    encoded, stats = encode_dataset(tokenizer(default_model), arc_examples, limit)
    assert stats.dropped_too_long == 0 and len(encoded) == len(arc_examples) and stats.longest <= limit


def test_the_cpu_preset_seeds_fit_its_max_seq_len(default_model: Path) -> None:
    """Every seed example of config/cpu-small.toml (one per seed task) reaches training whole."""
    from soar_async.learn.dataset import seed_examples

    cfg = load(Path(__file__).resolve().parents[2] / "config" / "cpu-small.toml", environ={})
    examples, _ = seed_examples(cfg.daemon.seed_programs, (), per_task=cfg.daemon.seed_examples_per_task)
    assert len(examples) >= 30
    encoded, stats = encode_dataset(tokenizer(default_model), examples, cfg.train.max_seq_len)
    assert stats.dropped_too_long == 0 and len(encoded) == len(examples), stats


def test_too_long_examples_are_dropped_and_counted_not_cut(
    tiny_model_dir: Path, arc_examples: list[dict[str, Any]]
) -> None:
    tok = tokenizer(tiny_model_dir)
    by_length = sorted(arc_examples, key=lambda ex: len(encode_example(tok, ex["messages"], 100_000)))
    lengths = [len(encode_example(tok, ex["messages"], 100_000)) for ex in by_length]
    limit = lengths[2]  # the three shortest fit (ties aside)
    with pytest.raises(ExampleTooLong, match=f"example of {lengths[-1]} tokens is longer than max_seq_len {limit}"):
        encode_example(tok, by_length[-1]["messages"], limit)
    encoded, stats = encode_dataset(tok, arc_examples, limit)
    n_fit = sum(1 for x in lengths if x <= limit)
    assert stats.examples == len(encoded) == n_fit and stats.dropped_too_long == len(arc_examples) - n_fit
    assert stats.tokens == sum(lengths[:n_fit]) and stats.longest == limit
    assert stats.answer_tokens == sum(e.answer_tokens for e in encoded)
    # Kept examples are whole: each still ends with its end-of-turn token.
    assert all(e.input_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") for e in encoded)


def test_padding_is_on_the_right_and_carries_no_loss(tiny_model_dir: Path) -> None:
    tok = tokenizer(tiny_model_dir)
    short = encode_example(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], 512)
    chat = [{"role": "user", "content": "a b c d e f"}, {"role": "assistant", "content": "gh"}]
    long = encode_example(tok, chat, 512)
    batch = PadCollator(pad_id(tok))([long, short.as_dict()])
    n, m = len(long), len(short)
    assert n > m and batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n)
    assert batch["input_ids"][0].tolist() == long.input_ids and batch["labels"][0].tolist() == long.labels
    assert batch["input_ids"][1].tolist() == short.input_ids + [tok.pad_token_id] * (n - m)
    assert batch["labels"][1].tolist() == short.labels + [IGNORE_INDEX] * (n - m)
    assert batch["attention_mask"][1].tolist() == [1] * m + [0] * (n - m)
    assert PadCollator(pad_id(tok), pad_to_multiple_of=8)([short])["input_ids"].shape[1] % 8 == 0


def test_a_template_that_renders_history_differently_fails_loudly(tiny_model_dir: Path) -> None:
    """A reasoning-style template opens the generation prompt with <think> but renders past
    assistant turns without it: the answer's tokens cannot be located, so encoding refuses."""
    tok = tokenizer(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
    )
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]
    with pytest.raises(TemplateMismatch, match="not a prefix of the full conversation"):
        encode_example(tok, messages, 512)


def test_a_template_without_an_end_marker_gets_the_eos_token(tiny_model_dir: Path) -> None:
    """The model must learn to stop even when the template writes nothing after the answer."""
    tok = tokenizer(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':\\n' + m['content'] + '\\n' if m['role'] != 'assistant' "
        "else 'assistant:\\n' + m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}"
    )
    enc = encode_example(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "yes"}], 512)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert tok.decode(answer) == "yes" + tok.eos_token and answer[-1] == tok.eos_token_id


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", r"data.jsonl:2: not JSON"),
        ('{"messages": "hi"}', r"data.jsonl:2: an example must be an object with a 'messages' list"),
        ('{"messages": [{"role": "user", "content": "q"}]}', r"data.jsonl:2: a training example needs a prompt"),
        (
            '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}',
            r"data.jsonl:2: the last message must be the assistant's answer, not 'user'",
        ),
    ],
)
def test_malformed_example_files_name_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=needle):
        load_examples(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert load_examples(path) == [good["messages"], good["messages"]]
