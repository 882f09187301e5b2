"""Waiting in tests on the thing itself, never on a fixed sleep (these machines are shared and noisy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, period: float = 0.1) -> Any:
    """Poll an async or sync predicate until truthy; fail the test with `what` after `timeout`
    (also when the predicate itself is still waiting then, e.g. for a connection)."""
    with anyio.move_on_after(timeout):
        while True:
            v = pred()
            if hasattr(v, "__await__"):
                v = await v
            if v:
                return v
            await anyio.sleep(period)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
