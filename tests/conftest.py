"""Fixtures every test folder shares: the ARC files in ../shared/ and the built sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ARC Prize files in the shared/ folder beside the checkout (CI lays a copy there)."""
    path = Path(os.environ.get("SOAR_SHARED_DIR", ROOT.parent / "shared"))
    if not (path / "arc-agi-1").is_dir():
        pytest.fail(f"ARC files expected in {path} (set SOAR_SHARED_DIR to their folder)")
    return path


@pytest.fixture(scope="session")
def sandbox_built() -> Path:
    """Build (first time on a machine: about two minutes) or load the cached snapshot module."""
    from soar_async.sandbox import ensure_built

    return ensure_built(progress=True)
