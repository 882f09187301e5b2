"""Chat examples as token ids for LoRA training: loss on the assistant's answer only.

Why answer-only: a relabelled example's prompt is a task the model reads, not text it should
learn to write; SOAR trains the model to answer a prompt with a program. So every label is
-100 (ignored by the loss) except the answer's tokens and the end-of-turn token that ends it,
which teaches the model to stop where the program ends.

Why two renders: the prompt the model sees when it generates is the chat template applied to
the conversation without the answer, with the generation prompt (`<|im_start|>assistant\\n`).
Rendering that prompt alone and the full conversation, and checking that the first is a prefix
of the second token by token, proves that training sees exactly the ids the served model will
see before it answers. A template that renders history differently from a fresh turn (some
insert reasoning markers, some strip them) fails loudly here instead of teaching a shifted
mask. Text after the answer's end-of-turn token (ChatML's trailing newline) is not part of any
generation and is cut off.

Examples longer than `max_seq_len` are dropped and counted, never truncated: a cut program
teaches nothing, and a prompt cut from the left would teach answers to tasks never shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
"""The label torch's cross-entropy (and every Hugging Face model) ignores."""

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
"""Special tokens that end an assistant turn in common chat templates, besides the tokenizer's
own end-of-sequence token (ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`, Phi's `<|end|>`,
Gemma's `<end_of_turn>`)."""

Message = Mapping[str, Any]


class TemplateMismatch(ValueError):
    """The chat template renders the prompt differently inside the full conversation, so the
    answer's tokens cannot be told apart from the prompt's reliably."""


class ExampleTooLong(ValueError):
    """An example has more tokens than `max_seq_len`; it is dropped, not cut."""

    def __init__(self, tokens: int, max_seq_len: int) -> None:
        super().__init__(f"example of {tokens} tokens is longer than max_seq_len {max_seq_len}")
        self.tokens = tokens
        self.max_seq_len = max_seq_len


@dataclass(frozen=True, slots=True)
class EncodedExample:
    """One training example: token ids, labels (-100 on the prompt) and attention mask, as lists
    of ints of equal length."""

    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def answer_tokens(self) -> int:
        """Tokens that carry a loss: the answer and its end-of-turn token."""
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def as_dict(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels, "attention_mask": self.attention_mask}


@dataclass(frozen=True, slots=True)
class EncodeStats:
    """What `encode_dataset` kept and dropped.

    Attributes:
      examples: Examples kept (encoded).
      dropped_too_long: Examples dropped because they are longer than max_seq_len.
      tokens: Tokens of the kept examples (prompt and answer).
      answer_tokens: Tokens of the kept examples that carry a loss.
      longest: Tokens of the longest kept example (0 when none is kept).
    """

    examples: int
    dropped_too_long: int
    tokens: int
    answer_tokens: int
    longest: int

    def as_dict(self) -> dict[str, int]:
        return {
            "examples": self.examples,
            "dropped_too_long": self.dropped_too_long,
            "tokens": self.tokens,
            "answer_tokens": self.answer_tokens,
            "longest": self.longest,
        }


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Ids that can end an assistant turn: the end-of-sequence token and the known end-of-turn
    special tokens this tokenizer has."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab and t in tokenizer.all_special_tokens)
    return ids


def _check_messages(messages: Sequence[Message]) -> None:
    if len(messages) < 2:
        raise ValueError(f"a training example needs a prompt and an answer, got {len(messages)} message(s)")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a {{'role': str, 'content': str}} mapping, got {m!r:.200}")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"the last message must be the assistant's answer, not {messages[-1]['role']!r}")


def _tokens(tokenizer: Any, text: str) -> list[int]:
    # No special tokens added: the template writes every one it wants (as vLLM renders prompts).
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_example(tokenizer: Any, messages: Sequence[Message], max_seq_len: int) -> EncodedExample:
    """Token ids and answer-only labels of one chat (`[system?, user, ..., assistant]`).

    Raises TemplateMismatch when the prompt's render is not a token prefix of the full
    conversation's, ExampleTooLong when the example exceeds `max_seq_len` tokens, ValueError on
    malformed messages.
    """
    _check_messages(messages)
    prompt_msgs = [dict(m) for m in messages[:-1]]
    full_msgs = [*prompt_msgs, dict(messages[-1])]
    prompt = _tokens(tokenizer, tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True))
    full = _tokens(tokenizer, tokenizer.apply_chat_template(full_msgs, tokenize=False))
    if full[: len(prompt)] != prompt:
        same = (a == b for a, b in zip(prompt, full, strict=False))
        at = next((i for i, ok in enumerate(same) if not ok), min(len(prompt), len(full)))
        raise TemplateMismatch(
            f"the chat template's prompt (with add_generation_prompt) is not a prefix of the full conversation: "
            f"they differ at token {at} of {len(prompt)}: prompt has {tokenizer.decode(prompt[at : at + 8])!r}, "
            f"conversation has {tokenizer.decode(full[at : at + 8])!r}"
        )
    answer = full[len(prompt) :]
    ends = end_of_turn_ids(tokenizer)
    last = max((i for i, t in enumerate(answer) if t in ends), default=None)
    if last is not None:
        answer = answer[: last + 1]  # the template's text after the end of turn is never generated
    elif tokenizer.eos_token_id is not None:
        answer = [*answer, int(tokenizer.eos_token_id)]  # the model must still learn to stop
    else:
        raise ValueError("the tokenizer has no end-of-sequence token, so the answer's end cannot be taught")
    n = len(prompt) + len(answer)
    if n > max_seq_len:
        raise ExampleTooLong(n, max_seq_len)
    return EncodedExample(
        input_ids=prompt + answer,
        labels=[IGNORE_INDEX] * len(prompt) + answer,
        attention_mask=[1] * n,
    )


def load_examples(jsonl_path: str | Path) -> list[list[dict[str, Any]]]:
    """The `messages` of every line of a chat-example JSONL file (`soar_async.relabel.write_jsonl`).

    A malformed line fails naming the file and the line number."""
    path = Path(jsonl_path)
    out: list[list[dict[str, Any]]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if not isinstance(messages, list):
                raise ValueError(f"{path}:{n}: an example must be an object with a 'messages' list")
            try:
                _check_messages(messages)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: {e}") from None
            out.append(messages)
    return out


def encode_dataset(
    tokenizer: Any, examples: Iterable[Sequence[Message] | Mapping[str, Any]], max_seq_len: int
) -> tuple[list[EncodedExample], EncodeStats]:
    """Encode every example (a message list, or a dict with "messages"); too long ones are
    dropped and counted. Any other problem (template mismatch, malformed messages) raises."""
    encoded: list[EncodedExample] = []
    dropped = 0
    for ex in examples:
        messages = ex["messages"] if isinstance(ex, Mapping) else ex
        try:
            encoded.append(encode_example(tokenizer, messages, max_seq_len))
        except ExampleTooLong:
            dropped += 1
    stats = EncodeStats(
        examples=len(encoded),
        dropped_too_long=dropped,
        tokens=sum(len(e) for e in encoded),
        answer_tokens=sum(e.answer_tokens for e in encoded),
        longest=max((len(e) for e in encoded), default=0),
    )
    return encoded, stats


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, else its end-of-sequence token (padding is masked anyway)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")


@dataclass(frozen=True, slots=True)
class PadCollator:
    """Pads a batch on the right to its longest example: pad ids in `input_ids`, 0 in the
    attention mask, -100 in the labels (padding carries no loss). Returns torch tensors.

    Right padding, because a causal LM's positions then match the unpadded example's and the
    last real token needs no special handling."""

    pad_token_id: int
    pad_to_multiple_of: int = 1

    def __call__(self, batch: Sequence[EncodedExample | Mapping[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        rows = [b.as_dict() if isinstance(b, EncodedExample) else b for b in batch]
        longest = max(len(r["input_ids"]) for r in rows)
        m = self.pad_to_multiple_of
        width = -(-longest // m) * m

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(r[key]) + [value] * (width - len(r[key])) for r in rows], dtype=torch.long)

        return {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }
