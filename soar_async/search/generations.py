"""What each generation of a run did: per (generation, model version) counts, usable share and vote score.

A run that trains between generations should get better from one to the next: more of its
completions usable as training data, a higher train accuracy, a better vote. Those numbers
are read here from the archive alone (read-only, like `soar results`), for `soar results`
(the per-generation table, `generations` in `--json`) and the HTML report (`soar report`).

Definitions, per (generation, model version) of the slots that wrote the completions:
- completions: every completion row, code-less ones included; a duplicate counts as written;
- usable: a completion whose program returned a valid grid for every input and passes the
  reuse filters (`scoring.passes_filters`); code-less completions, and those whose program
  was never evaluated, are not usable. `usable_share` is over all completions;
- mean train accuracy: over all completions, a non-usable one counting 0 (so it measures
  what the generation wrote that could be reused, not what merely ran);
- programs: distinct programs (by norm) the generation wrote that were evaluated, imports included;
- score: the vote over that generation's programs only, each counted as often as that
  generation wrote it (`ArchiveStore.records` counts over all generations), scored on the
  tasks of the generation whose test outputs are known.

Imported and registered programs (generation -1) have no completions: each counts once,
as in the archive's vote, and their shares are over those programs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from soar_async.arc import Task
from soar_async.records import ProgramRecord
from soar_async.scoring import VOTE_C, passes_filters, score_task, vote
from soar_async.search.store import ArchiveStore

_T = TypeVar("_T")

Row = tuple[int, str]
"""(generation, model version)."""


@dataclass
class GenerationStats:
    """One (generation, model version) of a run; see the module doc for the definitions."""

    generation: int
    model_version: str
    tasks: int
    """Tasks that this generation asked the model about (or imported programs for)."""
    programs: int
    """Distinct evaluated programs this generation wrote (earlier generations' included)."""
    new_programs: int
    """Of those, the ones first written by this generation."""
    completions: int
    without_program: int
    usable: int
    """Completions with a usable program (imported programs: each once)."""
    usable_share: float | None
    """usable / completions (imports: / programs); None when there is nothing to count."""
    mean_train_accuracy: float | None
    right_on_train: int
    """Distinct programs right on every train pair."""
    tasks_right_on_train: int
    """Tasks with at least one such program."""
    tokens: int
    scored: int
    """Tasks of this generation whose test outputs are known: the score's denominator."""
    solved: int
    score: float | None
    """Mean per-task score of this generation's own vote; None when no task can be scored."""

    @property
    def label(self) -> str:
        """How tables name the generation: "import" for -1 (imported or registered programs)."""
        return "import" if self.generation < 0 else str(self.generation)


@dataclass
class _Acc:
    """Running sums of one row over the tasks."""

    tasks: int = 0
    programs: int = 0
    new_programs: int = 0
    completions: int = 0
    without_program: int = 0
    weight: int = 0
    usable: int = 0
    accuracy: float = 0.0
    right_on_train: int = 0
    tasks_right_on_train: int = 0
    tokens: int = 0
    scores: list[float] = field(default_factory=list)


def _usable(rec: ProgramRecord, task: Task) -> bool:
    """Fit to be reused as training data: a valid grid everywhere and no reuse filter failed."""
    return rec.all_outputs_valid and passes_filters(rec, task)[0]


def _task_rows(
    holders: Sequence[ArchiveStore], task_id: str
) -> tuple[dict[str, ProgramRecord], dict[Row, dict[str | None, int]], dict[Row, int]]:
    """A task's programs by norm and its per-row completion counts and tokens, merged over the
    stores that hold it (a run whose partition count changed spreads a task over several)."""
    recs: dict[str, ProgramRecord] = {}
    comps: dict[Row, dict[str | None, int]] = {}
    tokens: dict[Row, int] = {}
    for store in holders:
        for norm, rec in store.norm_records(task_id):
            recs.setdefault(norm, rec)
        for row, counts in store.generation_completions(task_id).items():
            into = comps.setdefault(row, {})
            for norm, n in counts.items():
                into[norm] = into.get(norm, 0) + n
        for row, n in store.generation_tokens(task_id).items():
            tokens[row] = tokens.get(row, 0) + n
    return recs, comps, tokens


def _add_task(
    acc: dict[Row, _Acc], holders: Sequence[ArchiveStore], task_id: str, *, c: float, n_attempts: int
) -> None:
    task = holders[0].task(task_id)
    recs, comps, tokens = _task_rows(holders, task_id)
    written = {norm for counts in comps.values() for norm in counts if norm is not None}
    usable = {norm: _usable(rec, task) for norm, rec in recs.items()}
    first_row: dict[str, Row] = {norm: (rec.generation, rec.model_version) for norm, rec in recs.items()}
    imports: dict[Row, dict[str | None, int]] = {}
    for norm, rec in recs.items():
        if norm not in written:  # no completion anywhere: imported or registered, counted once
            imports.setdefault((rec.generation, rec.model_version), {})[norm] = 1
    for row in sorted(set(comps) | set(tokens) | set(imports)):
        a = acc.setdefault(row, _Acc())
        counts = comps.get(row, {})
        imported = imports.get(row, {})
        a.tasks += 1
        a.tokens += tokens.get(row, 0)
        n_comp = sum(counts.values())
        a.completions += n_comp
        a.without_program += counts.get(None, 0)
        a.weight += n_comp + sum(imported.values())
        cands = [(norm, n) for norm, n in (*counts.items(), *imported.items()) if norm is not None and norm in recs]
        right = 0
        for norm, n in cands:
            rec = recs[norm]
            if usable[norm]:
                a.usable += n
                a.accuracy += n * rec.train_accuracy
            right += int(rec.all_train_correct)
        a.programs += len(cands)
        a.new_programs += sum(1 for norm, _ in cands if first_row[norm] == row)
        a.right_on_train += right
        a.tasks_right_on_train += int(right > 0)
        if task.has_solutions:
            weighted = [(recs[norm].test_outputs, recs[norm].train_accuracy) for norm, n in cands for _ in range(n)]
            a.scores.append(score_task(task, vote(weighted, c=c, n_attempts=n_attempts)))


def _by_task(stores: Sequence[ArchiveStore]) -> dict[str, list[ArchiveStore]]:
    by_task: dict[str, list[ArchiveStore]] = {}
    for s in stores:
        for tid in s.task_ids():
            by_task.setdefault(tid, []).append(s)
    return dict(sorted(by_task.items()))


def _stats(row: Row, a: _Acc) -> GenerationStats:
    gen, version = row
    scores = a.scores
    return GenerationStats(
        generation=gen,
        model_version=version,
        tasks=a.tasks,
        programs=a.programs,
        new_programs=a.new_programs,
        completions=a.completions,
        without_program=a.without_program,
        usable=a.usable,
        usable_share=a.usable / a.weight if a.weight else None,
        mean_train_accuracy=a.accuracy / a.weight if a.weight else None,
        right_on_train=a.right_on_train,
        tasks_right_on_train=a.tasks_right_on_train,
        tokens=a.tokens,
        scored=len(scores),
        solved=sum(1 for s in scores if s == 1.0),
        score=sum(scores) / len(scores) if scores else None,
    )


def generation_stats(
    source: Path | Sequence[ArchiveStore], *, c: float = VOTE_C, n_attempts: int = 2
) -> list[GenerationStats]:
    """Per (generation, model version) statistics of a run (a run directory, read-only, or open stores),
    in generation order; see the module doc for what each number means."""
    if isinstance(source, Path):
        return _on_run(source, lambda stores: generation_stats(stores, c=c, n_attempts=n_attempts))
    acc: dict[Row, _Acc] = {}
    for tid, holders in _by_task(source).items():
        _add_task(acc, holders, tid, c=c, n_attempts=n_attempts)
    return [_stats(row, a) for row, a in sorted(acc.items())]


def task_stats(
    source: Path | Sequence[ArchiveStore], *, c: float = VOTE_C, n_attempts: int = 2
) -> dict[Row, dict[str, GenerationStats]]:
    """The same statistics per task: {(generation, model version): {task id: stats}}.

    Why: two searches of the same tasks differ by sampling noise and by which tasks happen to
    go well; comparing them task by task (paired) shows how much of a difference is noise from
    one search of each (`soar bench learning`'s verdict)."""
    if isinstance(source, Path):
        return _on_run(source, lambda stores: task_stats(stores, c=c, n_attempts=n_attempts))
    out: dict[Row, dict[str, GenerationStats]] = {}
    for tid, holders in _by_task(source).items():
        acc: dict[Row, _Acc] = {}
        _add_task(acc, holders, tid, c=c, n_attempts=n_attempts)
        for row, a in sorted(acc.items()):
            out.setdefault(row, {})[tid] = _stats(row, a)
    return out


def _on_run(run_dir: Path, read: Callable[[Sequence[ArchiveStore]], _T]) -> _T:
    """`read` on a run directory's stores, opened read-only and closed after."""
    from soar_async.search.results import open_archive  # results imports this module

    stores = open_archive(run_dir)
    try:
        return read(stores)
    finally:
        for s in stores:
            s.close()
