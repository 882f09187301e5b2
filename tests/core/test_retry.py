"""The one retry helper: what it retries, when it gives up, what it says then."""

from __future__ import annotations

import anyio
import pytest

from soar_async.retry import Backoff, RetryError, backoff_delay, retry


class Flaky(Exception):
    pass


def test_retries_until_success() -> None:
    calls = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky("not yet")
        return "ok"

    out = anyio.run(lambda: retry(fn, what="thing", retry_if=lambda e: isinstance(e, Flaky), base=0.001, cap=0.002))
    assert out == "ok" and len(calls) == 3


def test_errors_it_does_not_retry_propagate_at_once() -> None:
    calls = []

    async def fn() -> None:
        calls.append(1)
        raise KeyError("refused")

    with pytest.raises(KeyError):
        anyio.run(lambda: retry(fn, what="thing", retry_if=lambda e: isinstance(e, Flaky), base=0.001))
    assert len(calls) == 1


def test_gives_up_after_attempts_naming_what_and_the_last_error() -> None:
    async def fn() -> None:
        raise Flaky("still down")

    with pytest.raises(RetryError, match=r"publish to 'x': gave up after 4 attempt\(s\): Flaky\('still down'\)") as ei:
        anyio.run(lambda: retry(fn, what="publish to 'x'", retry_if=lambda e: True, attempts=4, base=0.001))
    assert isinstance(ei.value.__cause__, Flaky)


def test_gives_up_after_timeout_with_the_callers_error_type() -> None:
    class BusDown(RuntimeError):
        pass

    async def fn() -> None:
        raise Flaky("down")

    with pytest.raises(BusDown, match="gave up"):
        anyio.run(
            lambda: retry(fn, what="x", retry_if=lambda e: True, timeout=0.05, base=0.01, cap=0.02, error=BusDown)
        )


def test_give_up_predicate_stops_at_once() -> None:
    calls = []

    async def fn() -> None:
        calls.append(1)
        raise Flaky("down")

    with pytest.raises(RetryError):
        anyio.run(lambda: retry(fn, what="x", retry_if=lambda e: True, give_up=lambda: len(calls) >= 2, base=0.001))
    assert len(calls) == 2


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert all(0.05 <= backoff_delay(1, 0.05, 10) <= 0.1 for _ in range(100))  # 0.05 * 2, jitter 0.5-1
    assert all(backoff_delay(30, 0.1, 2.0) <= 2.0 for _ in range(100))
    assert len({backoff_delay(5, 0.1, 100) for _ in range(50)}) > 1
    b = Backoff(base=0.1, cap=1.0)
    delays = [b.next_delay() for _ in range(6)]
    assert b.attempt == 6 and max(delays) <= 1.0
    b.reset()
    assert b.attempt == 0
