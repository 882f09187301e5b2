"""Hindsight relabelling: every program becomes a correct solution of some task.

A program's own outputs replace the task's outputs; on that synthetic task the program is
right by construction, so even a program that is wrong on the real task is a valid
(prompt -> code) training example. SOAR builds two datasets per task from its archive
(DESIGN.md section 3):

- sampling data, "greedy-diverse", 50 per task: half the best programs, half the weakest
  (0 train pairs right first, then 1, then under half), deduplicated by their outputs and
  passed through the reuse filters; each relabelled, pair order shuffled, the target being
  the fenced code alone;
- refinement data, 50 per task: (parent + feedback) -> child where the child is correct,
  balanced over the parent's accuracy bucket (zero, low <= 0.34, medium < 0.98, all train
  right but test wrong).

On unlabelled tasks (test-time training) "best" uses train accuracy only, and a child is
"correct" when it is right on every train pair and in the heaviest majority-vote group,
whose test outputs stand in for the unknown ground truth.

Also: the archive's dataset files, Parquet in the released SOAR schema (`task_id`, `code`,
`predicted_train_output`, `predicted_test_output`, `correct_train_input`,
`correct_test_input`, plus our columns), and JSONL for chat examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from soar_async.arc import Pair, Task
from soar_async.prompts import PromptTemplates, fenced, refine_messages, sampling_messages
from soar_async.records import ProgramRecord
from soar_async.rex import task_seed
from soar_async.scoring import VoteKey, passes_filters, vote_groups

N_PER_TASK = 50
BUCKETS = ("zero", "low", "medium", "train_only")
"""Parent accuracy buckets for refinement data, in round-robin order."""

LOW_MAX = 0.34
MEDIUM_MAX = 0.98


# --------------------------------------------------------------------------- relabelled tasks


def can_relabel(record: ProgramRecord) -> bool:
    """Only a program with a valid grid for every input defines a complete synthetic task."""
    return record.all_outputs_valid


def relabel_task(task: Task, record: ProgramRecord, *, task_id: str | None = None) -> Task:
    """`task` with every output (train and test) replaced by what `record` produced."""
    if record.task_id != task.id:
        raise ValueError(f"record {record.id} is for task {record.task_id}, not {task.id}")
    if not can_relabel(record):
        raise ValueError(f"record {record.id} has missing outputs; it cannot be relabelled")
    if len(record.train_outputs) != len(task.train) or len(record.test_outputs) != len(task.test):
        raise ValueError(f"record {record.id} does not match the pairs of task {task.id}")
    train = tuple(Pair(p.input, o) for p, o in zip(task.train, record.train_outputs, strict=True))
    test = tuple(Pair(p.input, o) for p, o in zip(task.test, record.test_outputs, strict=True))
    return Task(id=task_id or task.id, train=train, test=test, source=f"relabel:{record.id}")


def shuffled(
    task: Task, records: Sequence[ProgramRecord], rng: np.random.Generator
) -> tuple[Task, list[ProgramRecord]]:
    """Shuffle the train pairs and the test pairs of `task`, and the records' outputs alike.

    The records are re-judged against the shuffled task, so their correctness flags stay true.
    """
    tr = [int(i) for i in rng.permutation(len(task.train))]
    te = [int(i) for i in rng.permutation(len(task.test))]
    new_task = Task(
        id=task.id,
        train=tuple(task.train[i] for i in tr),
        test=tuple(task.test[i] for i in te),
        source=task.source,
    )
    out = []
    for r in records:
        moved = replace(
            r,
            train_outputs=[r.train_outputs[i] for i in tr],
            train_errors=[r.train_errors[i] for i in tr],
            train_correct=[r.train_correct[i] for i in tr],
            test_outputs=[r.test_outputs[i] for i in te],
            test_errors=[r.test_errors[i] for i in te],
            test_correct=[r.test_correct[i] for i in te],
        )
        out.append(moved.rescored(new_task))
    return new_task, out


def _rng(seed: int, task_id: str, salt: str) -> np.random.Generator:
    return np.random.default_rng([task_seed(task_id, seed), task_seed(salt)])


# --------------------------------------------------------------------------- test-time labels


def pseudo_test_key(records: Iterable[ProgramRecord]) -> VoteKey | None:
    """The heaviest majority-vote group's test outputs: the stand-in ground truth at test time."""
    groups = vote_groups(list(records))
    return groups[0].key if groups else None


def _is_test_time(task: Task, test_time: bool | None) -> bool:
    return (not task.has_solutions) if test_time is None else test_time


# --------------------------------------------------------------------------- sampling data


def _best_rank(r: ProgramRecord, use_test: bool) -> tuple:
    test = (r.test_accuracy or 0.0) if use_test else 0.0
    return (-r.train_accuracy, -test, len(r.code), r.id)


def eligible(
    task: Task, records: Iterable[ProgramRecord], *, apply_filters: bool = True
) -> list[ProgramRecord]:
    """Records of `task` that can be relabelled and pass the reuse filters, one per program id."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.task_id != task.id or r.id in seen or not can_relabel(r):
            continue
        if apply_filters and not passes_filters(r, task)[0]:
            continue
        seen.add(r.id)
        out.append(r)
    return out


def select_sampling(
    task: Task,
    records: Iterable[ProgramRecord],
    n: int = N_PER_TASK,
    *,
    seed: int = 0,
    test_time: bool | None = None,
    apply_filters: bool = True,
) -> list[ProgramRecord]:
    """SOAR's greedy-diverse choice of programs to relabel for sampling data.

    First half: the best programs (train accuracy, then test accuracy where ground truth is
    known and `test_time` is off, shorter code first, then id). Second half: the weakest,
    tier by tier (no train pair right, then exactly one, then under half), in a seeded
    random order inside each tier. No two chosen programs have the same outputs (train and
    test together). If the weak tiers run out, the rest is filled from the best ranking.
    """
    use_test = not _is_test_time(task, test_time)
    # Filters are checked lazily, only on candidates about to be taken: most of a task's
    # thousands of programs are never reached, and the hard-coding check is the costly part.
    pool = eligible(task, records, apply_filters=False)
    ranked = sorted(pool, key=lambda r: _best_rank(r, use_test))
    chosen: list[ProgramRecord] = []
    seen_outputs: set[tuple] = set()
    rejected: set[str] = set()

    def take(cands: Iterable[ProgramRecord], limit: int) -> None:
        for r in cands:
            if len(chosen) >= limit:
                return
            if r.id in rejected:
                continue
            key = r.outputs_key()
            if key in seen_outputs:
                continue
            if apply_filters and not passes_filters(r, task)[0]:
                rejected.add(r.id)
                continue
            seen_outputs.add(key)
            chosen.append(r)

    take(ranked, n // 2)
    rng = _rng(seed, task.id, "sampling")
    by_id = sorted(pool, key=lambda r: r.id)
    tiers = (
        [r for r in by_id if r.n_train_correct == 0],
        [r for r in by_id if r.n_train_correct == 1],
        [r for r in by_id if r.n_train_correct > 1 and r.train_accuracy < 0.5],
    )
    for tier in tiers:
        order = [tier[int(i)] for i in rng.permutation(len(tier))]
        take(order, n)
    take(ranked, n)
    return chosen


def sampling_example(
    task: Task, record: ProgramRecord, rng: np.random.Generator, templates: PromptTemplates | None = None
) -> dict[str, Any]:
    """One chat example: the relabelled, shuffled task as prompt, the fenced code as answer."""
    synthetic, _ = shuffled(relabel_task(task, record), [], rng)
    messages = [
        *sampling_messages(synthetic, templates),
        {"role": "assistant", "content": fenced(record.code)},
    ]
    return {
        "kind": "sample",
        "task_id": task.id,
        "program_id": record.id,
        "parent_id": None,
        "messages": messages,
    }


def sampling_data(
    task: Task,
    records: Iterable[ProgramRecord],
    n: int = N_PER_TASK,
    *,
    seed: int = 0,
    test_time: bool | None = None,
    templates: PromptTemplates | None = None,
) -> list[dict[str, Any]]:
    """`select_sampling` turned into chat examples (seeded pair shuffles)."""
    chosen = select_sampling(task, records, n, seed=seed, test_time=test_time)
    rng = _rng(seed, task.id, "sampling-shuffle")
    return [sampling_example(task, r, rng, templates) for r in chosen]


# --------------------------------------------------------------------------- refinement data


def parent_bucket(parent: ProgramRecord, *, test_right: bool) -> str | None:
    """Accuracy bucket of a refinement's parent; None when the parent was already right."""
    if parent.all_train_correct:
        return None if test_right else "train_only"
    h = parent.train_accuracy
    if h == 0.0:
        return "zero"
    if h <= LOW_MAX:
        return "low"
    # h >= MEDIUM_MAX without every pair right needs 50+ train pairs; it stays "medium".
    return "medium"


def select_refinement(
    task: Task,
    records: Iterable[ProgramRecord],
    n: int = N_PER_TASK,
    *,
    seed: int = 0,
    test_time: bool | None = None,
    apply_filters: bool = True,
) -> list[tuple[ProgramRecord, ProgramRecord, str]]:
    """(parent, child, bucket) triples where a refinement produced a correct child.

    Correct = right on every train pair and on every known test output; at test time, right
    on every train pair and in the heaviest vote group. Triples are taken round-robin over
    the buckets (zero, low, medium, train_only) so that each parent accuracy level is
    represented as evenly as the archive allows; inside a bucket, order is seeded random
    with distinct parents before repeated ones.
    """
    all_records = [r for r in records if r.task_id == task.id]
    by_id = {r.id: r for r in all_records}
    tt = _is_test_time(task, test_time)
    key = pseudo_test_key(all_records) if tt else None

    def test_right(r: ProgramRecord) -> bool:
        if tt:
            return key is not None and r.test_key() == key
        return r.test_accuracy == 1.0

    buckets: dict[str, list[tuple[ProgramRecord, ProgramRecord]]] = {b: [] for b in BUCKETS}
    seen: set[tuple[str, str]] = set()
    for child in sorted(all_records, key=lambda r: r.id):
        if child.parent_id is None or child.parent_id not in by_id or (child.parent_id, child.id) in seen:
            continue
        if not (child.all_train_correct and can_relabel(child) and test_right(child)):
            continue
        if apply_filters and not passes_filters(child, task)[0]:
            continue
        parent = by_id[child.parent_id]
        b = parent_bucket(parent, test_right=test_right(parent))
        if b is None:
            continue
        seen.add((parent.id, child.id))
        buckets[b].append((parent, child))

    rng = _rng(seed, task.id, "refinement")
    ordered: dict[str, list[tuple[ProgramRecord, ProgramRecord]]] = {}
    for b, items in buckets.items():
        perm = [items[int(i)] for i in rng.permutation(len(items))]
        count: dict[str, int] = {}
        ranks = []
        for p, _c in perm:
            ranks.append(count.get(p.id, 0))
            count[p.id] = ranks[-1] + 1
        ordered[b] = [x for _, x in sorted(zip(ranks, perm, strict=True), key=lambda t: t[0])]
    out: list[tuple[ProgramRecord, ProgramRecord, str]] = []
    depth = 0
    while len(out) < n and any(depth < len(v) for v in ordered.values()):
        for b in BUCKETS:
            if depth < len(ordered[b]) and len(out) < n:
                p, c = ordered[b][depth]
                out.append((p, c, b))
        depth += 1
    return out


def refinement_example(
    task: Task,
    parent: ProgramRecord,
    child: ProgramRecord,
    rng: np.random.Generator,
    templates: PromptTemplates | None = None,
    bucket: str | None = None,
) -> dict[str, Any]:
    """One chat example: refine prompt for `parent` on the task as `child` solves it -> child's code.

    The task is relabelled with the child's outputs (equal to the truth where it is known,
    since the child is correct), shuffled, and the parent's feedback computed against it.
    """
    synthetic, (moved_parent,) = shuffled(relabel_task(task, child), [parent], rng)
    messages = [
        *refine_messages(synthetic, moved_parent, templates),
        {"role": "assistant", "content": fenced(child.code)},
    ]
    return {
        "kind": "refine",
        "task_id": task.id,
        "program_id": child.id,
        "parent_id": parent.id,
        "bucket": bucket,
        "messages": messages,
    }


def refinement_data(
    task: Task,
    records: Iterable[ProgramRecord],
    n: int = N_PER_TASK,
    *,
    seed: int = 0,
    test_time: bool | None = None,
    templates: PromptTemplates | None = None,
) -> list[dict[str, Any]]:
    """`select_refinement` turned into chat examples (seeded pair shuffles)."""
    triples = select_refinement(task, records, n, seed=seed, test_time=test_time)
    rng = _rng(seed, task.id, "refinement-shuffle")
    return [refinement_example(task, p, c, rng, templates, b) for p, c, b in triples]


# --------------------------------------------------------------------------- files


def parquet_schema() -> Any:
    """The released SOAR columns first, then ours. Grids are int8 (colours 0..9)."""
    import pyarrow as pa

    grid = pa.list_(pa.list_(pa.int8()))
    return pa.schema(
        [
            ("task_id", pa.string()),
            ("code", pa.string()),
            ("predicted_train_output", pa.list_(grid)),
            ("predicted_test_output", pa.list_(grid)),
            ("correct_train_input", pa.list_(pa.bool_())),
            ("correct_test_input", pa.list_(pa.bool_())),
            ("id", pa.string()),
            ("task_digest", pa.string()),
            ("parent_id", pa.string()),
            ("origin", pa.string()),
            ("model_version", pa.string()),
            ("generation", pa.int32()),
            ("train_errors", pa.list_(pa.string())),
            ("test_errors", pa.list_(pa.string())),
            ("extra_json", pa.string()),
        ]
    )


def _columns(records: Sequence[ProgramRecord]) -> dict[str, list[Any]]:
    return {
        "task_id": [r.task_id for r in records],
        "code": [r.code for r in records],
        "predicted_train_output": [r.train_outputs for r in records],
        "predicted_test_output": [r.test_outputs for r in records],
        "correct_train_input": [r.train_correct for r in records],
        "correct_test_input": [r.test_correct for r in records],
        "id": [r.id for r in records],
        "task_digest": [r.task_digest for r in records],
        "parent_id": [r.parent_id for r in records],
        "origin": [r.origin for r in records],
        "model_version": [r.model_version for r in records],
        "generation": [r.generation for r in records],
        "train_errors": [r.train_errors for r in records],
        "test_errors": [r.test_errors for r in records],
        "extra_json": [json.dumps(r.extra, sort_keys=True) if r.extra else None for r in records],
    }


def write_parquet(records: Iterable[ProgramRecord], path: str | Path, *, row_group_size: int = 10_000) -> int:
    """Write records as Parquet (zstd), written to a temporary name then renamed; returns the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    schema = parquet_schema()
    n = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        batch: list[ProgramRecord] = []
        for r in records:
            batch.append(r)
            if len(batch) >= row_group_size:
                writer.write_table(pa.Table.from_pydict(_columns(batch), schema=schema))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pydict(_columns(batch), schema=schema))
            n += len(batch)
    tmp.replace(path)
    return n


def _from_row(row: dict[str, Any]) -> ProgramRecord:
    train = list(row.get("predicted_train_output") or [])
    test = list(row.get("predicted_test_output") or [])

    def errors(name: str, outs: list[Any]) -> list[str | None]:
        errs = row.get(name)
        if errs is None or len(errs) != len(outs):  # released data has no error columns
            return [None if o is not None else "no output" for o in outs]
        return list(errs)

    extra = row.get("extra_json")
    test_correct = row.get("correct_test_input")
    # Released rows carry neither an id nor the task's grids: their digest is "" (unknown)
    # and their id is derived from that, as for any record.
    kw: dict[str, Any] = {
        "task_id": str(row["task_id"]),
        "task_digest": row.get("task_digest") or "",
        "code": str(row["code"]),
        "train_outputs": train,
        "test_outputs": test,
        "train_errors": errors("train_errors", train),
        "test_errors": errors("test_errors", test),
        "train_correct": [bool(c) for c in (row.get("correct_train_input") or [])],
        "test_correct": list(test_correct) if test_correct is not None else [None] * len(test),
        "parent_id": row.get("parent_id"),
        "origin": row.get("origin") or "sample",
        "model_version": row.get("model_version") or "",
        "generation": int(row.get("generation") or 0),
        "id": row.get("id") or "",
        "extra": json.loads(extra) if extra else {},
    }
    return ProgramRecord(**kw)


def iter_parquet(path: str | Path, *, batch_size: int = 10_000) -> Iterator[ProgramRecord]:
    """Stream records from our Parquet files or the released SOAR ones (missing columns defaulted)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield _from_row(row)


def read_parquet(path: str | Path) -> list[ProgramRecord]:
    return list(iter_parquet(path))


def write_jsonl(examples: Iterable[dict[str, Any]], path: str | Path) -> int:
    """One JSON object per line (chat examples for the trainer); returns the count."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
