"""`soar bench sandbox`: the same program corpus through every executor.

(a)  native: in-process `exec` via the same harness, the unsandboxed upper bound (one core);
(b)  fork: one forked process per program with an address-space rlimit, numpy and scipy
     pre-imported in the parent, like SOAR's reference executor (W at a time);
(b2) new python: a fresh interpreter per program (`python -c`, rlimit, imports numpy/scipy);
(c)  sandbox: `SandboxPool` with W worker processes; (c1) in-process `execute` on one core.
Rows for the light corpus (typical <=12x12 programs) and the heavy one (per-cell flood fills).
Latency is per program as the executor measured it (queueing excluded); RSS is per worker.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from soar_async.sandbox.corpus import Program, heavy_programs, light_programs

SUBPROCESS_MEMORY = 1 << 30  # RLIMIT_AS for the subprocess baseline


def _rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _stats(name: str, corpus: str, lat: list[float], wall: float, workers: int, rss: float) -> dict[str, Any]:
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    return {
        "executor": name,
        "corpus": corpus,
        "programs": len(lat),
        "workers": workers,
        "programs_per_s": len(lat) / wall if wall > 0 else 0.0,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": p99 * 1e3,
        "rss_mb_per_worker": rss,
    }


# -- (a) native ------------------------------------------------------------------------------
def run_native(programs: Sequence[Program]) -> tuple[list[float], float, list[Any]]:
    import numpy  # noqa: F401  (pre-imported, as in the guest snapshot)
    import scipy.ndimage  # noqa: F401

    from soar_async.sandbox.harness import run_program

    lat, outs = [], []
    t0 = time.perf_counter()
    for p in programs:
        res: list[Any] = []
        t = time.perf_counter()
        run_program(p.code, p.inputs, lambda i, k, g, d, res=res: res.append((k, g)))
        lat.append(time.perf_counter() - t)
        outs.append(res)
    return lat, time.perf_counter() - t0, outs


# -- (b) one subprocess per program ----------------------------------------------------------
def _child(conn: Any, code: str, inputs: list[Any]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))
    from soar_async.sandbox.harness import run_program

    res: list[Any] = []
    run_program(code, inputs, lambda i, k, g, d: res.append((k, g)))
    conn.send((res, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    conn.close()


def run_subprocess(programs: Sequence[Program], workers: int) -> tuple[list[float], float, float]:
    """Fork per program from a parent with numpy/scipy imported; `workers` in flight."""
    import multiprocessing as mp

    import numpy  # noqa: F401
    import scipy.ndimage  # noqa: F401

    ctx = mp.get_context("fork")
    lat: list[float] = []
    rss: list[float] = []
    pending = list(programs)
    running: list[tuple[Any, Any, float, float]] = []
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < workers:
            p = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            t = time.perf_counter()
            proc = ctx.Process(target=_child, args=(child, p.code, p.inputs))
            proc.start()
            child.close()
            running.append((proc, parent, t, max(2.0, min(20.0, len(p.inputs)))))
        from multiprocessing.connection import wait

        wait([c for _, c, _, _ in running], timeout=0.05)
        still = []
        for proc, conn, t, limit in running:
            if conn.poll():
                try:
                    _, m = conn.recv()
                    rss.append(m)
                except EOFError:
                    pass
                proc.join()
                lat.append(time.perf_counter() - t)
            elif time.perf_counter() - t > limit:
                proc.kill()
                proc.join()
                lat.append(time.perf_counter() - t)
            else:
                still.append((proc, conn, t, limit))
                continue
            conn.close()
        running = still
    return lat, time.perf_counter() - t0, statistics.median(rss) if rss else 0.0


_SPAWN_RUNNER = """
import json, resource, sys
lim = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
import numpy, scipy.ndimage
req = json.load(sys.stdin)
ns = {"__name__": "soar_harness"}
exec(compile(req["harness"], "harness.py", "exec"), ns)
res = []
ns["run_program"](req["code"], req["inputs"], lambda i, k, g, d: res.append((k, g)))
json.dump([res, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024], sys.stdout)
"""


def run_spawn(programs: Sequence[Program], workers: int) -> tuple[list[float], float, float]:
    """A fresh `python` per program (imports numpy/scipy itself), `workers` at a time. The
    harness is passed as source so the child imports nothing of ours: only the interpreter, numpy
    and scipy start-up is measured, as in an executor that runs `python program.py`."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from soar_async.sandbox import harness

    harness_src = Path(harness.__file__).read_text(encoding="utf-8")

    def one(p: Program) -> tuple[float, float]:
        t = time.perf_counter()
        try:
            out = subprocess.run(
                [sys.executable, "-c", _SPAWN_RUNNER, str(SUBPROCESS_MEMORY)],
                input=json.dumps({"code": p.code, "inputs": p.inputs, "harness": harness_src}),
                capture_output=True,
                text=True,
                timeout=max(2.0, min(20.0, len(p.inputs))) + 5,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            rss = json.loads(out.stdout)[1] if out.returncode == 0 else 0.0
        except subprocess.TimeoutExpired:
            rss = 0.0
        return time.perf_counter() - t, rss

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        got = list(ex.map(one, programs))
    wall = time.perf_counter() - t0
    rss = [r for _, r in got if r]
    return [d for d, _ in got], wall, statistics.median(rss) if rss else 0.0


# -- (c) sandbox -----------------------------------------------------------------------------
def run_pool(programs: Sequence[Program], workers: int) -> tuple[list[float], float, float, list[Any]]:
    from soar_async.sandbox import SandboxPool

    with SandboxPool(workers=workers) as pool:
        pool.map([(programs[0].code, programs[0].inputs)] * workers)  # warm
        t0 = time.perf_counter()
        futs = [(time.perf_counter(), pool.submit(p.code, p.inputs)) for p in programs]
        results = [f.result() for _, f in futs]
        wall = time.perf_counter() - t0
        rss = statistics.mean(_rss_mb(pid) for pid in pool.worker_pids())
    # queueing time is not latency: use the executor-measured duration per program
    lat = [r.duration_s for r in results]
    return lat, wall, rss, results


def run_inprocess(programs: Sequence[Program]) -> tuple[list[float], float]:
    from soar_async.sandbox import execute

    execute(programs[0].code, programs[0].inputs)  # warm: load the module
    lat = []
    t0 = time.perf_counter()
    for p in programs:
        lat.append(execute(p.code, p.inputs).duration_s)
    return lat, time.perf_counter() - t0


def bench(n: int | None, workers: int, heavy: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from soar_async.sandbox.build import ensure_built

    ensure_built(progress=True)
    corpora = {"light": light_programs()}
    if n is not None:
        base = corpora["light"]
        corpora["light"] = [base[i % len(base)] for i in range(n)]
    if heavy:
        corpora["heavy"] = heavy_programs()
    rows: list[dict[str, Any]] = []
    mismatches = 0
    native: dict[str, list[Any]] = {}
    # Baselines first: (b) forks, and forking is only safe before this process loads wasmtime
    # and starts its epoch thread (done by the in-process sandbox row).
    for name, progs in corpora.items():
        say(f"[{name}] {len(progs)} programs: native exec")
        lat, wall, native[name] = run_native(progs)
        rows.append(_stats("native exec (a)", name, lat, wall, 1, _rss_mb()))
        say(f"[{name}] one subprocess per program, {workers} at a time")
        lat, wall, rss = run_subprocess(progs, workers)
        rows.append(_stats("fork per program+rlimit (b)", name, lat, wall, workers, rss))
        say(f"[{name}] a fresh python per program, {workers} at a time")
        lat, wall, rss = run_spawn(progs, workers)
        rows.append(_stats("new python per program+rlimit (b2)", name, lat, wall, workers, rss))
    for name, progs in corpora.items():
        say(f"[{name}] sandbox pool, {workers} workers")
        lat, wall, rss, results = run_pool(progs, workers)
        rows.append(_stats("sandbox pool (c)", name, lat, wall, workers, rss))
        for res, nat in zip(results, native[name], strict=True):
            got = [(None if r.error is None else str(r.error), r.output) for r in res.results]
            if got != [(k, g) for k, g in nat]:
                mismatches += 1
        say(f"[{name}] sandbox in-process execute, 1 core")
        lat, wall = run_inprocess(progs)
        rows.append(_stats("sandbox 1 core (c1)", name, lat, wall, 1, _rss_mb()))
    ratios = {}
    for name in corpora:
        by = {r["executor"].rsplit("(", 1)[1].rstrip(")"): r for r in rows if r["corpus"] == name}
        a, b, b2, c, c1 = (by[k]["programs_per_s"] for k in ("a", "b", "b2", "c", "c1"))
        ratios[name] = {
            "c_over_a": c / a,  # pool (W workers) vs native on one core
            "c_over_b": c / b,  # same parallelism
            "c_over_b2": c / b2,
            "c1_over_a": c1 / a,  # one core each
            "c1_over_b_per_core": c1 / (b / workers),
            "c1_over_b2_per_core": c1 / (b2 / workers),
        }
    return {
        "rows": rows,
        "ratios": ratios,
        "output_mismatches_vs_native": mismatches,
        "cores": os.cpu_count(),
        "workers": workers,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "| corpus | executor | workers | programs | programs/s | p50 ms | p99 ms | RSS/worker MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['corpus']} | {r['executor']} | {r['workers']} | {r['programs']} | "
            f"{r['programs_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | "
            f"{r['rss_mb_per_worker']:.0f} |"
        )
    lines.append("")
    for name, q in report["ratios"].items():
        lines.append(
            f"{name}: throughput (c)/(a) = {q['c_over_a']:.2f}x, (c)/(b) = {q['c_over_b']:.2f}x, "
            f"(c)/(b2) = {q['c_over_b2']:.1f}x; per core: (c1)/(a) = {q['c1_over_a']:.3f}x "
            f"(1/{1 / q['c1_over_a']:.1f}), (c1)/(b) = {q['c1_over_b_per_core']:.2f}x, "
            f"(c1)/(b2) = {q['c1_over_b2_per_core']:.1f}x"
        )
    lines.append(f"sandbox outputs differing from native: {report['output_mismatches_vs_native']}")
    return "\n".join(lines)
