"""Retrying with backoff, written once.

Every network wait in the project that may fail for a while (a server restarting, JetStream
electing a leader, a consumer not yet provisioned) goes through `retry` or a `Backoff`:
exponential delays with full jitter, so that a hundred workers coming back after an outage
spread their retries instead of hammering the server in step, and a bound (a deadline or
a number of attempts) after which the last error surfaces with what was being attempted.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

T = TypeVar("T")


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Delay before retry number `attempt` (1 = first retry): base * 2^attempt, capped, jittered."""
    return random.uniform(0.5, 1.0) * min(cap, base * (2 ** min(max(attempt, 0), 16)))


@dataclass(slots=True)
class Backoff:
    """Growing delays for a loop that keeps going (a fetch loop, a reconnect): `await b.sleep()`
    after a failure, `b.reset()` after a success."""

    base: float = 0.1
    cap: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return backoff_delay(self.attempt, self.base, self.cap)

    async def sleep(self) -> None:
        await anyio.sleep(self.next_delay())

    def reset(self) -> None:
        self.attempt = 0


class RetryError(RuntimeError):
    """Retrying gave up; the message names what was attempted and the last error."""


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_if: Callable[[BaseException], bool],
    timeout: float | None = None,
    attempts: int | None = None,
    base: float = 0.1,
    cap: float = 2.0,
    give_up: Callable[[], bool] = lambda: False,
    error: type[Exception] = RetryError,
) -> T:
    """Call `fn()` until it returns, retrying errors for which `retry_if(e)` holds.

    Stops after `timeout` seconds or `attempts` calls (whichever comes first), or at once when
    `give_up()` turns true, raising `error` (a `RetryError` unless the caller names its own
    failure type, e.g. `BusError`) from the last error. Errors that `retry_if`
    rejects propagate unchanged: a refused request is not made right by asking again.
    """
    deadline = None if timeout is None else anyio.current_time() + timeout
    backoff = Backoff(base, cap)
    n = 0
    while True:
        n += 1
        try:
            return await fn()
        except Exception as e:
            if not retry_if(e):
                raise
            out_of_time = deadline is not None and anyio.current_time() >= deadline
            if out_of_time or (attempts is not None and n >= attempts) or give_up():
                raise error(f"{what}: gave up after {n} attempt(s): {e!r}") from e
            delay = backoff.next_delay()
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - anyio.current_time()))
            await anyio.sleep(delay)
