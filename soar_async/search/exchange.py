"""Programs in and out of a run's archive as Parquet, in the released SOAR schema (`relabel.parquet_schema`).

Export writes every stored program of a run, one row per program, `extra_json` carrying
`count`: how many completions wrote it, as the vote counts it (0 for a later stored program
whose normalised code an earlier one has: the vote counts that code through the earlier one).

Import loads rows from such a file (ours, or the released `julien31/soar_arc_train_5M`
files: task_id, code, predicted outputs, correctness) into a run's archive, to seed a
search or training. Each row is judged again against the task as the run knows it (so its
program id, correctness and digest are the run's); outputs of the wrong shape are stored,
as wrong answers. The archive needs each task's definition: the run's own when it has
one, else the `--tasks` selector's, else the bundled arckit sets' by id; a task found so is
recorded with a plan of zero budgets in generation `IMPORT_GENERATION` (-1), below any
search's, so a later search of the task in generation 0 records its own plan (the imported
programs join its vote, and the refiner takes those that ran without error as REX arms, like
its own). Rows are skipped, counted and reported, never fatal,
when their task is unknown, or when their outputs cannot be of this task: another number
of train or test outputs, or a `task_digest` naming other grids (the same id in ARC-AGI-1
and -2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from soar_async.arc import ARCKIT_SETS, MAX_SIDE, Grid, Task, check_grid, load_tasks
from soar_async.bus.topology import partition
from soar_async.messages import SearchTask
from soar_async.records import ProgramRecord
from soar_async.relabel import write_parquet
from soar_async.runtime.client import REGISTERED_GENERATION
from soar_async.search.results import open_archive
from soar_async.search.store import ArchiveStore, UnknownTask, store_name

IMPORT_GENERATION = REGISTERED_GENERATION
"""The generation of the zero-budget plan recorded for a task that an import brought in."""

_PARTITIONED = re.compile(r"archive-p(\d+)of(\d+)\.sqlite$")


@dataclass
class ExportReport:
    path: str
    programs: int
    tasks: int


def export_run(run_dir: Path, out: Path) -> ExportReport:
    """Write every stored program of the run to `out` (Parquet, released schema plus ours)."""
    stores = open_archive(run_dir)
    tasks: set[str] = set()

    def rows() -> Iterator[ProgramRecord]:
        for store in stores:
            for tid in store.task_ids():
                recs = store.program_records(tid)
                if recs:
                    tasks.add(tid)
                yield from recs

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = write_parquet(rows(), out)
    finally:
        for s in stores:
            s.close()
    return ExportReport(path=str(out), programs=n, tasks=len(tasks))


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    """Programs newly stored."""
    already: int = 0
    """Rows whose program the archive already held (or that repeat an earlier row)."""
    tasks: list[str] = field(default_factory=list)
    """Tasks that received programs."""
    tasks_added: dict[str, str] = field(default_factory=dict)
    """Tasks the archive did not have, with where their definition came from."""
    unknown: dict[str, int] = field(default_factory=dict)
    """Rows per task id found nowhere (skipped)."""
    mismatched: dict[str, int] = field(default_factory=dict)
    """Rows per task whose outputs cannot be of the task (other pair counts or grids; skipped)."""
    malformed: int = 0
    """Rows that are no program record at all (lists of unequal lengths, no code...; skipped)."""
    stores: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _TaskSource:
    """Task definitions for tasks the archive lacks: the selector's, then arckit's by id
    (in `arc.find_task`'s order: ARC-AGI-1 first, evaluation before training), each set loaded once."""

    def __init__(self, selector: str | None) -> None:
        self.given = {t.id: t for t in load_tasks(selector)} if selector else {}
        self.selector = selector
        self._order = sorted(ARCKIT_SETS, key=lambda s: (s.split(":")[0], s.endswith("training")))
        self._loaded: dict[str, Task] = {}
        self._next = 0

    def find(self, task_id: str) -> tuple[Task, str] | None:
        if task_id in self.given:
            return self.given[task_id], f"--tasks {self.selector}"
        while task_id not in self._loaded and self._next < len(self._order):
            src = self._order[self._next]
            self._next += 1
            for t in load_tasks(src):
                self._loaded.setdefault(t.id, t)
        t = self._loaded.get(task_id)
        return None if t is None else (t, t.source or "arckit")


class _Stores:
    """The run's writable stores, and which one holds (or gets) each task."""

    def __init__(self, run_dir: Path) -> None:
        paths = sorted(run_dir.glob("archive*.sqlite"))
        if not paths:
            run_dir.mkdir(parents=True, exist_ok=True)
            paths = [run_dir / store_name(None)]
        self.stores = [ArchiveStore(p) for p in paths]
        self.count = 0
        parts = {}
        for s in self.stores:
            m = _PARTITIONED.search(s.path.name)
            if m:
                parts[int(m.group(1))] = s
                self.count = int(m.group(2))
        self.parts = parts if self.count and len(parts) == self.count else {}
        self.holder: dict[str, ArchiveStore] = {}
        for s in self.stores:
            for tid in s.task_ids():
                self.holder.setdefault(tid, s)

    def for_new_task(self, task_id: str) -> ArchiveStore:
        if self.parts:
            return self.parts[partition(task_id, self.count)]
        plain = [s for s in self.stores if s.path.name == store_name(None)]
        return plain[0] if plain else self.stores[0]

    def close(self) -> None:
        for s in self.stores:
            s.close()


def _grid_problem(g: object) -> str | None:
    """`arc.check_grid`, with a fast path for the common case (a valid grid read from Parquet)."""
    if type(g) is list and 0 < len(g) <= MAX_SIDE and all(type(r) is list for r in g):
        w = len(g[0])
        if 0 < w <= MAX_SIDE and all(len(r) == w for r in g):
            cells = list(chain.from_iterable(g))  # type: ignore[arg-type]
            if set(map(type, cells)) == {int} and min(cells) >= 0 and max(cells) <= 9:
                return None
    return check_grid(g)


def _clean(outs: list[Any], errs: list[str | None]) -> tuple[list[Grid | None], list[str | None]]:
    grids: list[Grid | None] = []
    errors: list[str | None] = []
    for o, e in zip(outs, errs, strict=True):
        problem = e if e is not None else "no output" if o is None else _grid_problem(o)
        grids.append(None if problem is not None else o)
        errors.append(problem if e is not None or o is None or problem is None else f"invalid output: {problem}")
    return grids, errors


def _judged(rec: ProgramRecord, task: Task) -> ProgramRecord | None:
    """The row as a record of `task` (outputs checked, then `ProgramRecord.rescored`: judged
    against the task's known outputs), None when it cannot be one."""
    if rec.task_digest and rec.task_digest != task.digest:
        return None
    if len(rec.train_outputs) != len(task.train) or len(rec.test_outputs) != len(task.test):
        return None
    # The row is ours (just read): clean its outputs in place, then judge it as a record of `task`.
    rec.train_outputs, rec.train_errors = _clean(rec.train_outputs, rec.train_errors)
    rec.test_outputs, rec.test_errors = _clean(rec.test_outputs, rec.test_errors)
    judged = rec.rescored(task)
    for key in ("count", "duplicate_of"):  # the exporting run's vote bookkeeping, not this run's
        judged.extra.pop(key, None)
    return judged


def _rows(path: Path, batch_size: int = 10_000) -> Iterator[ProgramRecord | None]:
    """`relabel.iter_parquet`, row by row, with None for a row that makes no record (one bad row
    in millions of released ones does not stop the import)."""
    import pyarrow.parquet as pq

    from soar_async.relabel import _from_row

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            try:
                yield _from_row(row)
            except (ValueError, TypeError, KeyError):
                yield None


def import_parquet(
    path: Path,
    run_dir: Path,
    *,
    tasks: str | None = None,
    batch_size: int = 5000,
    on_progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Load the programs of a Parquet file into the run's archive (see the module doc)."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    source = _TaskSource(tasks)
    stores = _Stores(run_dir)
    report = ImportReport(stores=[str(s.path) for s in stores.stores])
    known: dict[str, tuple[ArchiveStore, Task] | None] = {}
    pending: dict[ArchiveStore, list[ProgramRecord]] = {}
    seen_tasks: set[str] = set()

    def resolve(tid: str) -> tuple[ArchiveStore, Task] | None:
        if tid in known:
            return known[tid]
        got: tuple[ArchiveStore, Task] | None = None
        if tid in stores.holder:
            try:
                got = (stores.holder[tid], stores.holder[tid].task(tid))
            except UnknownTask:
                got = None
        if got is None:
            found = source.find(tid)
            if found is not None:
                task, where = found
                store = stores.for_new_task(tid)
                store.add_search(
                    SearchTask(
                        task_id=tid,
                        task=task.to_json(),
                        generation=IMPORT_GENERATION,
                        samples=0,
                        refinements=0,
                        n_sample=1,
                        n_refine=1,
                        requests_in_flight=1,
                    )
                )
                stores.holder[tid] = store
                report.tasks_added[tid] = where
                got = (store, task)
        known[tid] = got
        return got

    def flush() -> None:
        for store, recs in pending.items():
            added = store.add_records(recs)
            report.added += added
            report.already += len(recs) - added
        pending.clear()
        if on_progress is not None:
            on_progress(report)

    try:
        n_pending = 0
        for row in _rows(path):
            report.rows += 1
            if row is None:
                report.malformed += 1
                continue
            got = resolve(row.task_id)
            if got is None:
                report.unknown[row.task_id] = report.unknown.get(row.task_id, 0) + 1
                continue
            store, task = got
            rec = _judged(row, task)
            if rec is None:
                report.mismatched[task.id] = report.mismatched.get(task.id, 0) + 1
                continue
            seen_tasks.add(task.id)
            pending.setdefault(store, []).append(rec)
            n_pending += 1
            if n_pending >= batch_size:
                flush()
                n_pending = 0
        flush()
    finally:
        stores.close()
    report.tasks = sorted(seen_tasks)
    report.stores = sorted({str(s.path) for s in stores.stores})
    return report
