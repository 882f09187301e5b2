"""`soar bench pipeline`: programs/s through proposer -> executor -> archive, against the sandbox alone.

Workload: the first `tasks` ARC-AGI-1 training tasks, `programs_per_task` DISTINCT light
programs each (the sandbox corpus's numpy / pure-Python transformations, run on the task's
own inputs; beyond the corpus's size a variant adds one statement with its own constant, so
every program's AST differs: the search runs a duplicate only once, by design).

- pool: `SandboxPool(workers=W)` alone, every program submitted at once, the same code (as the
  proposer extracts it from the completion) on the same inputs (the task's train + test
  inputs) with the same limits as the executor. Timed from the first submit to the last
  result; the pool's start is not included.
- pipeline: the whole `search()` (`soar solve`'s driver) with sampling only (refinements 0,
  no early stop) and the LLM test double (`model.engine = "double"`, instant): an embedded
  nats-server, the LLM actor, the proposer, the refiner, the archive (SQLite) and one
  executor actor with W sandbox processes (`sandbox.workers = W`, concurrency 2W, the ratio
  the executor uses by default: programs in flight overlap the bus round trips). Each
  measurement gets a fresh run directory. Timed from the moment the archive stored the first
  `SearchTask` (the actors are up; the driver has just published the tasks) to the moment it
  stored the last evaluated program: bring-up, the votes and teardown are not included (their
  wall time is reported apart). Programs are counted from the archive and checked against the
  driver's report.

"Executor workers" are sandbox processes of one executor: the executor actor is async and
cheap, the processes are what executes; a second executor actor in the same process would
only add a second pool. Goal: pipeline / pool >= 0.8 at every W.

CPU per program (whole runs, start-up included, so an upper bound): for the pipeline this
process (every actor, the bus client, the archive's SQLite), the nats-server and the sandbox
workers; for the pool this process (its dispatcher threads) and the workers. Their quotient
(`cpu_ratio`, pool / pipeline) is the throughput ratio to expect when every core is busy,
and it depends much less than programs/s on what else the machine runs. The same parts are
also sampled over each timed window alone (`window`: CPU ms per program, the pipeline's event
loop apart, and the share of the cores left idle), which tells a pipeline short of CPU (idle
near 0, programs/s ratio near `window_cpu_ratio`) from one that leaves the cores waiting. `--rounds R` runs
pool and pipeline R times, alternating, and reports each side's median round.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soar_async.arc import Grid, Task

GOAL = 0.8
"""Pipeline programs/s over the sandbox pool's alone, at least this."""

DEFAULT_TASKS = 10
DEFAULT_PROGRAMS = 100
DEFAULT_N = 20
"""Completions per sampling request (the search's `completions_per_sample_request`)."""
IN_FLIGHT = 2
"""Sampling requests each task keeps in flight (`search.requests_in_flight`)."""

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Workload:
    tasks: list[Task]
    completions: dict[str, list[str]]
    """Task id -> the double's completions for it, each with a distinct program."""
    jobs: list[tuple[str, list[Grid]]]
    """(code as the proposer extracts it, the task's inputs): what the executor runs."""
    skipped_tasks: list[str]
    """Tasks passed over because a prompt would match another task's script rule."""


def _with_statement(code: str, k: int) -> str:
    """`code` with `_variant = k` as the first statement of `transform`: another AST, same output."""
    lines = code.splitlines()
    i = next(j for j, line in enumerate(lines) if line.startswith("def transform("))
    return "\n".join([*lines[: i + 1], f"    _variant = {k}", *lines[i + 1 :]]) + "\n"


def programs(n: int, offset: int = 0) -> list[str]:
    """n distinct light programs: the corpus's, rotated by `offset`, then variants of them."""
    from soar_async.sandbox.corpus import light_programs

    base = list(dict.fromkeys(p.code for p in light_programs()))
    out = []
    for i in range(n):
        code = base[(i + offset) % len(base)]
        out.append(code if i < len(base) else _with_statement(code, i // len(base)))
    return out


def completion(code: str) -> str:
    return f"The rule looks like this.\n\n```python\n{code.rstrip()}\n```\n"


def workload(n_tasks: int, per_task: int) -> Workload:
    """The first `n_tasks` ARC-AGI-1 training tasks whose prompts the double can tell apart."""
    from soar_async.arc import load_tasks
    from soar_async.prompts import extract_code, grid_text, sampling_messages
    from soar_async.search.plan import norm_key

    chosen: list[Task] = []
    keys: list[str] = []
    prompts: list[str] = []
    skipped: list[str] = []
    for t in load_tasks("arc-agi-1:training"):
        if len(chosen) == n_tasks:
            break
        key = grid_text(t.train[0].input)
        prompt = "\n".join(m["content"] for m in sampling_messages(t))
        if any(k in prompt for k in keys) or any(key in p for p in prompts):
            skipped.append(t.id)
            continue
        chosen.append(t)
        keys.append(key)
        prompts.append(prompt)
    if len(chosen) < n_tasks:
        raise ValueError(f"only {len(chosen)} ARC-AGI-1 training tasks can be told apart by the double")
    comps: dict[str, list[str]] = {}
    jobs: list[tuple[str, list[Grid]]] = []
    for i, t in enumerate(chosen):
        texts = [completion(c) for c in programs(per_task, offset=7 * i)]
        codes = [extract_code(x) for x in texts]
        if any(c is None for c in codes) or len({norm_key(c or "") for c in codes}) != per_task:
            raise AssertionError(f"task {t.id}: the generated programs are not {per_task} distinct ones")
        comps[t.id] = texts
        jobs += [(c or "", t.inputs()) for c in codes]
    return Workload(chosen, comps, jobs, skipped)


def write_script(path: Path, wl: Workload) -> Path:
    """The double's script: one sampling rule per task, keyed by its first train input."""
    from soar_async.prompts import grid_text

    rules = [
        {"contains": grid_text(t.train[0].input), "kind": "sample", "texts": wl.completions[t.id]} for t in wl.tasks
    ]
    path.write_text(json.dumps({"rules": rules, "default": ["No idea."], "delay_s": 0.0}))
    return path


def bench_config(script: Path, workers: int, n: int, exec_batch: int | None = None) -> Any:
    from soar_async.config import Config, apply

    values = {
        "model": {"engine": "double", "path": str(script), "max_concurrent_requests": 16},
        "search": {
            "completions_per_sample_request": n,
            "exec_batch": exec_batch or Config().search.exec_batch,
            "requests_in_flight": IN_FLIGHT,
            "stop_after_correct": 0,
        },
        "sandbox": {"workers": workers},
    }
    return apply(Config(), values, "bench")


def _rusage(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _cpu_total(row: dict[str, Any]) -> float:
    return float(sum(row["cpu_ms_per_program"].values()))


def _window_ratio(pool: dict[str, Any], pipe: dict[str, Any]) -> float | None:
    """CPU per program in the timed windows, pool / pipeline (None when a window went unsampled)."""
    if not pool.get("window") or not pipe.get("window"):
        return None
    a, b = sum(pool["window"]["cpu_ms_per_program"].values()), sum(pipe["window"]["cpu_ms_per_program"].values())
    return a / b if b > 0 else None


# -- the sandbox pool alone ------------------------------------------------------------------
def run_pool(jobs: Sequence[tuple[str, list[Grid]]], workers: int, limits: Any) -> dict[str, Any]:
    from soar_async.sandbox import SandboxPool

    self0, child0 = _rusage(resource.RUSAGE_SELF), _rusage(resource.RUSAGE_CHILDREN)
    with _Sampler() as sampler, SandboxPool(workers=workers, limits=limits) as pool:
        pool.map([("def transform(g):\n    return [[0]]\n", [[[0]]])] * workers)  # warm every worker
        time.sleep(2 * sampler.period)  # the sampler has seen the workers
        start, t0 = time.time(), time.perf_counter()
        futs = [pool.submit(code, inputs) for code, inputs in jobs]
        results = [f.result() for f in futs]
        wall = time.perf_counter() - t0
        end = time.time()
    self_cpu = _rusage(resource.RUSAGE_SELF) - self0
    child_cpu = _rusage(resource.RUSAGE_CHILDREN) - child0  # the workers, reaped when the pool closed
    busy = sum(r.duration_s for r in results)
    k = 1e3 / len(results) if results else 0.0
    return {
        "programs": len(results),
        "seconds": wall,
        "programs_per_s": len(results) / wall if wall > 0 else 0.0,
        "sandbox_busy": busy / (workers * wall) if wall > 0 else 0.0,
        "mean_program_ms": busy * k,
        "cpu_ms_per_program": {"bench_process": self_cpu * k, "sandbox_workers": child_cpu * k},
        "window": sampler.window(start, end, len(results), event_loop=False),
    }


# -- the whole pipeline ----------------------------------------------------------------------
class _Sampler:
    """CPU over time, sampled from a thread while a side runs, so that a measurement can cover
    exactly the timed window (start-up, votes and teardown excluded) and children that are gone
    by the end (the embedded nats-server is stopped before the run returns).

    Each sample: wall time, this process's CPU, its main thread's (the pipeline's event loop:
    all five actors), each child's by name (nats-server, the sandbox workers), and the whole
    machine's idle time. Children are found from /proc/self/task/*/children at each tick (a few
    small reads; a walk of every process would cost the measured process CPU that the pool's
    side never pays); the sampler costs well under 1% of a core, on both sides alike."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")
        self._main_tid = threading.main_thread().native_id

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        watched: dict[int, tuple[str, Any]] = {}
        while not self._stop.is_set():
            now = time.time()
            for pid in _child_pids(me) - watched.keys():
                try:
                    c = psutil.Process(pid)
                    watched[pid] = ("nats" if _named(c, "nats-server") else "sandbox", c)
                except psutil.Error:
                    continue
            row: dict[str, float] = {}
            t = me.cpu_times()
            row["process"] = t.user + t.system
            loop = _thread_cpu(self._main_tid)
            if loop is not None:
                row["event_loop"] = loop
            for pid, (kind, proc) in list(watched.items()):
                try:
                    c = proc.cpu_times()
                except psutil.Error:  # gone: its last sample stands
                    del watched[pid]
                    continue
                row[f"{kind}:{pid}"] = c.user + c.system
            m = psutil.cpu_times()
            row["idle"] = m.idle + getattr(m, "iowait", 0.0)
            self.samples.append((now, row))
            self._stop.wait(self.period)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def total(self, kind: str) -> float:
        """CPU seconds of the children of one kind over the whole run (their last samples)."""
        last: dict[str, float] = {}
        for _t, row in self.samples:
            last.update({k: v for k, v in row.items() if k.startswith(kind + ":")})
        return sum(last.values())

    def window(self, start: float, end: float, programs: int, *, event_loop: bool = True) -> dict[str, Any] | None:
        """CPU ms per program in [start, end] (wall-clock times), from the samples nearest inside
        it, and the share of the machine's cores left idle; None when the window holds fewer
        than two samples. `event_loop`: report the main thread apart (the pipeline's actors)."""
        inside = [(t, row) for t, row in self.samples if start <= t <= end]
        if len(inside) < 2 or programs <= 0:
            return None
        (t0, a), (t1, b) = inside[0], inside[-1]
        span = t1 - t0

        def delta(kind: str) -> float:
            keys = [k for k in b if k == kind or k.startswith(kind + ":")]
            return sum(b[k] - a.get(k, 0.0) for k in keys)  # a child first seen mid-window: from 0

        k = 1e3 * (end - start) / span / programs  # ms per program, scaled from the sampled span
        cpu = {
            "process": delta("process") * k,
            "nats_server": delta("nats") * k,
            "sandbox_workers": delta("sandbox") * k,
        }
        out: dict[str, Any] = {"sampled_s": span, "cpu_ms_per_program": cpu}
        if event_loop and "event_loop" in a and "event_loop" in b:
            out["event_loop_ms_per_program"] = (b["event_loop"] - a["event_loop"]) * k
        cores = os.cpu_count() or 1
        out["machine_idle"] = max(0.0, min(1.0, (b["idle"] - a["idle"]) / (span * cores)))
        return out


def _child_pids(me: Any) -> set[int]:
    """This process's direct children (the nats-server and the sandbox workers are)."""
    pids: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                pids.update(int(x) for x in f.read().split())
    except OSError:  # no /proc children lists here: ask psutil (a walk of every process)
        return {c.pid for c in me.children()}
    return pids


def _thread_cpu(tid: int | None) -> float | None:
    """CPU seconds of one thread of this process (Linux: /proc), or None where that cannot be read."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _named(p: Any, name: str) -> bool:
    try:
        return bool(p.name().startswith(name))
    except Exception:
        return False


async def run_pipeline(
    wl: Workload,
    workers: int,
    run_dir: Path,
    *,
    n: int,
    timeout: float,
    progress: Progress,
    exec_batch: int | None = None,
) -> dict[str, Any]:
    from soar_async.search.run import search

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(write_script(run_dir.parent / f"script-{run_dir.name}.json", wl), workers, n, exec_batch)
    per_task = len(wl.jobs) // len(wl.tasks)
    last_said = [0.0]

    def on_progress(p: Any) -> None:
        if p.elapsed - last_said[0] >= 5.0:
            last_said[0] = p.elapsed
            progress(f"  {p.programs}/{len(wl.jobs)} programs, {p.done}/{p.tasks} tasks done, {p.elapsed:.0f} s")

    self0, child0 = _rusage(resource.RUSAGE_SELF), _rusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with _Sampler() as cpu:
        report = await search(
            wl.tasks,
            run_dir=run_dir,
            config=cfg,
            samples=per_task,
            refinements=0,
            executors=2 * workers,
            timeout=timeout,
            on_progress=on_progress,
        )
    total = time.perf_counter() - t0
    self_cpu = _rusage(resource.RUSAGE_SELF) - self0
    child_cpu = _rusage(resource.RUSAGE_CHILDREN) - child0
    nats_cpu = cpu.total("nats")

    db = sqlite3.connect(run_dir / "archive.sqlite")
    try:
        start, end_of_tasks = db.execute("SELECT MIN(created_at), MAX(created_at) FROM tasks").fetchone()
        count, first, last, busy = db.execute(
            "SELECT COUNT(*), MIN(evaluated_at), MAX(evaluated_at), COALESCE(SUM(duration_s), 0) FROM programs"
        ).fetchone()
        completions, distinct, slots = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id || norm), (SELECT COUNT(*) FROM slots) FROM completions"
        ).fetchone()
    finally:
        db.close()
    window = (last - start) if count else 0.0
    return {
        "window": cpu.window(start, last, count) if count else None,
        "executor_workers": workers,
        "executor_concurrency": 2 * workers,
        "programs": count,
        "programs_reported": report.programs,
        "completions": completions,
        "distinct_programs_written": distinct,
        "slots": slots,
        "unfinished": report.unfinished,
        "seconds": window,
        "programs_per_s": count / window if window > 0 else 0.0,
        "first_to_last_program_s": (last - first) if count else 0.0,
        "first_program_after_s": (first - start) if count else 0.0,
        "tasks_published_over_s": end_of_tasks - start,
        "search_wall_s": total,
        "outside_window_s": total - window,
        "sandbox_busy": busy / (workers * window) if window > 0 else 0.0,
        "mean_program_ms": busy / count * 1e3 if count else 0.0,
        "cpu_ms_per_program": {
            "soar_process": self_cpu / count * 1e3 if count else 0.0,
            "nats_server": nats_cpu / count * 1e3 if count else 0.0,
            "sandbox_workers": max(0.0, child_cpu - nats_cpu) / count * 1e3 if count else 0.0,
        },
    }


async def run_bench(
    *,
    tasks: int = DEFAULT_TASKS,
    programs_per_task: int = DEFAULT_PROGRAMS,
    executors: Sequence[int] = (1, 2),
    n: int = DEFAULT_N,
    exec_batch: int | None = None,
    rounds: int = 1,
    timeout: float = 1800.0,
    work_dir: Path | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Pool, then pipeline, `rounds` times for each executor worker count; see the module doc.

    With several rounds each side's median round (by programs/s) is reported, so that a burst
    of other load on a shared machine does not decide the ratio."""
    import anyio

    from soar_async.config import Config
    from soar_async.sandbox import Limits, ensure_built

    if tasks < 1 or programs_per_task < 1 or not executors or min(executors) < 1 or n < 1 or rounds < 1:
        raise ValueError("tasks, programs per task, executor workers, rounds and completions per request must be >= 1")
    exec_batch = exec_batch or Config().search.exec_batch
    if exec_batch < 1:
        raise ValueError(f"programs per execution message (--exec-batch) must be >= 1, got {exec_batch}")
    await anyio.to_thread.run_sync(ensure_built)
    progress(f"workload: {tasks} ARC-AGI-1 training tasks x {programs_per_task} distinct programs")
    wl = await anyio.to_thread.run_sync(workload, tasks, programs_per_task)
    limits = Limits.from_settings(Config().sandbox)
    scaling: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="soar-bench-pipeline-", dir=work_dir) as tmp:
        for w in executors:
            pools, pipes = [], []
            for r in range(rounds):
                tag = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
                progress(f"[pool] {len(wl.jobs)} programs, {w} sandbox worker(s){tag}")
                pools.append(await anyio.to_thread.run_sync(run_pool, wl.jobs, w, limits))
                progress(f"[pipeline] {len(wl.jobs)} programs, 1 executor with {w} sandbox worker(s){tag}")
                run_dir = Path(tmp) / f"run-w{w}-r{r}"
                pipe = await run_pipeline(
                    wl, w, run_dir, n=n, timeout=timeout, progress=progress, exec_batch=exec_batch
                )
                if pipe["programs"] != len(wl.jobs) or pipe["programs_reported"] != pipe["programs"]:
                    progress(
                        f"  WARNING: {pipe['programs']} programs archived, {pipe['programs_reported']} reported, "
                        f"{len(wl.jobs)} expected"
                    )
                pipes.append(pipe)
            pool = _median(pools)
            pipe = _median(pipes)
            ratio = pipe["programs_per_s"] / pool["programs_per_s"] if pool["programs_per_s"] > 0 else 0.0
            scaling[str(w)] = {
                "pipeline_programs_per_s": pipe["programs_per_s"],
                "pool_programs_per_s": pool["programs_per_s"],
                "ratio": ratio,
                "cpu_ratio": _cpu_total(pool) / _cpu_total(pipe) if _cpu_total(pipe) > 0 else 0.0,
                "window_cpu_ratio": _window_ratio(pool, pipe),
                "pipeline": pipe,
                "pool": pool,
                "rounds": {
                    "pipeline_programs_per_s": [x["programs_per_s"] for x in pipes],
                    "pool_programs_per_s": [x["programs_per_s"] for x in pools],
                },
            }
    top = scaling[str(max(executors))]
    lo = scaling[str(min(executors))]
    return {
        "tasks": tasks,
        "programs_per_task": programs_per_task,
        "programs": len(wl.jobs),
        "completions_per_request": n,
        "exec_batch": exec_batch,
        "requests_in_flight": IN_FLIGHT,
        "rounds": rounds,
        "skipped_tasks": wl.skipped_tasks,
        "executors": list(executors),
        "executor_workers": max(executors),
        "pipeline_programs_per_s": top["pipeline_programs_per_s"],
        "pool_programs_per_s": top["pool_programs_per_s"],
        "ratio": top["ratio"],
        "goal": GOAL,
        "meets_goal": all(s["ratio"] >= GOAL for s in scaling.values()),
        "scaling": scaling,
        "speedup": {
            "pipeline": top["pipeline_programs_per_s"] / lo["pipeline_programs_per_s"]
            if lo["pipeline_programs_per_s"] > 0
            else 0.0,
            "pool": top["pool_programs_per_s"] / lo["pool_programs_per_s"] if lo["pool_programs_per_s"] > 0 else 0.0,
        },
        "timing": "pipeline: archive stored the first SearchTask -> archive stored the last program "
        "(bring-up, votes, teardown excluded); pool: first submit -> last result (pool start excluded)",
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median programs/s (the lower one of two middles): a real round, whole."""
    ranked = sorted(rows, key=lambda x: x["programs_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def render(r: dict[str, Any]) -> str:
    rounds = f", median of {r['rounds']} rounds" if r["rounds"] > 1 else ""
    lines = [
        f"soar bench pipeline: {r['tasks']} ARC-AGI-1 training tasks x {r['programs_per_task']} distinct "
        f"light programs = {r['programs']}, LLM test double (instant), {r['completions_per_request']} "
        f"completions per request, up to {r['exec_batch']} programs per execution message, "
        f"{r['requests_in_flight']} requests in flight per task{rounds}; "
        f"{r['machine']}, load average {' '.join(f'{x:.1f}' for x in r['load_average'])}",
        "",
        "| executor workers | pool programs/s | pipeline programs/s | pipeline / pool | pool busy | pipeline busy | "
        "pool CPU ms/program: host / sandbox | pipeline CPU ms/program: soar / nats / sandbox | CPU pool / pipeline |",
        "|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for w, s in r["scaling"].items():
        p, q = s["pipeline"], s["pool"]
        c, d = p["cpu_ms_per_program"], q["cpu_ms_per_program"]
        lines.append(
            f"| {w} | {s['pool_programs_per_s']:.0f} | {s['pipeline_programs_per_s']:.0f} | {s['ratio']:.2f} | "
            f"{q['sandbox_busy'] * 100:.0f}% | {p['sandbox_busy'] * 100:.0f}% | "
            f"{d['bench_process']:.1f} / {d['sandbox_workers']:.1f} | "
            f"{c['soar_process']:.1f} / {c['nats_server']:.1f} / {c['sandbox_workers']:.1f} | {s['cpu_ratio']:.2f} |"
        )
    lines.append("")
    lines.append("In the timed windows only (sampled every 0.1 s):")
    for w, s in r["scaling"].items():
        q, p = s["pool"].get("window"), s["pipeline"].get("window")
        if not q or not p:
            lines.append(f"  {w} worker(s): a window too short to sample")
            continue
        c, d = p["cpu_ms_per_program"], q["cpu_ms_per_program"]
        lines.append(
            f"  {w} worker(s): pool {d['process']:.2f} host + {d['sandbox_workers']:.2f} sandbox ms/program, "
            f"cores idle {q['machine_idle'] * 100:.0f}%; pipeline {c['process']:.2f} soar (event loop "
            f"{p.get('event_loop_ms_per_program', float('nan')):.2f}) + {c['nats_server']:.2f} nats + "
            f"{c['sandbox_workers']:.2f} sandbox ms/program, cores idle {p['machine_idle'] * 100:.0f}%; "
            f"CPU pool / pipeline {s['window_cpu_ratio']:.2f}"
        )
    lines.append("")
    sp = r["speedup"]
    if len(r["scaling"]) > 1:
        lines.append(
            f"scaling {min(r['executors'])} -> {max(r['executors'])} executor workers: pipeline "
            f"{sp['pipeline']:.2f}x, pool {sp['pool']:.2f}x"
        )
    lines.append(
        f"pipeline / pool at {r['executor_workers']} worker(s): {r['ratio']:.2f} "
        f"(goal >= {r['goal']} at every worker count: {'met' if r['meets_goal'] else 'NOT met'})"
    )
    for w, s in r["scaling"].items():
        p = s["pipeline"]
        lines.append(
            f"pipeline at {w} worker(s): first program {p['first_program_after_s']:.2f} s after the search began; "
            f"bring-up + votes + teardown {p['outside_window_s']:.1f} s outside the timed window"
        )
        if p["programs"] != r["programs"] or p["programs_reported"] != p["programs"] or p["unfinished"]:
            lines.append(
                f"WARNING ({w} workers): {p['programs']} programs archived, {p['programs_reported']} reported, "
                f"{r['programs']} expected, unfinished: {p['unfinished']}"
            )
    lines.append(f"timing: {r['timing']}")
    lines.append(
        "CPU per program: whole runs, pool and actor start-up included; CPU pool / pipeline is the throughput "
        "ratio to expect when every core is busy"
    )
    return "\n".join(lines)
