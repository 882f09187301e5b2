"""Sandbox test fixtures: one runtime per session on the built snapshot (see tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def rt(sandbox_built: object) -> object:
    from soar_async.sandbox.runtime import runtime

    return runtime()
