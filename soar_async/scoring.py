"""Judging programs: output validation, fitness, reuse filters, the two-attempt vote, submissions.

Everything here is a pure function of grids and tasks, so the executor, the archive, the
conductor and offline scoring all agree on what "valid", "correct" and "solved" mean.

SOAR facts implemented (DESIGN.md section 3):
- a valid output is a non-empty rectangular grid of at most 30x30 integers 0..9;
- fitness h is the fraction of train pairs that are exactly right (not pixel accuracy);
- the final answer is a weighted majority vote: key = tuple of all test outputs of a
  program, weight = sum over its programs of (1 + c*h), c = 1000; the two heaviest keys
  are attempts 1 and 2; a task's score is the fraction of test inputs matched by either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from soar_async.arc import Grid, Task, check_grid
from soar_async.sandbox.harness import to_grid

VOTE_C = 1000.0
"""Weight of train accuracy in the vote: one fully-right program outweighs 1000 wrong ones."""

HARDCODE_LINE_CHARS = 200
"""A code line longer than this is taken as a pasted answer (SOAR's hard-coding filter)."""

HARDCODE_MIN_CELLS = 4
"""Grids smaller than this are not searched for in the code: `[[0]]` or `[[1, 2]]` appear in
honest programs as initial values, so finding them literally proves nothing."""

NEAR_CONSTANT_SHARE = 0.8
"""Outputs are near-constant when one grid makes up at least this share of the train outputs."""

IDENTITY_SHARE = 0.5
"""Outputs are identity-like when at least this share of them equals their input."""

FILL_GRID: Grid = [[0]]
"""What the submission writer puts where there is no attempt (Kaggle requires a grid)."""


# --------------------------------------------------------------------------- validation


def validate_output(obj: object) -> tuple[Grid | None, str | None]:
    """Normalise what `transform` returned into a grid, or say why it is not one.

    Returns `(grid, None)` or `(None, "invalid output: ...")`. A thin wrapper around the sandbox
    harness's `to_grid`, the one definition of a valid output, so native judging and the sandbox
    agree: a list/tuple of rows or a 2-D numpy array; rows lists, tuples or 1-D arrays; cells ints
    0..9, integral floats (LLM programs build grids with `np.zeros`; the reference compares lists
    with `==`, where `1.0 == 1`) or numpy integer/float scalars; not bools, NaN or subclasses;
    non-empty, rectangular, at most 30x30. The grid is a fresh list of lists of Python ints, so
    correctness is plain list equality afterwards.
    """
    kind, grid, detail = to_grid(obj)
    if kind is not None:
        return None, f"invalid output: {detail}"
    return grid, None


# --------------------------------------------------------------------------- fitness


def correctness(expected: Sequence[Grid | None], got: Sequence[Grid | None]) -> list[bool | None]:
    """Per pair: exactly right, wrong, or None where the true answer is unknown."""
    if len(expected) != len(got):
        raise ValueError(f"{len(got)} outputs for {len(expected)} pairs")
    return [None if e is None else (g is not None and g == e) for e, g in zip(expected, got, strict=True)]


def fitness(task: Task, train_outputs: Sequence[Grid | None]) -> float:
    """SOAR's h: the fraction of train pairs whose output is exactly right."""
    flags = correctness([p.output for p in task.train], train_outputs)
    return sum(1 for f in flags if f) / len(task.train)


# --------------------------------------------------------------------------- reuse filters


class _HasOutputs(Protocol):
    code: str
    train_outputs: list[Grid | None]
    test_outputs: list[Grid | None]


def _all_zero(g: Grid | None) -> bool:
    return g is not None and all(v == 0 for row in g for v in row)


def is_degenerate(record: _HasOutputs, task: Task) -> bool:
    """All test outputs are all-zero grids although no true train output is.

    Such a program "answers" by returning a blank canvas; relabelling it would teach the
    model that blank canvases are solutions.
    """
    if any(_all_zero(p.output) for p in task.train):
        return False
    outs = record.test_outputs
    return bool(outs) and all(_all_zero(g) for g in outs)


def _top_share(grids: Sequence[Grid | None]) -> float:
    keys = [grid_key(g) for g in grids if g is not None]
    if not keys:
        return 0.0
    best = max(keys.count(k) for k in set(keys))
    return best / len(grids)


def is_near_constant(record: _HasOutputs, task: Task, share: float = NEAR_CONSTANT_SHARE) -> bool:
    """The program returns (nearly) the same grid whatever the train input, unlike the task.

    One predicted grid makes up at least `share` of the train outputs, while the true outputs
    are more varied than that. A program that is right on every train pair is never flagged.
    Needs at least two train pairs.
    """
    if len(task.train) < 2:
        return False
    pred = _top_share(record.train_outputs)
    true = _top_share([p.output for p in task.train])
    return pred >= share and pred > true


def is_identity_like(record: _HasOutputs, task: Task, share: float = IDENTITY_SHARE) -> bool:
    """Outputs mostly equal their inputs, beyond what the task itself does.

    Counts, over every input (train and test), how often the output is the input unchanged,
    and compares with how often the task's true train outputs are their inputs.
    """
    inputs = task.inputs()
    outs = list(record.train_outputs) + list(record.test_outputs)
    if not inputs or len(outs) != len(inputs):
        return False
    pred = sum(1 for i, o in zip(inputs, outs, strict=True) if o is not None and o == i) / len(inputs)
    true = sum(1 for p in task.train if p.output == p.input) / len(task.train)
    return pred >= share and pred > true


def _squash(text: str) -> str:
    return "".join(text.split())


def is_hardcoded(record: _HasOutputs, task: Task | None = None) -> bool:
    """The code pastes answers: a line over 200 characters, or a predicted grid written literally.

    Grids are searched for as Python list literals with whitespace ignored; grids with fewer
    than `HARDCODE_MIN_CELLS` cells are not searched for (see there).
    """
    if any(len(line) > HARDCODE_LINE_CHARS for line in record.code.splitlines()):
        return True
    code = _squash(record.code)
    for g in list(record.train_outputs) + list(record.test_outputs):
        if g is None or len(g) * len(g[0]) < HARDCODE_MIN_CELLS:
            continue
        if _squash(repr(g)) in code or _squash(repr(tuple(tuple(r) for r in g))) in code:
            return True
    return False


def filter_reasons(record: _HasOutputs, task: Task) -> list[str]:
    """Names of the reuse filters that `record` fails (empty = fit for training data)."""
    checks = (
        ("degenerate", is_degenerate),
        ("near_constant", is_near_constant),
        ("identity_like", is_identity_like),
        ("hardcoded", is_hardcoded),
    )
    return [name for name, check in checks if check(record, task)]


def passes_filters(record: _HasOutputs, task: Task) -> tuple[bool, list[str]]:
    """Whether `record` may be reused as training data, and the failed filters if not."""
    reasons = filter_reasons(record, task)
    return not reasons, reasons


# --------------------------------------------------------------------------- vote

GridKey = tuple[tuple[int, ...], ...]
VoteKey = tuple[GridKey, ...]


def grid_key(grid: Grid) -> GridKey:
    """A hashable form of a grid."""
    return tuple(tuple(row) for row in grid)


def outputs_key(grids: Sequence[Grid | None]) -> tuple[GridKey | None, ...]:
    """A hashable form of a list of outputs (None stays None)."""
    return tuple(None if g is None else grid_key(g) for g in grids)


def _key_grid(key: GridKey) -> Grid:
    return [list(row) for row in key]


@dataclass(slots=True)
class VoteGroup:
    """Programs that agree on every test output, with their summed weight."""

    key: VoteKey
    weight: float
    count: int
    members: list[int] = field(default_factory=list)
    """Indices of the candidates in this group, in input order."""

    @property
    def outputs(self) -> list[Grid]:
        return [_key_grid(k) for k in self.key]


Candidate = Any
"""A ProgramRecord (or anything with `test_outputs` and `train_accuracy`), or a pair
`(test_outputs, h)`."""


def _unpack(c: Candidate) -> tuple[Sequence[Grid | None], float]:
    if isinstance(c, tuple) and len(c) == 2:
        return c[0], float(c[1])
    return c.test_outputs, float(c.train_accuracy)


def _sort_token(key: VoteKey) -> str:
    return json.dumps(key, separators=(",", ":"))


def vote_groups(candidates: Iterable[Candidate], c: float = VOTE_C) -> list[VoteGroup]:
    """Group candidates by their test outputs and weigh each group, heaviest first.

    Programs with any missing (None) test output are left out: they have no key (`vote`
    still uses their valid outputs, input by input, to fill attempts the keys leave open).
    Weight = sum of (1 + c*h), summed with `math.fsum` so that the result, and therefore the
    order, does not depend on the order candidates arrive in. Ties are broken by the number
    of programs (more first), then by the JSON text of the key (lexicographic), so the
    ranking is a pure function of the multiset of candidates.
    """
    terms: dict[VoteKey, list[float]] = {}
    members: dict[VoteKey, list[int]] = {}
    for i, cand in enumerate(candidates):
        outs, h = _unpack(cand)
        if not outs or any(g is None for g in outs):
            continue
        key: VoteKey = tuple(grid_key(g) for g in outs)  # type: ignore[arg-type]
        terms.setdefault(key, []).append(1.0 + c * h)
        members.setdefault(key, []).append(i)
    groups = [VoteGroup(k, math.fsum(t), len(t), members[k]) for k, t in terms.items()]
    groups.sort(key=lambda g: (-g.weight, -g.count, _sort_token(g.key)))
    return groups


def _input_ranking(cands: Sequence[tuple[Sequence[Grid | None], float]], i: int, c: float) -> list[GridKey]:
    """The distinct valid grids that candidates give at test input `i`, heaviest first.

    Weight of a grid = sum of (1 + c*h) over the programs that output it there (`math.fsum`,
    so order-independent); ties: more programs first, then the grid's JSON text.
    """
    terms: dict[GridKey, list[float]] = {}
    for outs, h in cands:
        g = outs[i]
        if g is not None:
            terms.setdefault(grid_key(g), []).append(1.0 + c * h)
    ranked = [(-math.fsum(t), -len(t), _sort_token(k), k) for k, t in terms.items()]
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def _n_test(cands: Sequence[tuple[Sequence[Grid | None], float]], groups: Sequence[VoteGroup]) -> int:
    """The number of test inputs: the heaviest key's length, else the most common length
    (the longer on a tie) among candidates with at least one valid output; 0 for none."""
    if groups:
        return len(groups[0].key)
    lengths = [len(outs) for outs, _ in cands if any(g is not None for g in outs)]
    if not lengths:
        return 0
    return max(set(lengths), key=lambda n: (lengths.count(n), n))


def vote(candidates: Iterable[Candidate], c: float = VOTE_C, n_attempts: int = 2) -> list[list[Grid]]:
    """The final answer: for each test input, up to `n_attempts` distinct grids, best first.

    Primary rule (SOAR), over the programs with a valid output at every test input: key =
    the tuple of all test outputs, weight = sum of (1 + c*h); attempt k is the k-th heaviest
    key's output. When a lighter key repeats, at some test input, a grid already chosen
    there, the next key with a new grid at that input is taken instead, so two attempts are
    never spent on the same grid.

    Fill: at each test input where the keys give fewer than `n_attempts` distinct grids
    (too few keys, or none because every program failed somewhere), the remaining attempts
    come from a vote at that input alone, over every program with a valid output there
    (same weights, grids already chosen there skipped). So a program that is right on every
    train pair but fails on one test input still offers its grid for the others.

    Ties (equal weight) go to the group with more programs, then to the smaller JSON text,
    so the answer is a pure function of the multiset of candidates. Empty list for a test
    input where no candidate has a valid output; `[]` when none has any.
    """
    cands = [_unpack(cand) for cand in candidates]
    groups = vote_groups(cands, c)
    n_test = _n_test(cands, groups)
    if n_test == 0:
        return []
    cands = [(outs, h) for outs, h in cands if len(outs) == n_test]  # guard against malformed ones
    groups = [g for g in groups if len(g.key) == n_test]
    result: list[list[Grid]] = []
    for i in range(n_test):
        chosen: list[GridKey] = []
        for g in groups:
            if len(chosen) >= n_attempts:
                break
            if g.key[i] not in chosen:
                chosen.append(g.key[i])
        if len(chosen) < n_attempts:
            for k in _input_ranking(cands, i, c):
                if len(chosen) >= n_attempts:
                    break
                if k not in chosen:
                    chosen.append(k)
        result.append([_key_grid(k) for k in chosen])
    return result


def score_task(task: Task, attempts: Sequence[Sequence[Grid]]) -> float:
    """Fraction of the task's test inputs matched exactly by one of their attempts."""
    if not task.has_solutions:
        raise ValueError(f"task {task.id}: test outputs unknown, cannot score")
    hits = 0
    for i, pair in enumerate(task.test):
        tries = attempts[i] if i < len(attempts) else []
        hits += any(t == pair.output for t in tries)
    return hits / len(task.test)


# --------------------------------------------------------------------------- submissions

Submission = dict[str, list[dict[str, Grid]]]


class SubmissionError(ValueError):
    """A submission file is malformed; the message names the task and the test index."""


def make_submission(
    attempts_by_task: Mapping[str, Sequence[Sequence[Grid]]],
    tasks: Iterable[Task] | None = None,
) -> Submission:
    """The ARC Prize layout `{task_id: [{"attempt_1": g, "attempt_2": g}, ...per test input]}`.

    Missing attempts become `[[0]]`, as Kaggle rejects a submission with holes. With `tasks`
    given, every task gets an entry with one item per test input, answered or not.
    """
    counts: dict[str, int] = {t.id: len(t.test) for t in tasks} if tasks is not None else {}
    sub: Submission = {}
    ids = list(counts) + [t for t in attempts_by_task if t not in counts]
    for tid in ids:
        per_input = list(attempts_by_task.get(tid, []))
        n = counts.get(tid, len(per_input))
        items = []
        for i in range(n):
            tries = list(per_input[i]) if i < len(per_input) else []
            items.append(
                {
                    "attempt_1": tries[0] if len(tries) > 0 else FILL_GRID,
                    "attempt_2": tries[1] if len(tries) > 1 else FILL_GRID,
                }
            )
        sub[tid] = items
    return sub


def write_submission(path: str | Path, submission: Submission) -> None:
    """Write `submission` (from `make_submission`) as compact JSON, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(submission, separators=(",", ":")))
    tmp.replace(path)


def read_submission(
    source: str | Path | Mapping[str, Any], tasks: Iterable[Task] | None = None
) -> Submission:
    """Read and validate a submission (a file or an already-parsed object).

    Raises SubmissionError naming the task and test index at the first problem. With
    `tasks`, also checks that each listed task has one entry per test input (tasks absent
    from the submission are allowed: they score zero).
    """
    data: Any = source
    if isinstance(source, (str, Path)):
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SubmissionError(f"{source}: cannot read submission: {e}") from None
    if not isinstance(data, dict):
        raise SubmissionError("submission must be an object {task_id: [...]}")
    counts = {t.id: len(t.test) for t in tasks} if tasks is not None else {}
    out: Submission = {}
    for tid, items in data.items():
        if not isinstance(items, list):
            raise SubmissionError(f"task {tid}: expected a list of attempts, got {type(items).__name__}")
        if tid in counts and len(items) != counts[tid]:
            raise SubmissionError(f"task {tid}: {len(items)} entries for {counts[tid]} test inputs")
        clean = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise SubmissionError(
                    f"task {tid}, test index {i}: expected an object with attempt_1/attempt_2"
                )
            entry: dict[str, Grid] = {}
            for name in ("attempt_1", "attempt_2"):
                if name not in item:
                    raise SubmissionError(f"task {tid}, test index {i}: missing {name}")
                problem = check_grid(item[name])
                if problem:
                    raise SubmissionError(f"task {tid}, test index {i}, {name}: {problem}")
                entry[name] = item[name]
            clean.append(entry)
        out[str(tid)] = clean
    return out


def score_submission(
    submission: Mapping[str, Sequence[Mapping[str, Grid]]], tasks: Iterable[Task]
) -> dict[str, Any]:
    """Score a submission the ARC Prize way: mean over tasks of the fraction of test inputs right.

    Returns `{"score": sum of task scores, "n_tasks", "accuracy": score / n_tasks,
    "per_task": {task_id: fraction}, "missing": [task ids without an entry]}`.
    """
    per_task: dict[str, float] = {}
    missing: list[str] = []
    task_list = list(tasks)
    for t in task_list:
        items = submission.get(t.id)
        if items is None:
            missing.append(t.id)
            per_task[t.id] = 0.0
            continue
        attempts = [[it[k] for k in ("attempt_1", "attempt_2") if k in it] for it in items]
        per_task[t.id] = score_task(t, attempts)
    total = math.fsum(per_task.values())
    n = len(task_list)
    return {
        "score": total,
        "n_tasks": n,
        "accuracy": total / n if n else 0.0,
        "per_task": per_task,
        "missing": missing,
    }
