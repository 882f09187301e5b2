"""What a search run holds, read from its archive alone: `soar results`.

Reads the archive store(s) of any run directory read-only (no bus: a live run keeps writing,
SQLite WAL lets us read beside it) and, per task, counts programs and completions, finds the
best train accuracy, takes the archive's vote (or the attempts of a submission file) and
scores them where the test outputs are known (the `tasks` table keeps each task as searched,
test outputs included when they were known). Totals are ARC Prize style: the score is the
mean of the per-task scores (fraction of test inputs right with one of the attempts).
"""

from __future__ import annotations

import io
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soar_async.arc import Grid, Task
from soar_async.scoring import read_submission, score_submission, score_task, vote
from soar_async.search.generations import GenerationStats, generation_stats
from soar_async.search.plan import norm_key
from soar_async.search.store import ArchiveStore


class NoArchive(ValueError):
    """The directory holds no archive store (not a run of the LLM search, or no run at all)."""


@dataclass
class TaskResult:
    """One task of a run, as `soar results` shows it."""

    task_id: str
    state: str
    """"done", "running" (a live run, or one stopped early) or "imported" (programs imported,
    never searched)."""
    programs: int
    """Distinct programs evaluated (stored), imported ones included."""
    completions: int
    without_program: int
    """Completions in which no code was found."""
    duplicates: int
    """Completions whose program (normalised code) an earlier completion already wrote."""
    best_train_accuracy: float
    right_on_train: int
    """Programs right on every train pair."""
    tokens: int
    test_inputs: int
    attempts_right: list[list[bool] | None]
    """Per test input: whether each attempt (`vote.attempts` of them) is right; None where the
    test output is unknown. A missing attempt counts as wrong."""
    score: float | None
    """Fraction of test inputs right, None unless every test output is known."""


@dataclass
class RunResults:
    """A whole run: the `--json` output of `soar results`."""

    run_dir: str
    attempts_from: str
    """"archive vote" or the submission file scored."""
    tasks: int
    scored: int
    """Tasks whose test outputs are all known: the score's denominator."""
    score: float | None
    """Mean of the per-task scores over the scored tasks; None when no task can be scored."""
    solved: list[str]
    programs: int
    completions: int
    tokens: int
    per_task: dict[str, TaskResult] = field(default_factory=dict)
    generations: list[GenerationStats] = field(default_factory=list)
    """Per (generation, model version): programs, usable share, mean train accuracy, that
    generation's own vote score (`soar_async.search.generations`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_archive(run_dir: Path) -> list[ArchiveStore]:
    """The run's archive stores, read-only; `NoArchive` naming the directory and what is missing."""
    if not run_dir.is_dir():
        raise NoArchive(f"{run_dir}: no such run directory")
    paths = sorted(run_dir.glob("archive*.sqlite"))
    if not paths:
        present = [n for n in ("report.json", "submission.json") if (run_dir / n).is_file()]
        hint = (
            f" (it holds {' and '.join(present)} only: a run without the LLM search, e.g. the baseline `soar solve`)"
            if present
            else ""
        )
        raise NoArchive(f"{run_dir}: no archive store (archive*.sqlite) in this run directory{hint}")
    stores = []
    try:
        for p in paths:
            store = ArchiveStore.open_readonly(p)
            stores.append(store)
            has_schema = store.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tasks'").fetchone()
            if not has_schema:
                raise NoArchive(f"{p}: not an archive store (no tasks table)")
    except sqlite3.Error as e:
        for s in stores:
            s.close()
        raise NoArchive(f"{run_dir}: cannot read the archive: {e}") from None
    except NoArchive:
        for s in stores:
            s.close()
        raise
    return stores


def _merged_attempts(holders: Sequence[ArchiveStore], task_id: str, *, c: float, n_attempts: int) -> list[list[Grid]]:
    """The vote when a task's programs are spread over several stores (the partition count changed)."""
    if len(holders) == 1:
        return holders[0].attempts(task_id, c=c, n_attempts=n_attempts)
    weights: dict[str, tuple[list[Grid | None], float, int]] = {}
    for store in holders:
        for r in store.records(task_id):
            key = norm_key(r.code)
            count = r.extra["count"] + (weights[key][2] if key in weights else 0)
            weights[key] = (r.test_outputs, r.train_accuracy, count)
    cands = [(outs, h) for outs, h, n in weights.values() for _ in range(n)]
    return vote(cands, c=c, n_attempts=n_attempts)


def _right(task: Task, attempts: Sequence[Sequence[Grid]], n_attempts: int) -> list[list[bool] | None]:
    out: list[list[bool] | None] = []
    for i, pair in enumerate(task.test):
        if pair.output is None:
            out.append(None)
            continue
        tries = list(attempts[i]) if i < len(attempts) else []
        out.append([k < len(tries) and tries[k] == pair.output for k in range(n_attempts)])
    return out


def gather_results(
    run_dir: Path,
    *,
    c: float,
    n_attempts: int = 2,
    submission: Path | None = None,
) -> RunResults:
    """Everything `soar results` shows (see the module doc). With `submission`, its attempts
    are scored instead of the archive's vote (tasks it lacks score 0)."""
    stores = open_archive(run_dir)
    try:
        return gather_from_stores(stores, run_dir, c=c, n_attempts=n_attempts, submission=submission)
    except sqlite3.Error as e:
        raise NoArchive(f"{run_dir}: cannot read the archive: {e}") from None
    finally:
        for s in stores:
            s.close()


def gather_from_stores(
    stores: list[ArchiveStore],
    run_dir: Path,
    *,
    c: float,
    n_attempts: int,
    submission: Path | None = None,
    attempts_out: dict[str, list[list[Grid]]] | None = None,
) -> RunResults:
    """`gather_results` over stores already open (`open_archive`), for readers that go on
    reading them (the HTML report). `attempts_out`, when given, receives each task's attempts
    (the grids scored), so that a reader drawing them need not vote a second time."""
    return _gather(stores, run_dir, c=c, n_attempts=n_attempts, submission=submission, attempts_out=attempts_out)


def _gather(
    stores: list[ArchiveStore],
    run_dir: Path,
    *,
    c: float,
    n_attempts: int,
    submission: Path | None,
    attempts_out: dict[str, list[list[Grid]]] | None = None,
) -> RunResults:
    by_task: dict[str, list[ArchiveStore]] = {}
    for s in stores:
        for tid in s.task_ids():
            by_task.setdefault(tid, []).append(s)
    tasks = {tid: holders[0].task(tid) for tid, holders in sorted(by_task.items())}

    sub_attempts: dict[str, list[list[Grid]]] | None = None
    sub_scores: dict[str, float] = {}
    if submission is not None:
        sub = read_submission(submission, tasks.values())
        sub_attempts = {
            tid: [[it[k] for k in ("attempt_1", "attempt_2") if k in it] for it in items] for tid, items in sub.items()
        }
        sub_scores = score_submission(sub, [t for t in tasks.values() if t.has_solutions])["per_task"]

    per_task: dict[str, TaskResult] = {}
    for tid, task in tasks.items():
        holders = by_task[tid]
        statuses = [s.status(tid) for s in holders]
        comp = [s.completion_stats(tid) for s in holders]
        gens = [g for g in (s.latest_generation(tid) for s in holders) if g is not None]
        if sub_attempts is not None:
            attempts = sub_attempts.get(tid, [])
            score = sub_scores.get(tid)
        else:
            attempts = _merged_attempts(holders, tid, c=c, n_attempts=n_attempts)
            score = score_task(task, attempts) if task.has_solutions else None
        if attempts_out is not None:
            attempts_out[tid] = [list(a) for a in attempts]
        if gens and max(gens) < 0:
            state = "imported"
        else:
            state = "done" if all(st.state == "done" for st in statuses) else "running"
        per_task[tid] = TaskResult(
            task_id=tid,
            state=state,
            programs=sum(st.programs for st in statuses),
            completions=sum(x["completions"] for x in comp),
            without_program=sum(x["without_program"] for x in comp),
            duplicates=sum(x["duplicates"] for x in comp),
            best_train_accuracy=max(st.best_fitness for st in statuses),
            right_on_train=sum(st.correct for st in statuses),
            tokens=sum(s.tokens(tid) for s in holders),
            test_inputs=len(task.test),
            attempts_right=_right(task, attempts, n_attempts if sub_attempts is None else 2),
            score=score,
        )
    scores = [r.score for r in per_task.values() if r.score is not None]
    return RunResults(
        run_dir=str(run_dir),
        attempts_from="archive vote" if submission is None else str(submission),
        tasks=len(per_task),
        scored=len(scores),
        score=sum(scores) / len(scores) if scores else None,
        solved=sorted(tid for tid, r in per_task.items() if r.score == 1.0),
        programs=sum(r.programs for r in per_task.values()),
        completions=sum(r.completions for r in per_task.values()),
        tokens=sum(r.tokens for r in per_task.values()),
        per_task=per_task,
        generations=generation_stats(stores, c=c, n_attempts=n_attempts),
    )


def _marks(right: list[list[bool] | None]) -> str:
    return " ".join("?" if r is None else "".join("✓" if ok else "✗" for ok in r) for r in right)


def render_results(res: RunResults, *, width: int | None = None) -> str:
    """The per-task table and the totals, as text (rich)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{res.run_dir}: attempts from {res.attempts_from}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption="compl.: completions; no code: completions without a program; dups: completions repeating a "
        "program; best h: best train accuracy; all train: programs right on every train pair; attempts: per test "
        "input, each attempt right (✓) or not (✗), ? where the answer is unknown",
        caption_justify="left",
    )
    for name, justify in (
        ("task", "left"),
        ("state", "left"),
        ("programs", "right"),
        ("compl.", "right"),
        ("no code", "right"),
        ("dups", "right"),
        ("best h", "right"),
        ("all train", "right"),
        ("tokens", "right"),
        ("attempts", "left"),
        ("score", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in res.per_task.values():
        table.add_row(
            r.task_id,
            r.state,
            str(r.programs),
            str(r.completions),
            str(r.without_program),
            str(r.duplicates),
            f"{r.best_train_accuracy:.2f}",
            str(r.right_on_train),
            str(r.tokens),
            _marks(r.attempts_right),
            "-" if r.score is None else f"{r.score:.2f}",
        )
    gens = generations_table(res.generations) if len(res.generations) > 1 else None
    if width is None:  # the terminal's, or wider: a row that wraps reads better than cut-off numbers
        measure = Console(file=io.StringIO(), width=1000).measure
        need = max(measure(t).maximum for t in (table, gens) if t is not None)
        width = max(need, shutil.get_terminal_size((120, 24)).columns)
    console = Console(file=io.StringIO(), width=width, highlight=False)
    console.print(table)
    if res.score is None:
        score = "score unknown (no task's test outputs are known)"
    else:
        of = f"{res.scored} task(s) with known test outputs" if res.scored < res.tasks else f"{res.tasks} task(s)"
        score = f"score {res.score * 100:.2f}% of {of}"
    solved = f" ({', '.join(res.solved)})" if 0 < len(res.solved) <= 10 else ""
    console.print(
        f"{res.tasks} task(s), {len(res.solved)} solved{solved}, {score}; "
        f"{res.programs} programs, {res.completions} completions, {res.tokens} tokens",
        soft_wrap=True,
    )
    if gens is not None:
        console.print()
        console.print(gens)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def generations_table(stats: Sequence[GenerationStats]) -> Any:
    """The per-(generation, model version) table of `soar results` (a rich Table)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="per generation",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption="usable: share of completions whose program gives a valid grid everywhere and passes the reuse "
        "filters; mean h: mean train accuracy over completions (not usable: 0); all train: programs right on "
        "every train pair (tasks with one); score: the vote of that generation's programs alone",
        caption_justify="left",
    )
    for name in ("gen", "model", "tasks", "programs", "compl.", "usable", "mean h", "all train", "tokens", "score"):
        table.add_column(name, justify="left" if name in ("gen", "model") else "right", no_wrap=True)
    for g in stats:
        table.add_row(
            g.label,
            g.model_version or "-",
            str(g.tasks),
            str(g.programs),
            str(g.completions),
            _share(g.usable_share),
            _share(g.mean_train_accuracy),
            f"{g.right_on_train} ({g.tasks_right_on_train})",
            str(g.tokens),
            "-" if g.score is None else f"{g.score:.2f}",
        )
    return table
