"""A tiny random-weight chat model, written from scratch in a few seconds, for tests and CPU demos.

Why: nothing may be downloaded here, yet every LLM backend (transformers, vLLM, LoRA training)
needs a real Hugging Face model directory to load. `write_tiny_model` builds one from a config:
a 2-layer Qwen2 causal LM (the architecture SOAR's released models use, and one vLLM serves)
with seeded random weights, a byte-level BPE tokenizer trained on the spot by `tokenizers`, the
ChatML chat template of Qwen2 and a generation config whose end of sequence is `<|im_end|>`.
Its output is noise, but it has every moving part: chat template, special tokens, sampling,
adapters, safetensors weights.

Shapes are chosen for vLLM's CPU attention (head_dim 32 is one it supports) and kept small so
that loading and sampling take milliseconds.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, PAD)
"""In id order 0..3: the trainer gives special tokens the first ids."""

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Qwen2-Instruct's ChatML template, the format SOAR's released models were trained on."""

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's pre-tokenizer split (one digit per piece, which suits ARC grids)."""

OUTPUT_EMBEDDING_STD = 0.25
"""Initial std of the output embeddings (the LM head); see `write_tiny_model`."""

VOCAB_SIZE = 1536
"""Target BPE vocabulary (256 byte symbols, 4 special tokens, the rest merges)."""

STDLIB_MODULES = ("textwrap.py", "string.py", "functools.py", "heapq.py", "bisect.py", "copy.py")
"""Standard library sources added to the corpus so ordinary Python code tokenizes in sensible
pieces. They are read from the running interpreter, so the tokenizer (not the weights' seed
behaviour) can differ between Python versions; missing files are skipped."""

_PROGRAMS = (
    """def transform(grid: list[list[int]]) -> list[list[int]]:
    return [row[::-1] for row in grid]
""",
    """import numpy as np


def transform(grid: list[list[int]]) -> list[list[int]]:
    a = np.array(grid)
    return np.rot90(a).tolist()
""",
    """def transform(grid):
    h, w = len(grid), len(grid[0])
    out = [[0] * w for _ in range(h)]
    for r in range(h):
        for c in range(w):
            if grid[r][c] != 0:
                out[r][c] = 5
    return out
""",
    """import numpy as np


def transform(grid):
    grid = np.array(grid)
    colors, counts = np.unique(grid[grid != 0], return_counts=True)
    if len(colors) == 0:
        return grid.tolist()
    best = colors[np.argmax(counts)]
    return np.where(grid == 0, best, grid).tolist()
""",
    """def transform(grid):
    rows = [row for row in grid if any(v != 0 for v in row)]
    cols = list(zip(*rows))
    cols = [col for col in cols if any(v != 0 for v in col)]
    return [list(r) for r in zip(*cols)]
""",
    """from collections import Counter


def transform(grid):
    cnt = Counter(v for row in grid for v in row)
    color = cnt.most_common(1)[0][0]
    return [[color if v == 0 else v for v in row] for row in grid]
""",
)

_LEGEND = "0:Black; 1:Blue; 2:Red; 3:Green; 4:Yellow; 5:Grey; 6:Pink; 7:Orange; 8:Purple; 9:Brown"


def _grid_text(grid: list[list[int]]) -> str:
    """A grid printed as `str(numpy.array(grid))` prints it, without importing numpy."""
    return "[" + "\n ".join("[" + " ".join(str(v) for v in row) + "]" for row in grid) + "]"


def _arc_prompt(rng: random.Random) -> str:
    """One SOAR-shaped task prompt with random grids: the text the model will mostly read."""
    lines = [
        "You are given a puzzle with train pairs of grids. Write a Python function `transform` "
        "that takes a grid (list[list[int]]) and returns the output grid (list[list[int]]) "
        "in a ```python block.",
        f"Colours: {_LEGEND}",
    ]
    for i in range(rng.randint(2, 3)):
        for kind in ("Input", "Output"):
            h, w = rng.randint(2, 7), rng.randint(2, 7)
            grid = [[rng.choice((0, 0, 0, rng.randint(1, 9))) for _ in range(w)] for _ in range(h)]
            lines.append(f"## {kind} {i + 1} (grid shape: {h} by {w}):\n{_grid_text(grid)}")
    lines.append("## Test Input 1 (grid shape: 3 by 3):\n" + _grid_text([[0, 1, 0], [1, 0, 1], [0, 1, 0]]))
    return "\n\n".join(lines)


def corpus() -> list[str]:
    """The tokenizer's training text: ARC chats in ChatML (fixed seed), plus stdlib source.

    Independent of the model seed, so every tiny model on one Python version shares a tokenizer."""
    rng = random.Random(1234)
    texts = []
    for i in range(60):
        program = _PROGRAMS[i % len(_PROGRAMS)]
        texts.append(
            f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n"
            f"{IM_START}user\n{_arc_prompt(rng)}{IM_END}\n"
            f"{IM_START}assistant\n```python\n{program}```{IM_END}\n"
        )
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_MODULES:
        try:
            texts.append((stdlib / name).read_text(encoding="utf-8"))
        except OSError:
            continue
    return texts


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` with ChatML special tokens and chat template.

    Byte-level so any NFC text (code, grids, unicode) round-trips exactly; about 0.1 s."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Exactly Qwen2's pipeline: `AutoTokenizer` sees model_type "qwen2" and rebuilds the
    # tokenizer as `Qwen2Tokenizer` (NFC, Qwen2's split regex, byte level), so training with
    # anything else would give different ids depending on how the directory is loaded.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, ENDOFTEXT],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def write_tiny_model(dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny Qwen2 chat model (random weights from `seed`) into `dir`; returns `dir`.

    Same seed, same bytes (on one torch and Python version). The directory loads with
    `AutoModelForCausalLM` / `AutoTokenizer` and with vLLM (`Qwen2ForCausalLM`, float32)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from soar_async.llm.models import add_torch_dtype

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=pad,
        use_sliding_window=False,
        dtype="float32",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
        # The final RMSNorm caps the hidden state's norm near sqrt(hidden), so the logits can
        # only be as large as the output embeddings allow: at the usual std 0.02 no fine-tuning
        # (LoRA leaves them alone) can make a token likelier than a few percent. A larger scale
        # lets a test adapter learn a fixed answer in a few steps. Untied, because tied
        # embeddings that large make a random model repeat its last token forever.
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, OUTPUT_EMBEDDING_STD)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=pad,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
    )
    model.save_pretrained(dir)
    tokenizer.save_pretrained(dir)
    add_torch_dtype(dir / "config.json")
    return dir
