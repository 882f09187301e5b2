"""Fixtures of the trainer tests: the tiny random model, the default model, relabelled ARC examples.

The tiny model is written once per session (seconds); the default model (SmolLM2-135M-Instruct)
is converted once per machine into the user cache, like in tests/llm. The examples are SOAR's
own training data: hand-written programs for two small ARC-AGI-1 training tasks, judged natively
and turned into relabelled sampling chats by `soar_async.relabel.sampling_data`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

PROGRAMS = {
    # 6150a2bd: rotate the grid by 180 degrees (3x3 grids: ~500-token prompts on the tiny tokenizer).
    "6150a2bd": (
        "def transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n",
        "def transform(grid):\n    return [row[::-1] for row in grid]\n",
        "def transform(grid):\n    return grid[::-1]\n",
        "def transform(grid):\n    return [list(r) for r in zip(*grid)]\n",
    ),
    # 0d3d703e: a fixed colour map.
    "0d3d703e": (
        "def transform(grid):\n    m = {1: 5, 5: 1, 2: 6, 6: 2, 3: 4, 4: 3, 8: 9, 9: 8}\n"
        "    return [[m.get(v, v) for v in row] for row in grid]\n",
        "def transform(grid):\n    return [[(v + 4) % 10 for v in row] for row in grid]\n",
        "def transform(grid):\n    return [[v + 1 if v < 9 else 0 for v in row] for row in grid]\n",
    ),
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from soar_async.llm.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def default_model() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory in the user cache (converted once)."""
    from soar_async.llm.models import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def arc_examples() -> list[dict[str, Any]]:
    """Relabelled sampling examples (chat dicts with "messages") of two small ARC tasks."""
    from soar_async.arc import find_task
    from soar_async.records import evaluate_native
    from soar_async.relabel import sampling_data

    examples: list[dict[str, Any]] = []
    for task_id, programs in PROGRAMS.items():
        task = find_task(task_id)
        records = [evaluate_native(task, code) for code in programs]
        examples.extend(sampling_data(task, records, n=len(records), seed=0))
    return examples


@pytest.fixture(scope="session")
def arc_jsonl(arc_examples: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from soar_async.relabel import write_jsonl

    path = tmp_path_factory.mktemp("data") / "examples.jsonl"
    write_jsonl(arc_examples, path)
    return path
