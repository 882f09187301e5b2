"""SandboxPool: ordering, concurrency, async back-pressure, and crashed workers replaced."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time

import anyio
import pytest

from soar_async.sandbox import ErrorKind, ExecResult, GridResult, Limits, SandboxPool

ID = "def transform(g):\n    return g\n"
SPIN = "def transform(g):\n    while True: pass\n"


@pytest.mark.slow
def test_map_keeps_order_and_recovers_from_a_killed_worker(sandbox_built: object) -> None:
    with SandboxPool(workers=2, limits=Limits(wall_s=10), cache_size=0) as pool:
        jobs = [(f"def transform(g):\n    return [[{i % 10}]]\n", [[[0]]]) for i in range(20)]
        assert [r.results[0].output for r in pool.map(jobs)] == [[[i % 10]] for i in range(20)]

        victim_pids = pool.worker_pids()
        fut = pool.submit(SPIN, [[[1]], [[2]]])
        while not fut.running():  # picked up by a dispatcher, which sends it at once
            time.sleep(0.01)
        time.sleep(0.5)
        for pid in victim_pids:
            os.kill(pid, signal.SIGKILL)
        res = fut.result(timeout=60)
        assert [r.error for r in res.results] == [ErrorKind.CRASH, ErrorKind.CRASH]
        assert "died" in (res.results[0].detail or "")
        # replaced workers serve the next programs; nothing is lost
        after = pool.map([(ID + f"# {i}\n", [[[3]]]) for i in range(4)])
        assert all(r.results[0].output == [[3]] for r in after)
        assert set(pool.worker_pids()).isdisjoint(victim_pids)


@pytest.mark.slow
def test_a_job_waiting_at_a_killed_worker_runs_on_its_replacement(sandbox_built: object) -> None:
    """A worker holds its next job while it runs one. Killed, it costs the job it had started
    (CRASH); the job it held unstarted runs on the replacement, as if nothing had happened."""
    slow = "def transform(g):\n    x = 0\n    for i in range(10**9):\n        x += i\n    return g\n"
    with SandboxPool(workers=1, limits=Limits(wall_s=30), cache_size=0) as pool:
        pool.map([(ID, [[[0]]])])  # a short program first: a worker holds a job only behind short ones
        victim = pool.worker_pids()[0]
        running = pool.submit(slow, [[[1]]])
        waiting = pool.submit(ID, [[[3]]])
        deadline = time.monotonic() + 30
        while not waiting.running() and time.monotonic() < deadline:  # taken to be sent to the worker
            time.sleep(0.01)
        assert waiting.running() and not waiting.done()  # at the worker, behind the slow program
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        res = running.result(timeout=60)
        assert res.results[0].error == ErrorKind.CRASH and "died" in (res.results[0].detail or "")
        again = waiting.result(timeout=60)
        assert again.results[0].error is None and again.results[0].output == [[3]]
        assert pool.worker_pids()[0] != victim


def test_a_job_that_cannot_be_sent_is_a_crash_and_the_pool_goes_on(sandbox_built: object) -> None:
    with SandboxPool(workers=1, cache_size=0) as pool:
        bad = pool.submit(ID, [[[lambda: 0]]])  # type: ignore[list-item]  # no worker can be sent this
        res = bad.result(timeout=30)
        assert res.results[0].error == ErrorKind.CRASH and "pool error" in (res.results[0].detail or "")
        assert pool.submit(ID, [[[5]]]).result(timeout=30).results[0].output == [[5]]


@pytest.mark.slow
def test_async_run_applies_back_pressure(sandbox_built: object) -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    async def main() -> list[object]:
        async with SandboxPool(workers=2) as pool:
            orig = pool.submit

            def counting_submit(*a: object, **k: object) -> object:
                nonlocal in_flight, peak
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                fut = orig(*a, **k)  # type: ignore[arg-type]

                def done(_: object) -> None:
                    nonlocal in_flight
                    with lock:
                        in_flight -= 1

                fut.add_done_callback(done)
                return fut

            pool.submit = counting_submit  # type: ignore[method-assign]
            results: list[object] = [None] * 20

            async def one(i: int) -> None:
                results[i] = await pool.run(f"def transform(g):\n    return [[{i % 10}]]\n", [[[0]]])

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            return results

    results = anyio.run(main)
    assert [r.results[0].output for r in results] == [[[i % 10]] for i in range(20)]  # type: ignore[attr-defined]
    assert 4 < peak <= 8  # 4 per worker: one running, one waiting at it, two queued in the pool; no more


def test_async_run_waits_without_taking_threads(sandbox_built: object) -> None:
    """More callers in flight than anyio's default worker threads (40): a finished result must not
    queue behind callers whose programs are still running."""
    n_blocked = 45
    pending: list[cf.Future[ExecResult]] = []

    def done(code: str) -> ExecResult:
        return ExecResult([GridResult([[1 if code == "quick" else 0]])], "", 0.0)

    def fake_submit(code: str, inputs: object, limits: object = None, **_kw: object) -> cf.Future[ExecResult]:
        fut: cf.Future[ExecResult] = cf.Future()
        if code == "quick":
            fut.set_result(done(code))
        else:
            pending.append(fut)
        return fut

    async def main() -> tuple[ExecResult, int]:
        assert anyio.to_thread.current_default_thread_limiter().total_tokens < n_blocked
        with SandboxPool(workers=n_blocked + 8, mode="thread") as pool:
            pool.submit = fake_submit  # type: ignore[method-assign,assignment]
            async with anyio.create_task_group() as tg:
                for _ in range(n_blocked):
                    tg.start_soon(pool.run, "slow", [[[0]]])
                try:
                    await anyio.sleep(0.3)
                    with anyio.fail_after(10):
                        quick = await pool.run("quick", [[[0]]])
                    threads = threading.active_count()
                finally:
                    for f in pending:
                        f.set_result(done("slow"))
        return quick, threads

    before = threading.active_count()
    quick, threads = anyio.run(main)
    assert quick.results[0].output == [[1]]
    assert len(pending) == n_blocked
    assert threads - before <= n_blocked + 8 + 3  # the pool's dispatchers, no waiter per caller


def test_thread_mode(sandbox_built: object) -> None:
    with SandboxPool(workers=2, mode="thread") as pool:
        res = pool.map([(ID, [[[i % 10]]]) for i in range(6)])
    assert [r.results[0].output for r in res] == [[[i % 10]] for i in range(6)]


def test_closed_pool_refuses_work(sandbox_built: object) -> None:
    pool = SandboxPool(workers=1, mode="thread")
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(ID, [[[1]]])


def test_duplicate_programs_run_once(sandbox_built: object) -> None:
    with SandboxPool(workers=2, mode="thread") as pool:
        code = "def transform(g):\n    print('ran')\n    return g\n"
        first = pool.map([(code, [[[1]]])] * 5)
        again = pool.submit(code, [[[1]]]).result()
        other = pool.submit(code, [[[2]]]).result()
    assert all(r.results[0].output == [[1]] and r.stdout == "ran\n" for r in [*first, again])
    assert again.extra["cached"] is True and other.extra["cached"] is False
    assert pool.cache_hits == 5
    first[0].results[0].output[0][0] = 7  # type: ignore[index]
    assert first[1].results[0].output == [[1]]  # copies, not shared objects


def test_timeouts_are_not_cached(sandbox_built: object) -> None:
    with SandboxPool(workers=1, mode="thread", limits=Limits(wall_s=0.2)) as pool:
        a = pool.submit(SPIN, [[[1]]]).result()
        b = pool.submit(SPIN, [[[1]]]).result()
    assert a.results[0].error == b.results[0].error == ErrorKind.TIMEOUT
    assert b.extra["cached"] is False


def test_cache_keys_on_a_named_input(sandbox_built: object) -> None:
    """Programs on inputs named by a key share cached results by that key: the same code and key
    is a hit without serialising the grids, another key (other inputs) is a miss."""
    code = "def transform(g):\n    return [[len(g)]]\n"
    with SandboxPool(workers=1) as pool:
        first = pool.submit(code, [[[1]], [[2]]], inputs_key="task-a").result()
        again = pool.submit(code, [[[1]], [[2]]], inputs_key="task-a").result()
        other = pool.submit(code, [[[1]]], inputs_key="task-b").result()
        inline = pool.submit(code, [[[1]], [[2]]]).result()
    assert [r.output for r in first.results] == [[[1]], [[1]]] and not first.extra["cached"]
    assert again.extra["cached"] and [r.output for r in again.results] == [[[1]], [[1]]]
    assert not other.extra["cached"] and [r.output for r in other.results] == [[[1]]]
    assert not inline.extra["cached"]  # an unnamed input is keyed by its grids, never by a name
