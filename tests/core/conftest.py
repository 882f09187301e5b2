"""Fixtures for the pure, fast tests: paths to the real ARC files in ../shared/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "arc-agi-1").is_dir():
        pytest.fail(f"ARC files expected in {SHARED} (the shared/ folder beside the checkout)")
    return SHARED
