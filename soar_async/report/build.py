"""What the HTML report shows, gathered from a run's archive alone (read-only, like `soar results`).

The totals, per-task attempts and scores are `soar results`' own (`gather_from_stores`), so the
report and the table always agree; the per-generation rows are `generation_stats`. On top of
those the report needs, per task, only a few programs: they are ranked in SQL from the
programs table's columns (train accuracy, completions per norm) and only the top ones and the
lineage of the best are parsed, so that a run of 400 tasks with 6,000 programs each still
gives a report of a few MB (`TOP_PROGRAMS`, `MAX_LINEAGE`, `MAX_CODE_CHARS` bound it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from soar_async.arc import Grid, Task
from soar_async.records import ProgramRecord
from soar_async.scoring import VOTE_C
from soar_async.search.generations import GenerationStats
from soar_async.search.results import NoArchive, RunResults, TaskResult, gather_from_stores, open_archive
from soar_async.search.store import ArchiveStore

TOP_PROGRAMS = 5
"""Programs shown per task: the best by train accuracy, then vote weight."""
MAX_LINEAGE = 8
"""Refinement steps shown before the best program, each with its code (earlier ones are counted, not shown)."""
MAX_CODE_CHARS = 6000
"""A program's code beyond this is cut in the report (a model can write pages)."""
RATE_BINS = 60
"""Points of the programs/s curve at most."""


@dataclass
class ProgramView:
    """One program as a task section shows it."""

    program_id: str
    code: str
    """At most `MAX_CODE_CHARS` characters (`code_chars` is the full length)."""
    code_chars: int
    train_accuracy: float
    train_correct: list[bool]
    test_correct: list[bool | None]
    errors: list[str]
    """Distinct error kinds of the program's inputs (empty when it ran everywhere)."""
    count: int
    """Completions that wrote it (at least 1): its multiplicity in the vote."""
    weight: float
    """What it adds to the vote: count x (1 + c x train accuracy)."""
    origin: str
    generation: int
    model_version: str
    parent_id: str | None
    attempts: list[int] = field(default_factory=list)
    """The attempts (1-based) whose grid it gives at every test input."""


@dataclass
class LineageStep:
    """One program of the best program's refinement chain (root first)."""

    program_id: str
    origin: str
    train_accuracy: float
    generation: int
    code: str
    code_chars: int


@dataclass
class TaskView:
    """One task section: the task, its `soar results` row, the attempts and the programs."""

    task: Task
    result: TaskResult
    attempts: list[list[Grid]]
    programs: list[ProgramView]
    lineage: list[LineageStep]
    """Root to best; empty when the best program has no parent (a sample) or there is none."""
    lineage_hidden: int = 0
    """Earlier steps not shown (chains longer than `MAX_LINEAGE`)."""
    lineage_broken: str | None = None
    """The parent id where the chain left the archive (a parent never stored), if it did."""

    @property
    def solved(self) -> bool:
        return self.result.score == 1.0


@dataclass
class Report:
    """Everything the HTML report shows."""

    run_dir: str
    created_at: float
    results: RunResults
    generations: list[GenerationStats]
    tasks: list[TaskView]
    started_at: float | None
    """The first search's start (generation >= 0), None for a run of imports only."""
    wall_s: float | None
    """From `started_at` to the last program or completion stored."""
    searched_programs: int
    """Programs the run's searches evaluated (imports left out): the rate's numerator."""
    rate: list[tuple[float, float]]
    """(seconds since the start, programs/s): a step curve, both ends of each time bin."""

    @property
    def programs_per_s(self) -> float | None:
        return self.searched_programs / self.wall_s if self.wall_s else None


def _ranked(store: ArchiveStore, task_id: str, c: float) -> list[tuple[float, float, float, str, int]]:
    """The task's programs, one per norm, as (-train accuracy, -weight, evaluated_at, program id,
    count): sortable best first without parsing any record."""
    rows = store.db.execute(
        "SELECT p.program_id, p.norm, p.fitness, p.evaluated_at, "
        "(SELECT COUNT(*) FROM completions c WHERE c.task_id=p.task_id AND c.norm=p.norm) "
        "FROM programs p WHERE p.task_id=? ORDER BY p.evaluated_at",
        (task_id,),
    )
    seen: set[str] = set()
    out = []
    for pid, norm, fit, at, n in rows:
        if norm in seen:
            continue
        seen.add(norm)
        count = max(1, n)
        out.append((-fit, -count * (1 + c * fit), at, pid, count))
    return out


def _record(holders: Sequence[ArchiveStore], program_id: str) -> ProgramRecord | None:
    for s in holders:
        rec = s.record(program_id)
        if rec is not None:
            return rec
    return None


def _cut(code: str) -> str:
    return code if len(code) <= MAX_CODE_CHARS else code[:MAX_CODE_CHARS]


def _errors(rec: ProgramRecord) -> list[str]:
    kinds = {e.split(":", 1)[0] for e in (*rec.train_errors, *rec.test_errors) if e}
    return sorted(kinds)


def _view(rec: ProgramRecord, count: int, weight: float, attempts: list[list[Grid]]) -> ProgramView:
    outs = rec.test_outputs
    gives = []
    if outs and len(outs) == len(attempts):
        for k in range(max(len(a) for a in attempts)):
            if all(k < len(a) and o is not None and o == a[k] for o, a in zip(outs, attempts, strict=True)):
                gives.append(k + 1)
    return ProgramView(
        program_id=rec.id,
        code=_cut(rec.code),
        code_chars=len(rec.code),
        train_accuracy=rec.train_accuracy,
        train_correct=list(rec.train_correct),
        test_correct=list(rec.test_correct),
        errors=_errors(rec),
        count=count,
        weight=weight,
        origin=rec.origin,
        generation=rec.generation,
        model_version=rec.model_version,
        parent_id=rec.parent_id,
        attempts=gives,
    )


def _lineage(holders: Sequence[ArchiveStore], best: ProgramRecord) -> tuple[list[LineageStep], int, str | None]:
    """The chain of parents of `best`, root first: (steps shown, steps hidden, broken-at parent id)."""
    chain = [best]
    seen = {best.id}
    broken = None
    parent = best.parent_id
    while parent is not None and parent not in seen:
        rec = _record(holders, parent)
        if rec is None:
            broken = parent
            break
        chain.append(rec)
        seen.add(rec.id)
        parent = rec.parent_id
    if len(chain) == 1:
        return [], 0, broken
    chain.reverse()
    hidden = max(0, len(chain) - (MAX_LINEAGE + 1))
    steps = [
        LineageStep(r.id, r.origin, r.train_accuracy, r.generation, _cut(r.code), len(r.code)) for r in chain[hidden:]
    ]
    return steps, hidden, broken


def _task_view(
    holders: Sequence[ArchiveStore], task: Task, result: TaskResult, attempts: list[list[Grid]], c: float
) -> TaskView:
    ranked = sorted(r for s in holders for r in _ranked(s, task.id, c))
    programs: list[ProgramView] = []
    best: ProgramRecord | None = None
    for _, neg_weight, _, pid, count in ranked[:TOP_PROGRAMS]:
        rec = _record(holders, pid)
        if rec is None:  # a row vanished between the two reads: cannot happen to a finished run
            continue
        best = best or rec
        programs.append(_view(rec, count, -neg_weight, attempts))
    steps, hidden, broken = _lineage(holders, best) if best is not None else ([], 0, None)
    return TaskView(task, result, attempts, programs, steps, hidden, broken)


def _times(stores: Sequence[ArchiveStore]) -> tuple[float | None, float | None, list[float]]:
    """(first search start, last thing stored, evaluation times of the searches' programs)."""
    starts, ends, times = [], [], []
    for s in stores:
        db = s.db
        starts.append(db.execute("SELECT MIN(created_at) FROM tasks WHERE generation >= 0").fetchone()[0])
        ends.append(db.execute("SELECT MAX(evaluated_at) FROM programs WHERE generation >= 0").fetchone()[0])
        ends.append(db.execute("SELECT MAX(created_at) FROM slots WHERE generation >= 0").fetchone()[0])
        times += [r[0] for r in db.execute("SELECT evaluated_at FROM programs WHERE generation >= 0")]
    start = min((t for t in starts if t is not None), default=None)
    end = max((t for t in ends if t is not None), default=None)
    return start, end, sorted(times)


def _rate(times: Sequence[float], start: float, wall: float) -> list[tuple[float, float]]:
    """Programs/s as a step curve over at most `RATE_BINS` bins of at least a second: (seconds since
    the start, rate) at both ends of each bin, so that even a one-bin run draws a line."""
    if not times or wall <= 0:
        return []
    bins = max(1, min(RATE_BINS, int(wall)))
    width = wall / bins
    counts = [0] * bins
    for t in times:
        counts[min(bins - 1, max(0, int((t - start) / width)))] += 1
    return [pt for i, n in enumerate(counts) for pt in ((i * width, n / width), ((i + 1) * width, n / width))]


def build_report(run_dir: Path, *, c: float = VOTE_C, n_attempts: int = 2) -> Report:
    """Read the run's archive (read-only; a live run goes on) into a `Report`. `NoArchive` for a
    directory without one, as `soar results`."""
    stores = open_archive(run_dir)
    try:
        attempts: dict[str, list[list[Grid]]] = {}
        results = gather_from_stores(stores, run_dir, c=c, n_attempts=n_attempts, attempts_out=attempts)
        by_task: dict[str, list[ArchiveStore]] = {}
        for s in stores:
            for tid in s.task_ids():
                by_task.setdefault(tid, []).append(s)
        views = [
            _task_view(by_task[tid], by_task[tid][0].task(tid), res, attempts.get(tid, []), c)
            for tid, res in results.per_task.items()
        ]
        start, end, times = _times(stores)
        wall = end - start if start is not None and end is not None else None
        return Report(
            run_dir=str(run_dir),
            created_at=time.time(),
            results=results,
            generations=results.generations,
            tasks=views,
            started_at=start,
            wall_s=wall,
            searched_programs=len(times),
            rate=_rate(times, start, wall) if start is not None and wall else [],
        )
    except sqlite3.Error as e:
        raise NoArchive(f"{run_dir}: cannot read the archive: {e}") from None
    finally:
        for s in stores:
            s.close()
