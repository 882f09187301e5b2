"""Sandbox test fixtures: the snapshot build is done once per session (and cached on disk)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def sandbox_built() -> object:
    """Build (first time: about two minutes) or load the cached snapshot module."""
    from soar_async.sandbox import ensure_built

    return ensure_built(progress=True)


@pytest.fixture(scope="session")
def rt(sandbox_built: object) -> object:
    from soar_async.sandbox.runtime import runtime

    return runtime()
