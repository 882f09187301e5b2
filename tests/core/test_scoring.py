"""Output validation, fitness, reuse filters, the two-attempt vote and submissions, on real ARC tasks."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soar_async.arc import Grid, Task, check_grid, load_tasks
from soar_async.records import ProgramRecord, evaluate_native
from soar_async.scoring import (
    FILL_GRID,
    SubmissionError,
    filter_reasons,
    fitness,
    is_degenerate,
    is_hardcoded,
    is_identity_like,
    is_near_constant,
    make_submission,
    passes_filters,
    read_submission,
    score_submission,
    score_task,
    validate_output,
    vote,
    vote_groups,
    write_submission,
)

SAMPLE_SUBMISSION = Path(__file__).resolve().parents[1] / "data" / "sample_submission.json"
"""The ARC Prize 2024 sample submission for ARC-AGI-1 (see tests/data/README.md)."""


@cache
def tasks() -> dict[str, Task]:
    out = {}
    for split in ("training", "evaluation"):
        for t in load_tasks(f"arc-agi-1:{split}"):
            out[t.id] = t
    return out


ROT180 = "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n"
FLIP_LR = "def transform(grid):\n    return [row[::-1] for row in grid]\n"
IDENTITY = "def transform(grid):\n    return [list(r) for r in grid]\n"
ZEROS = "def transform(grid):\n    return [[0] * len(grid[0]) for _ in grid]\n"


# --------------------------------------------------------------------------- validation


def test_validate_accepts_numpy_and_normalises() -> None:
    g, err = validate_output(np.array([[1, 2], [3, 4]], dtype=np.int64))
    assert err is None and g == [[1, 2], [3, 4]] and type(g[0][0]) is int
    g, err = validate_output([np.array([1, 2]), np.array([3, 4])])
    assert err is None and g == [[1, 2], [3, 4]]
    g, err = validate_output([[np.int32(5), np.uint8(9)]])
    assert err is None and g == [[5, 9]] and type(g[0][1]) is int
    g, err = validate_output(np.zeros((2, 2)))  # float array from np.zeros: integral, accepted
    assert err is None and g == [[0, 0], [0, 0]]
    g, err = validate_output(((1, 2),))
    assert err is None and g == [[1, 2]]


@pytest.mark.parametrize(
    "obj",
    [
        np.zeros((2, 3)),  # float64 from np.zeros: the commonest LLM way to build an output
        (np.array([[1, 2, 3], [4, 5, 6]]) * 1.0).tolist(),  # lists of Python floats
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32),
        [np.array([1.0, 2.0, 3.0]), np.array([4, 5, 6])],  # rows that are arrays, float and int
        [(1, 2, 3), (4, 5, 6)],  # rows that are tuples
        ((1, 2, 3), [4, 5, 6]),
        [[np.float64(1), np.int8(2), np.uint64(3)], [np.float16(4), 5, -0.0 + 6]],
        np.array([[1, 2, 3], [4, 5, 6]], dtype=object),
    ],
)
def test_validate_accepts_integral_floats_and_tuple_rows(obj: object) -> None:
    """What the reference counts (`==` on lists, where 1.0 == 1) counts here, normalised to ints."""
    g, err = validate_output(obj)
    assert err is None, err
    assert g in ([[0, 0, 0], [0, 0, 0]], [[1, 2, 3], [4, 5, 6]])
    assert all(type(row) is list and all(type(v) is int for v in row) for row in g)


def test_validate_is_the_sandbox_harness_normaliser() -> None:
    """One definition of a valid output: the guest's `to_grid`, which native judging wraps."""
    from soar_async.arc import MAX_SIDE
    from soar_async.sandbox import harness

    assert harness.MAX_SIDE == MAX_SIDE
    for obj in (np.zeros((2, 2)), [[1.5]], [[0] * 200], None, [(1, 2)], [[np.nan]]):
        kind, grid, detail = harness.to_grid(obj)
        g, err = validate_output(obj)
        assert g == grid and (err is None) == (kind is None)
        if err is not None:
            assert err == f"invalid output: {detail}"


def test_validate_rejects_subclasses_without_running_them() -> None:
    class Hostile(int):
        def __eq__(self, other: object) -> bool:
            raise AssertionError("ran")

        __hash__ = int.__hash__

    class Rows(list):  # type: ignore[type-arg]
        def __len__(self) -> int:
            raise AssertionError("ran")

    class Meta(type):
        @property
        def __name__(cls) -> str:  # type: ignore[override]
            raise AssertionError("ran")

    class Odd(metaclass=Meta):
        pass

    for obj in ([[Hostile(1)]], Rows([[1]]), [Rows([1])], [[Odd()]], Odd()):
        g, err = validate_output(obj)
        assert g is None and err is not None


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ([[1.5]], "1.5, not an integer 0..9"),
        ([[float("nan")]], "nan, not an integer 0..9"),
        ([[float("inf")]], "inf, not an integer 0..9"),
        ([[9.0, 10.0]], "10.0, not an integer 0..9"),
        ([[-1.0]], "not an integer 0..9"),
        (np.array([[0.5, 1.0]]), "0.5, not an integer 0..9"),
        (np.array([[np.nan]]), "nan, not an integer 0..9"),
        ([np.array([1.0, 2.5])], "2.5, not an integer 0..9"),
        (np.array([[True, False]]), "dtype bool"),
        ([[np.True_]], "not an integer 0..9"),
        ([np.array([True])], "array of bool"),
        (np.array([[1 + 0j]]), "dtype complex128"),
        ([[10**5000]], "an int out of range"),
        ([[0] * 200], "200 columns, more than 30"),
        ([[0]] * 200, "200 rows, more than 30"),
        (np.zeros((200, 2)), "200x2"),
        ([np.zeros((2, 2))], "2-D array"),
        ({0: [1]}, "got dict"),
    ],
)
def test_validate_rejects_non_integral_and_odd_cells(obj: object, fragment: str) -> None:
    g, err = validate_output(obj)
    assert g is None and err is not None and err.startswith("invalid output: ")
    assert fragment in err, err


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (None, "None"),
        ([], "empty"),
        ([[]], "row 0 is empty"),
        ([[1, 2], [3]], "ragged"),
        ([[10]], "not an integer 0..9"),
        ([[-1]], "not an integer 0..9"),
        ([[1.5]], "not an integer 0..9"),
        ([[True]], "not an integer 0..9"),
        ([["1"]], "not an integer 0..9"),
        ([[0] * 31], "31 columns"),
        ([[0]] * 31, "31 rows"),
        (np.zeros((2, 2, 2), dtype=int), "3 dimensions"),
        (np.array([1, 2]), "1 dimensions"),
        ("[[1]]", "expected a list"),
        ([1, 2], "row 0 is int"),
    ],
)
def test_validate_rejects(obj: object, fragment: str) -> None:
    g, err = validate_output(obj)
    assert g is None and err is not None and fragment in err, err


cells = st.integers(0, 9)


@st.composite
def grids(draw: st.DrawFn, max_side: int = 30) -> Grid:
    r = draw(st.integers(1, max_side))
    c = draw(st.integers(1, max_side))
    return [[draw(cells) for _ in range(c)] for _ in range(r)]


@settings(max_examples=200, deadline=None)
@given(grids())
def test_property_valid_grids_pass_unchanged(g: Grid) -> None:
    forms = (
        g,
        np.array(g),
        np.array(g, dtype=np.uint8),
        [tuple(r) for r in g],
        np.array(g, dtype=float),
        [[float(v) for v in r] for r in g],
        list(np.array(g, dtype=np.float32)),
    )
    for form in forms:
        out, err = validate_output(form)
        assert err is None and out == g
        assert out is not None and all(type(c) is int for row in out for c in row)
    out, _ = validate_output(g)
    assert out is not None and out is not g and all(a is not b for a, b in zip(out, g, strict=True))  # a fresh grid


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.integers(-3, 12), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=2)
        ),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=40,
    )
)
def test_property_validator_agrees_with_check_grid(obj: object) -> None:
    """Whatever the input, a returned grid is valid ARC and an error comes with no grid."""
    g, err = validate_output(obj)
    assert (g is None) != (err is None)
    if g is not None:
        assert check_grid(g) is None


# --------------------------------------------------------------------------- fitness and filters


def test_fitness_counts_exact_pairs() -> None:
    t = tasks()["3c9b0459"]
    right = [p.output for p in t.train]
    assert fitness(t, right) == 1.0
    half = [right[0], right[1], None, [[0]]]
    assert fitness(t, half) == 0.5
    off_by_one = [[row[:] for row in right[0]], *right[1:]]
    off_by_one[0][0][0] = (off_by_one[0][0][0] + 1) % 10
    assert fitness(t, off_by_one) == 0.75


def test_filters_on_real_tasks() -> None:
    t = tasks()["3c9b0459"]
    good = evaluate_native(t, ROT180)
    assert good.all_train_correct and passes_filters(good, t) == (True, [])
    ident = evaluate_native(t, IDENTITY)
    assert is_identity_like(ident, t) and "identity_like" in filter_reasons(ident, t)
    zeros = evaluate_native(t, ZEROS)
    assert is_degenerate(zeros, t)
    assert is_near_constant(zeros, t)  # the same 3x3 zero grid for every train input
    assert not passes_filters(zeros, t)[0]
    # identity on a task where much of the output is the input is judged against the task
    assert not is_identity_like(good, t)


def test_hardcoded_detection() -> None:
    t = tasks()["3c9b0459"]
    answers = [p.output for p in t.train] + [p.output for p in t.test]
    table = "\n".join(f"    if grid == {p.input!r}:\n        return {p.output!r}" for p in t.train + t.test)
    code = f"def transform(grid):\n{table}\n    return grid\n"
    rec = ProgramRecord.from_outputs(t, code, answers)
    assert rec.all_train_correct and is_hardcoded(rec, t)
    long_line = "def transform(grid):\n    x = " + "1 + " * 60 + "1\n    return grid\n"
    assert is_hardcoded(replace(evaluate_native(t, IDENTITY), code=long_line, id=""), t)
    assert not is_hardcoded(evaluate_native(t, ROT180), t)
    # numpy-free spacing variants of the literal are caught too
    spaced = code.replace(", ", ",  ")
    assert is_hardcoded(replace(rec, code=spaced, id=""), t)


def test_degenerate_not_flagged_when_task_outputs_blank() -> None:
    t = tasks()["3c9b0459"]
    blank = Task(t.id, tuple(replace(p, output=[[0] * 3] * 3) for p in t.train), t.test)
    rec = evaluate_native(blank, ZEROS)
    assert not is_degenerate(rec, blank) and not is_near_constant(rec, blank)


# --------------------------------------------------------------------------- vote


def wrong(g: Grid) -> Grid:
    out = [row[:] for row in g]
    out[0][0] = (out[0][0] + 1) % 10
    return out


def test_vote_right_answer_first_when_correct_programs_are_a_minority() -> None:
    t = tasks()["3c9b0459"]
    truth = [p.output for p in t.test]
    cands: list[tuple[list[Grid], float]] = [([truth[0]], 1.0)] * 3  # few, right on every train pair
    cands += [([wrong(truth[0])], 0.0)] * 2000  # many, right on no train pair
    cands += [([wrong(wrong(truth[0]))], 0.25)] * 5
    attempts = vote(cands)
    # weights: 3 * 1001 = 3003 > 2000 * 1 = 2000 > 5 * 251 = 1255
    assert attempts[0] == [truth[0], wrong(truth[0])]
    assert score_task(t, attempts) == 1.0
    assert score_task(t, [[wrong(truth[0])]]) == 0.0


def test_vote_with_real_programs() -> None:
    t = tasks()["3c9b0459"]
    recs = [evaluate_native(t, ROT180)] + [evaluate_native(t, FLIP_LR) for _ in range(20)]
    recs += [evaluate_native(t, IDENTITY) for _ in range(30)]
    attempts = vote(recs)
    assert attempts[0][0] == t.test[0].output
    assert score_task(t, attempts) == 1.0


def test_vote_keys_exclude_programs_with_missing_test_outputs() -> None:
    cands = [([None, [[1]]], 1.0)] * 10 + [([[[2]], [[3]]], 0.0)]
    groups = vote_groups(cands)
    assert len(groups) == 1 and groups[0].outputs == [[[2]], [[3]]]
    # ...but their valid outputs still fill the attempts the keys leave open
    assert vote(cands) == [[[[2]]], [[[3]], [[1]]]]
    assert vote([([None], 1.0)]) == []
    assert vote([([None, None], 1.0)] * 3) == []
    assert vote([]) == []


def test_vote_programs_failing_on_one_test_input_still_answer_the_others() -> None:
    t = tasks()["12997ef3"]  # two test inputs
    g0, g1 = (p.output for p in t.test)
    w0, w1 = wrong(g0), wrong(g1)
    right_on_train = [([g0, None], 1.0)] * 5  # crash on test input 1
    # alone: attempt 1 for input 0 comes from them, input 1 stays unanswered
    assert vote(right_on_train) == [[g0], []]
    assert score_task(t, vote(right_on_train)) == 0.5
    # with one complete (wrong) program, SOAR's key rule stays primary, and the fill adds g0
    attempts = vote([*right_on_train, ([w0, w1], 0.0)])
    assert attempts == [[w0, g0], [w1]]
    assert score_task(t, attempts) == 0.5
    # the fill is a per-input weighted vote that never repeats a grid chosen there
    cands = [([g0, g1], 0.0), ([g0, None], 0.0), ([w0, None], 1.0), ([wrong(w0), None], 0.5), ([None, w1], 0.0)]
    assert vote(cands) == [[g0, w0], [g1, w1]]
    assert vote(cands, n_attempts=3) == [[g0, w0, wrong(w0)], [g1, w1]]
    # with enough complete keys, the fill never runs
    full = [([g0, g1], 1.0), ([w0, w1], 0.5)]
    assert vote([*full, ([wrong(w0), None], 1.0)] * 3) == vote(full) == [[g0, w0], [g1, w1]]


def test_vote_ties_are_deterministic() -> None:
    a, b, c = [[1]], [[2]], [[3]]
    cands = [([b], 0.0), ([a], 0.0), ([c], 0.0)]
    first = vote(cands)
    for perm in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        assert vote([cands[i] for i in perm]) == first
    # equal weight and count: lexicographic order of the key's JSON decides
    assert first == [[a, b]]
    # equal weight, more programs wins: 2 programs at h=0 (weight 2) vs 1 program... at h=0.001 (weight 2)
    heavy_few = ([c], 0.001)
    many = [([b], 0.0), ([b], 0.0)]
    g = vote_groups([heavy_few, *many])
    assert g[0].weight == g[1].weight and g[0].count == 2 and g[0].outputs == [b]


def test_vote_and_score_per_test_input() -> None:
    t = tasks()["12997ef3"]  # evaluation task with two test inputs
    assert len(t.test) == 2
    t1, t2 = (p.output for p in t.test)
    # program A right on input 1 only, B right on input 2 only, C wrong on both
    cands = [([t1, wrong(t2)], 1.0)] * 2 + [([wrong(t1), t2], 0.9)] + [([wrong(t1), wrong(t2)], 0.0)] * 50
    attempts = vote(cands)
    assert len(attempts) == 2
    assert attempts[0][0] == t1 and attempts[1][1] == t2
    assert score_task(t, attempts) == 1.0
    assert score_task(t, [[t1], [wrong(t2)]]) == 0.5
    # when the second key repeats the first key's grid at an input, the next distinct grid is used
    cands = [([t1, wrong(t2)], 1.0), ([t1, t2], 0.5), ([wrong(t1), t2], 0.2)]
    attempts = vote(cands)
    assert attempts[0] == [t1, wrong(t1)]
    assert attempts[1] == [wrong(t2), t2]


small_grids = st.sampled_from([[[i]] for i in range(4)] + [[[1, 2]], [[2, 1]]])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(small_grids, min_size=2, max_size=2), st.sampled_from([0, 0.25, 1 / 3, 0.5, 1.0]))
    )
)
def test_property_vote_order_invariant(cands: list[tuple[list[Grid], float]]) -> None:
    """The answer depends only on the multiset of candidates, and attempts are real outputs."""
    base = vote(cands)
    shuffled = cands[:]
    random.Random(len(cands)).shuffle(shuffled)
    assert vote(shuffled) == base
    if cands:
        assert len(base) == 2
        for i, tries in enumerate(base):
            assert 1 <= len(tries) <= 2 and (len(tries) < 2 or tries[0] != tries[1])
            assert all(any(c[0][i] == g for c in cands) for g in tries)
        # attempt 1 is the heaviest key's output
        weights: dict[str, float] = {}
        for outs, h in cands:
            k = json.dumps(outs)
            weights[k] = weights.get(k, 0.0) + 1 + 1000 * h
        top = max(weights.values())
        assert any(json.loads(k)[0] == base[0][0] and abs(w - top) < 1e-6 for k, w in weights.items())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.one_of(st.none(), small_grids), min_size=2, max_size=2),
            st.sampled_from([0, 0.25, 1 / 3, 0.5, 1.0]),
        )
    ),
    st.integers(1, 3),
)
def test_property_vote_with_missing_outputs(cands: list[tuple[list[Grid | None], float]], n: int) -> None:
    """Keys first (SOAR), then per-input fill: order-invariant, distinct, real, as many as exist."""
    base = vote(cands, n_attempts=n)
    shuffled = cands[:]
    random.Random(len(cands)).shuffle(shuffled)
    assert vote(shuffled, n_attempts=n) == base
    offered = [{json.dumps(c[0][i]) for c in cands if c[0][i] is not None} for i in range(2)]
    if not any(offered):
        assert base == []
        return
    assert len(base) == 2
    full = [c for c in cands if None not in c[0]]
    primary = vote(full, n_attempts=n) or [[], []]
    for i, tries in enumerate(base):
        keys = [json.dumps(g) for g in tries]
        assert len(set(keys)) == len(keys) == min(n, len(offered[i]))  # distinct, none left unused
        assert set(keys) <= offered[i]  # real outputs at this input
        assert tries[: len(primary[i])] == primary[i]  # the key rule's attempts come first
        if not full and keys:  # nothing but the fill: attempt 1 is the heaviest grid at this input
            weights: dict[str, float] = {}
            for outs, h in cands:
                if outs[i] is not None:
                    k = json.dumps(outs[i])
                    weights[k] = weights.get(k, 0.0) + 1 + 1000 * h
            assert abs(weights[keys[0]] - max(weights.values())) < 1e-6


# --------------------------------------------------------------------------- submissions


def test_submission_roundtrip_and_scoring(tmp_path: Path) -> None:
    ts = [tasks()[i] for i in ("3c9b0459", "12997ef3", "67a3c6ac")]
    t_a, t_b, _t_c = ts
    attempts = {
        t_a.id: [[t_a.test[0].output]],
        t_b.id: [[wrong(t_b.test[0].output), t_b.test[0].output]],  # second test input unanswered
    }
    sub = make_submission(attempts, ts)
    assert set(sub) == {t.id for t in ts}
    assert sub[t_a.id][0]["attempt_2"] == FILL_GRID
    assert len(sub[t_b.id]) == 2 and sub[t_b.id][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}
    assert sub["67a3c6ac"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    path = tmp_path / "submission.json"
    write_submission(path, sub)
    back = read_submission(path, ts)
    assert back == sub
    res = score_submission(back, ts)
    assert res["per_task"] == {t_a.id: 1.0, t_b.id: 0.5, "67a3c6ac": 0.0}
    assert res["score"] == 1.5 and res["n_tasks"] == 3 and res["accuracy"] == 0.5 and res["missing"] == []
    res = score_submission({t_a.id: sub[t_a.id]}, ts)
    assert res["missing"] == [t_b.id, "67a3c6ac"] and res["score"] == 1.0


def test_sample_submission_reads() -> None:
    sub = read_submission(SAMPLE_SUBMISSION)
    assert len(sub) == 100 and all(len(v) >= 1 for v in sub.values())


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "must be an object"),
        ({"abc": {}}, "task abc: expected a list"),
        ({"abc": [[1]]}, "task abc, test index 0"),
        ({"abc": [{"attempt_1": [[1]]}]}, "task abc, test index 0: missing attempt_2"),
        (
            {"abc": [{"attempt_1": [[1]], "attempt_2": [[1]]}, {"attempt_1": [[1]], "attempt_2": [[12]]}]},
            "task abc, test index 1, attempt_2: cell (0, 0)",
        ),
    ],
)
def test_read_submission_errors_name_task_and_index(data: object, fragment: str) -> None:
    with pytest.raises(SubmissionError, match=None) as ei:
        read_submission(data)  # type: ignore[arg-type]
    assert fragment in str(ei.value)


def test_read_submission_checks_test_counts(tmp_path: Path) -> None:
    t = tasks()["12997ef3"]
    bad = {t.id: [{"attempt_1": [[0]], "attempt_2": [[0]]}]}
    with pytest.raises(SubmissionError, match="1 entries for 2 test inputs"):
        read_submission(bad, [t])
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(SubmissionError, match="cannot read"):
        read_submission(tmp_path / "x.json")
