"""`SandboxPool`: many programs evaluated concurrently, one program running per worker at a time.

Workers are processes by default (fresh interpreters, each with its own Runtime: engine + deserialized
module, ~10 ms to load). Processes rather than threads because a worker that dies for any reason —
a wasmtime abort, the OOM killer, a signal — must cost one program, not the pool: the dispatcher
thread that owns the worker sees the pipe close, reports CRASH for that program and respawns the
worker. (`mode="thread"` runs the same jobs on threads in this process; wasmtime-py releases the
GIL while wasm runs, so it scales too, without crash isolation.)

Each worker process holds its next job in its socket while it runs one (`PIPELINE_DEPTH`), so it
never waits for its dispatcher thread between two programs (see `_ProcessWorker.serve`).

Back-pressure: `run()` holds one of `4 * workers` capacity slots (`max_in_flight`) while its job
is queued or running, so a producer awaiting `run()` cannot pile up unbounded work, and every
worker's dispatcher finds a next program queued; `map()` simply blocks.

Result cache: every instance starts from the same snapshot, so a program's results are a function
of (code, inputs, limits) — SOAR samples many duplicate programs, and the cheapest execution is
the one not done. Completed results (except timeouts and crashes, which depend on load) are kept
in an LRU of `cache_size` entries, and identical jobs in flight share one execution.
"""

from __future__ import annotations

import collections
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
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Literal

from soar_async.arc import Grid
from soar_async.sandbox import build
from soar_async.sandbox.types import ErrorKind, ExecResult, Limits

GRACE_S = 15.0  # beyond the program's wall budget before the host declares a worker hung
START_TIMEOUT_S = 30.0  # for a worker to acknowledge a job (it does so before running it)
START_ATTEMPTS = 3  # fresh workers a job is offered to before it is reported as CRASH
PIPELINE_DEPTH = 2  # jobs at a worker at once: the one running and the next, waiting in its socket
PIPELINE_MAX_BYTES = 64 * 1024  # a larger job is sent only to an idle worker (see _ProcessWorker.serve)
PIPELINE_MAX_S = 0.05  # after a program that ran longer, a worker gets its next job only when idle
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


@dataclass(slots=True)
class _Sent:
    """A job taken from the pool's queue for one worker, pickled once (resends reuse it)."""

    payload: bytes
    n: int
    wall_s: float
    fut: cf.Future[ExecResult]
    t0: float
    attempts: int = 1
    started: float | None = None
    """When the worker acknowledged it (perf_counter); None while it waits at the worker."""

    @classmethod
    def of(cls, job: _Job) -> _Sent | None:
        """The job ready to send, or None when there is nothing to send: cancelled while queued,
        or not something a worker can be sent (its future then holds a CRASH result)."""
        code, inputs, limits, fut = job
        if not fut.set_running_or_notify_cancel():
            return None
        try:
            payload = bytes(ForkingPickler.dumps((code, inputs, limits.to_dict())))
            return cls(payload, len(inputs), limits.wall_for(len(inputs)), fut, time.perf_counter())
        except Exception as e:  # never lose a job
            n = len(inputs) if isinstance(inputs, list) else 1
            fut.set_result(ExecResult.all_failed(n, ErrorKind.CRASH, f"pool error: {e!r}"[:300]))
            return None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class _ProcessWorker:
    """One worker interpreter and the parent's end of its socket."""

    def __init__(self, fuel: bool) -> None:
        self.fuel = fuel
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.last_s = float("inf")
        """Sandbox time of the last program this worker ran (see `PIPELINE_MAX_S`; none yet: no guess)."""
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

    def serve(self, jobs: queue.Queue[_Job | None], peers: int = 0) -> None:
        """Run jobs from the pool's queue until it yields None, keeping up to `PIPELINE_DEPTH` at
        the worker: the next job waits in the worker's socket while one runs, so the worker
        starts it the moment it has sent a result, without waiting for this thread. (This
        thread needs the GIL for every message, and in an actor process the event loop holds
        it most of the time: without the queued job each worker idled through that wait, 1-2 ms
        per program, a fifth of the machine in `soar bench pipeline`.)

        A job held behind another waits for it even when another worker falls idle, so a
        worker is given one only behind a short program and while the queue has a job for each
        of its `peers` too (see `_top_up`).

        The worker acknowledges each job as it starts it, in order. A worker that dies or hangs
        costs only the job it had acknowledged (CRASH); jobs it held but had not started go to
        its replacement, `START_ATTEMPTS` times at most."""
        sent: collections.deque[_Sent] = collections.deque()  # at the worker, oldest first
        backlog: collections.deque[_Sent] = collections.deque()  # taken, not yet sent (retries first)
        closing = False
        while True:
            try:
                closing = self._top_up(jobs, sent, backlog, closing, peers)
                if sent:
                    self._next_message(sent, backlog)
                elif closing and not backlog:
                    return
            except Exception as e:  # never lose a job: a fault here costs the jobs this worker holds
                detail = f"pool error: {e!r}"[:300]
                for entry in (*sent, *backlog):
                    entry.fut.set_result(ExecResult.all_failed(entry.n, ErrorKind.CRASH, detail, entry.elapsed()))
                sent.clear()
                backlog.clear()
                try:
                    self.restart()
                except Exception:  # cannot start a worker now: the next job tries again (and is a CRASH)
                    pass

    def _top_up(
        self,
        jobs: queue.Queue[_Job | None],
        sent: collections.deque[_Sent],
        backlog: collections.deque[_Sent],
        closing: bool,
        peers: int,
    ) -> bool:
        """Send jobs until `PIPELINE_DEPTH` are at the worker; blocks for one only when none is.
        Returns whether the pool's queue said stop (None)."""
        while len(sent) < PIPELINE_DEPTH:
            if not backlog:
                if closing:
                    break
                if sent and (self.last_s > PIPELINE_MAX_S or jobs.qsize() <= peers):
                    # A job held behind a program waits for it even when another worker falls
                    # idle. Worth it only behind a short program (the last one's time is the
                    # guess: a long one does not notice the dispatcher's 1-2 ms) and while the
                    # queue has a job for every other worker too.
                    break
                try:
                    job = jobs.get(block=not sent)
                except queue.Empty:
                    break
                if job is None:
                    return True
                entry = _Sent.of(job)
                if entry is None:  # cancelled while queued
                    continue
                backlog.append(entry)
            if sent and len(backlog[0].payload) > PIPELINE_MAX_BYTES:
                break  # sent alone: a large job queued behind a large result could block both ends
            try:
                if not self.alive():
                    self.restart()
                self.wait_ready(60.0)
                assert self.conn is not None
                self.conn.send_bytes(backlog[0].payload)
            except (OSError, RuntimeError, TimeoutError) as e:
                self._recover(sent, backlog, type(e).__name__, blame_started=True)
                continue
            sent.append(backlog.popleft())
        return closing

    def _next_message(self, sent: collections.deque[_Sent], backlog: collections.deque[_Sent]) -> None:
        """Wait for the worker's next word on the oldest job: its acknowledgement or its result."""
        head = sent[0]
        now = time.perf_counter()
        if head.started is None:
            timeout = START_TIMEOUT_S
        else:
            timeout = head.started + head.wall_s + GRACE_S - now
        assert self.conn is not None
        try:
            if not self.conn.poll(max(0.0, timeout)):
                if head.started is None:  # never picked up: another worker may do better
                    self._recover(sent, backlog, "no start acknowledgement", blame_started=False)
                else:
                    self._recover(sent, backlog, "hung", blame_started=True)
                return
            msg = self.conn.recv()
        except (EOFError, OSError) as e:
            self._recover(sent, backlog, f"{type(e).__name__}", blame_started=True)
            return
        if head.started is None:  # the worker's first word on a job is its acknowledgement
            head.started = time.perf_counter()
            return
        sent.popleft()
        try:
            res = ExecResult.from_dict(msg)
        except Exception as e:
            res = ExecResult.all_failed(head.n, ErrorKind.CRASH, f"host error: {e!r}"[:300], head.elapsed())
        self.last_s = res.duration_s
        head.fut.set_result(res)

    def _recover(
        self, sent: collections.deque[_Sent], backlog: collections.deque[_Sent], why: str, *, blame_started: bool
    ) -> None:
        """Replace the worker. The job it had started is its CRASH (when `blame_started`); the
        jobs it held unstarted go back to the front of the backlog, each one attempt older."""
        code = self.proc.poll() if self.proc is not None else None
        self.restart()
        if sent and sent[0].started is not None and blame_started:
            head = sent.popleft()
            detail = (
                "sandbox worker hung; killed" if why == "hung" else f"sandbox worker died (exit code {code}): {why}"
            )
            head.fut.set_result(ExecResult.all_failed(head.n, ErrorKind.CRASH, detail, head.elapsed()))
        retry = [*sent, *backlog]
        sent.clear()
        backlog.clear()
        for e in retry:
            e.started = None
            e.attempts += 1
            if e.attempts > START_ATTEMPTS:
                msg = "no sandbox worker would start the program"
                e.fut.set_result(ExecResult.all_failed(e.n, ErrorKind.CRASH, msg, e.elapsed()))
            else:
                backlog.append(e)

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
        self.max_in_flight = 4 * self.workers
        """run() calls in flight at most: per worker, one running and one waiting in its socket
        (`PIPELINE_DEPTH`), and as many again in the queue, so that a worker's dispatcher finds
        the next job queued when it tops up (the event loop, busy with other actors, refills
        the queue later than a worker finishes a light program)."""
        self._limiter: Any = None  # back-pressure: `max_in_flight` run() calls at most
        self._waiters: Any = None  # threads that wait for results on non-asyncio backends
        self._procs: list[_ProcessWorker] = []
        if mode == "process":
            self._procs = [_ProcessWorker(fuel) for _ in range(self.workers)]
            for w in self._procs:
                w.wait_ready(120.0)
        elif mode == "thread":
            from soar_async.sandbox.runtime import runtime

            rt = runtime(fuel)
        else:
            raise ValueError(f"unknown pool mode {mode!r}")
        targets: list[tuple[Any, tuple[Any, ...]]] = (
            [(w.serve, (self._jobs, self.workers - 1)) for w in self._procs]
            if mode == "process"
            else [(self._dispatch, (rt.execute,))] * self.workers
        )
        self._threads = [
            threading.Thread(target=f, args=a, daemon=True, name=f"soar-pool-{i}") for i, (f, a) in enumerate(targets)
        ]
        for t in self._threads:
            t.start()

    def _dispatch(self, runner: Any) -> None:
        """Thread mode: run jobs one at a time on `runner` (the in-process runtime)."""
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
