"""`SandboxPool`: many programs evaluated concurrently, one program per worker at a time.

Workers are processes by default (fresh interpreters, each with its own Runtime: engine + deserialized
module, ~10 ms to load). Processes rather than threads because a worker that dies for any reason —
a wasmtime abort, the OOM killer, a signal — must cost one program, not the pool: the dispatcher
thread that owns the worker sees the pipe close, reports CRASH for that program and respawns the
worker. (`mode="thread"` runs the same jobs on threads in this process; wasmtime-py releases the
GIL while wasm runs, so it scales too, without crash isolation.)

Back-pressure: `run()` holds one of `2 * workers` capacity slots (`max_in_flight`) while its job
is queued or running, so a producer awaiting `run()` cannot pile up unbounded work, and every
worker finds its next program queued when one ends; `map()` simply blocks.

Result cache: every instance starts from the same snapshot, so a program's results are a function
of (code, inputs, limits) — SOAR samples many duplicate programs, and the cheapest execution is
the one not done. Completed results (except timeouts and crashes, which depend on load) are kept
in an LRU of `cache_size` entries, and identical jobs in flight share one execution.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Literal

from soar_async.arc import Grid
from soar_async.sandbox import build
from soar_async.sandbox.types import ErrorKind, ExecResult, Limits

GRACE_S = 15.0  # beyond the program's wall budget before the host declares a worker hung
START_TIMEOUT_S = 30.0  # for a worker to acknowledge a job (it does so before running it)
START_ATTEMPTS = 3  # fresh workers a job is offered to before it is reported as CRASH
_Job = tuple[str, list[Grid], Limits, "cf.Future[ExecResult]"]


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _copy(res: ExecResult, cached: bool) -> ExecResult:
    """An independent copy, so callers sharing one execution cannot mutate each other's result."""
    out = ExecResult(copy.deepcopy(res.results), res.stdout, res.duration_s)
    out.extra["cached"] = cached
    return out


class _ProcessWorker:
    """One worker interpreter and the parent's end of its socket."""

    def __init__(self, fuel: bool) -> None:
        self.fuel = fuel
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.start()

    def start(self) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        args = [sys.executable, "-m", "soar_async.sandbox._worker", str(child.fileno())]
        if self.fuel:
            args.append("--fuel")
        try:
            self.proc = subprocess.Popen(args, pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.ready = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        assert self.conn is not None
        try:
            if not self.conn.poll(timeout):
                raise TimeoutError("sandbox worker did not start in time")
            self.conn.recv()
        except EOFError:
            code = self.proc.wait(5) if self.proc is not None else None
            raise RuntimeError(f"sandbox worker failed to start (exit code {code})") from None
        self.ready = True

    def kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:
                pass
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass

    def restart(self) -> None:
        self.kill()
        self.start()

    def run(self, code: str, inputs: list[Grid], limits: Limits) -> ExecResult:
        """One job; on any worker failure the worker is replaced and CRASH is returned.

        The worker acknowledges a job before running it. A worker that dies before that
        acknowledgement (killed while idle, say) never ran the job, so the job goes to its
        replacement instead of being blamed; only a death after it is the program's CRASH.
        """
        n = len(inputs)
        t0 = time.perf_counter()
        job = (code, inputs, limits.to_dict())
        for _attempt in range(START_ATTEMPTS):
            if not self.alive():
                self.restart()
            try:
                self.wait_ready(60.0)
                assert self.conn is not None
                self.conn.send(job)
                if not self.conn.poll(START_TIMEOUT_S):
                    raise TimeoutError("no start acknowledgement")
                self.conn.recv()
                break
            except (EOFError, OSError, TimeoutError, RuntimeError):
                self.restart()
        else:
            return ExecResult.all_failed(
                n, ErrorKind.CRASH, "no sandbox worker would start the program", time.perf_counter() - t0
            )
        try:
            if not self.conn.poll(limits.wall_for(n) + GRACE_S):
                self.restart()
                return ExecResult.all_failed(
                    n, ErrorKind.CRASH, "sandbox worker hung; killed", time.perf_counter() - t0
                )
            return ExecResult.from_dict(self.conn.recv())
        except (EOFError, OSError) as e:
            code_ = self.proc.poll() if self.proc is not None else None
            self.restart()
            return ExecResult.all_failed(
                n,
                ErrorKind.CRASH,
                f"sandbox worker died (exit code {code_}): {type(e).__name__}",
                time.perf_counter() - t0,
            )

    def stop(self) -> None:
        try:
            if self.conn is not None:
                self.conn.send(None)
            if self.proc is not None:
                self.proc.wait(2)
        except Exception:
            pass
        if self.alive():
            self.kill()
        elif self.conn is not None:
            self.conn.close()


class SandboxPool:
    """Evaluate many programs concurrently; results always come back (CRASH if a worker died)."""

    def __init__(
        self,
        workers: int | None = None,
        limits: Limits | None = None,
        mode: Literal["process", "thread"] = "process",
        cache_size: int = 10_000,
    ) -> None:
        self.workers = workers or available_cores()
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ExecResult] = OrderedDict()
        self._inflight: dict[str, cf.Future[ExecResult]] = {}
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.limits = limits or Limits()
        self.mode = mode
        fuel = self.limits.fuel is not None
        build.ensure_built(fuel=fuel)  # build here once, not racing in every worker
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self.max_in_flight = 2 * self.workers
        """run() calls in flight at most: one program running and one queued per worker, so a
        worker's next program is already in its queue when one ends (no wait for the event
        loop, which may be busy with other actors, between two programs)."""
        self._limiter: Any = None  # back-pressure: `max_in_flight` run() calls at most
        self._waiters: Any = None  # threads that wait for results on non-asyncio backends
        self._procs: list[_ProcessWorker] = []
        if mode == "process":
            self._procs = [_ProcessWorker(fuel) for _ in range(self.workers)]
            for w in self._procs:
                w.wait_ready(120.0)
            runners = [w.run for w in self._procs]
        elif mode == "thread":
            from soar_async.sandbox.runtime import runtime

            rt = runtime(fuel)
            runners = [rt.execute] * self.workers
        else:
            raise ValueError(f"unknown pool mode {mode!r}")
        self._threads = [
            threading.Thread(target=self._dispatch, args=(r,), daemon=True, name=f"soar-pool-{i}")
            for i, r in enumerate(runners)
        ]
        for t in self._threads:
            t.start()

    def _dispatch(self, runner: Any) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            code, inputs, limits, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(runner(code, inputs, limits))
            except BaseException as e:  # never lose a job
                fut.set_result(ExecResult.all_failed(len(inputs), ErrorKind.CRASH, f"pool error: {e!r}"[:300]))

    def submit(
        self, code: str, inputs: list[Grid], limits: Limits | None = None, *, inputs_key: str | None = None
    ) -> cf.Future[ExecResult]:
        """Queue one program; the future always resolves to an ExecResult (never raises).

        `inputs_key`: a digest that names `inputs` exactly (the caller's, computed once for many
        programs on the same inputs), so the cache key needs no serialisation of the grids."""
        if self._closed:
            raise RuntimeError("SandboxPool is closed")
        limits = limits or self.limits
        out: cf.Future[ExecResult] = cf.Future()
        if self.cache_size <= 0:
            self._jobs.put((code, inputs, limits, out))
            return out
        if inputs_key is None:
            key_text = json.dumps([code, inputs, limits.to_dict()], separators=(",", ":"))
        else:
            key_text = json.dumps([code, "inputs:" + inputs_key, limits.to_dict()], separators=(",", ":"))
        key = hashlib.sha256(key_text.encode()).hexdigest()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                out.set_result(_copy(hit, cached=True))
                return out
            running = self._inflight.get(key)
            joined = running is not None
            if running is None:
                running = self._inflight[key] = cf.Future()
                self._jobs.put((code, inputs, limits, running))
                running.add_done_callback(lambda f, key=key: self._store(key, f))
            else:
                self.cache_hits += 1
        running.add_done_callback(lambda f: out.set_result(_copy(f.result(), cached=joined)))
        return out

    def _store(self, key: str, fut: cf.Future[ExecResult]) -> None:
        res = fut.result()
        with self._cache_lock:
            self._inflight.pop(key, None)
            if any(r.error in (ErrorKind.TIMEOUT, ErrorKind.CRASH) for r in res.results):
                return  # load-dependent outcomes are not facts about the program
            self._cache[key] = res
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def map(self, jobs: Sequence[tuple[str, list[Grid]]]) -> list[ExecResult]:
        """Run every (code, inputs) job; blocks; results in job order."""
        futs = [self.submit(code, inputs) for code, inputs in jobs]
        return [f.result() for f in futs]

    async def run(self, code: str, inputs: list[Grid], *, inputs_key: str | None = None) -> ExecResult:
        """Await one program. At most `max_in_flight` calls are in flight; the rest wait here.

        The result is awaited without a thread on asyncio (`asyncio.wrap_future`), so no number of
        callers can exhaust anyio's shared worker-thread limiter (40 by default) and leave finished
        results queued behind blocked waiters; on other backends a waiting thread is taken from a
        limiter of this pool's own, as large as the back-pressure limit. As before, a cancelled
        caller keeps its slot until its program has finished (the wait is shielded), so
        cancellation cannot push more work into the pool than `max_in_flight`."""
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_in_flight)
        async with self._limiter:
            fut = self.submit(code, inputs, inputs_key=inputs_key)
            with anyio.CancelScope(shield=True):
                return await self._wait(fut)

    async def _wait(self, fut: cf.Future[ExecResult]) -> ExecResult:
        import asyncio

        import anyio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # not on asyncio (trio, say)
        else:
            return await asyncio.wrap_future(fut)

        if self._waiters is None:
            self._waiters = anyio.CapacityLimiter(self.max_in_flight)
        return await anyio.to_thread.run_sync(fut.result, limiter=self._waiters)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._procs]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        for w in self._procs:
            w.stop()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.close)
