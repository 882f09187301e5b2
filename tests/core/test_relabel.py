"""Hindsight relabelling on a real ARC task with hand-written programs: consistency, selection, files."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soar_async.arc import Grid, Pair, Task, load_tasks
from soar_async.prompts import extract_code, parse_grid_text
from soar_async.records import ProgramRecord, evaluate_native, program_id, run_native
from soar_async.relabel import (
    BUCKETS,
    N_PER_TASK,
    can_relabel,
    parent_bucket,
    pseudo_test_key,
    read_jsonl,
    read_parquet,
    refinement_data,
    relabel_task,
    sampling_data,
    select_refinement,
    select_sampling,
    write_jsonl,
    write_parquet,
)

TASK = "3c9b0459"  # rotate 180 degrees; train inputs start with 2, 9, 8, 3; the test input with 6

ROT = "[row[::-1] for row in grid[::-1]]"
FLIP = "[row[::-1] for row in grid]"


def partial(right_on: set[int], tag: str = "") -> str:
    """Right (rotation) on inputs whose first cell is in `right_on`, wrong (flip) elsewhere."""
    return (
        f"def transform(grid):\n    # {tag}\n    if grid[0][0] in {sorted(right_on) or 'set()'}:\n"
        f"        return {ROT}\n    return {FLIP}\n"
    ).replace("in set()", "in ()")


DEVIANT = (
    "def transform(grid):\n    if grid[0][0] == 6:\n        return [list(r) for r in zip(*grid)]\n"
    f"    return {ROT}\n"
)
"""Right on every train pair, wrong on the test input (first cell 6): transposes it."""


def correct(tag: str) -> str:
    return f"def transform(grid):\n    # solution {tag}\n    return {ROT}\n"


@cache
def task() -> Task:
    return load_tasks(f"arc-agi-1:training#{TASK}")[0]


def hidden(t: Task) -> Task:
    return Task(t.id, t.train, tuple(Pair(p.input, None) for p in t.test), t.source)


def archive() -> list[ProgramRecord]:
    """A small archive: samples of every accuracy, duplicates by behaviour, failures, refinements."""
    t = task()
    recs: list[ProgramRecord] = []
    codes = [
        correct("a"),
        correct("b"),  # same outputs as "a"
        "def transform(grid):\n    import numpy as np\n    return np.rot90(np.array(grid), 2).tolist()\n",
        partial({2, 9, 8}),  # 3/4
        partial({2, 9, 8}, "same outputs, longer code"),
        partial({2, 9}),  # 2/4
        partial({2}),  # 1/4
        partial({9}),  # 1/4, different outputs
        partial(set()),  # 0/4 (flip everywhere)
        partial(set(), "duplicate flip"),
        "def transform(grid):\n    return [r[:] for r in grid]\n",  # identity: filtered
        "def transform(grid):\n    return [[0] * len(grid[0]) for _ in grid]\n",  # zeros: filtered
        "def transform(grid):\n    return 1 / 0\n",  # raises: cannot be relabelled
        "def transform(grid):\n    return grid[::-1]\n",  # vertical flip, 0/4
        DEVIANT,  # right on train, wrong on test
    ]
    recs = [evaluate_native(t, c) for c in codes]
    return recs


def test_archive_is_what_the_tests_assume() -> None:
    accs = [r.train_accuracy for r in archive()]
    assert accs == [1, 1, 1, 0.75, 0.75, 0.5, 0.25, 0.25, 0, 0, 0, 0, 0, 0, 1]
    last = archive()[-1]
    assert last.all_train_correct and last.test_correct == [False]


def test_relabelled_task_is_consistent_with_native_execution() -> None:
    t = task()
    for rec in archive():
        if not can_relabel(rec):
            with pytest.raises(ValueError):
                relabel_task(t, rec)
            continue
        synthetic = relabel_task(t, rec)
        assert [p.input for p in synthetic.train + synthetic.test] == t.inputs()
        outs, errs = run_native(rec.code, synthetic.inputs())
        assert errs == [None] * len(outs)
        assert outs == [p.output for p in synthetic.train + synthetic.test]
        again = evaluate_native(synthetic, rec.code)
        assert again.fully_correct and again.test_accuracy == 1.0


def _shown_pairs(user: str) -> tuple[list[tuple[Grid, Grid]], list[Grid]]:
    grids = {
        m.group(1): parse_grid_text(m.group(2))
        for m in re.finditer(
            r"^## ((?:Test )?(?:Input|Output) \d+) \(grid shape: [^)]*\):\n(\[\[.*?\]\])$", user, re.M | re.S
        )
    }
    n = sum(1 for k in grids if k.startswith("Input"))
    pairs = [(grids[f"Input {i}"], grids[f"Output {i}"]) for i in range(1, n + 1)]
    tests = [v for k, v in grids.items() if k.startswith("Test Input")]
    return pairs, tests


def test_sampling_examples_are_solved_by_their_target_code() -> None:
    t = task()
    data = sampling_data(t, archive(), seed=0)
    assert data
    for ex in data:
        roles = [m["role"] for m in ex["messages"]]
        assert roles == ["system", "user", "assistant"] and ex["kind"] == "sample"
        answer = ex["messages"][2]["content"]
        assert answer.startswith("```python\n") and answer.endswith("\n```")
        code = extract_code(answer)
        assert code is not None
        pairs, tests = _shown_pairs(ex["messages"][1]["content"])
        assert len(pairs) == len(t.train) and len(tests) == len(t.test)
        outs, errs = run_native(code, [i for i, _ in pairs])
        assert errs == [None] * len(pairs) and outs == [o for _, o in pairs]
        assert sorted(map(str, (i for i, _ in pairs))) == sorted(str(p.input) for p in t.train)


def test_pair_order_is_shuffled_with_the_seed() -> None:
    t = task()

    def orders(seed: int) -> list[list[str]]:
        return [
            [str(i) for i, _ in _shown_pairs(ex["messages"][1]["content"])[0]]
            for ex in sampling_data(t, archive(), seed=seed)
        ]

    assert orders(0) == orders(0)
    assert orders(0) != orders(1)
    natural = [str(p.input) for p in t.train]
    assert any(o != natural for o in orders(0))


def test_greedy_diverse_selection_dedups_by_outputs_and_filters() -> None:
    t = task()
    recs = archive()
    chosen = select_sampling(t, recs, n=N_PER_TASK)
    keys = [r.outputs_key() for r in chosen]
    assert len(keys) == len(set(keys))  # duplicates by behaviour collapsed
    distinct_eligible = {
        r.outputs_key() for r in recs if can_relabel(r) and "r[:]" not in r.code and "[[0]" not in r.code
    }
    assert len(chosen) == len(distinct_eligible) == 8
    codes = [r.code for r in chosen]
    assert not any("1 / 0" in c or "r[:] for r" in c or "[0] * len" in c for c in codes)
    # the solutions collapse to one: the shortest code of the correct group is kept
    assert sum(1 for r in chosen if r.fully_correct) == 1
    best = chosen[0]
    assert best.fully_correct and len(best.code) == min(len(r.code) for r in recs if r.fully_correct)
    # of the two 3/4 programs with equal outputs, the shorter one
    three = [r for r in chosen if r.train_accuracy == 0.75]
    assert len(three) == 1 and "longer code" not in three[0].code


def test_greedy_diverse_halves() -> None:
    t = task()
    recs = archive()
    chosen = select_sampling(t, recs, n=4)
    # 2 best: the solution, then the train-correct-but-test-wrong one (test accuracy breaks the tie)
    assert chosen[0].fully_correct
    assert chosen[1].all_train_correct and chosen[1].test_correct == [False]
    # 2 weakest: from the zero-right tier first
    assert [r.n_train_correct for r in chosen[2:]] == [0, 0]
    # at test time, test accuracy is not used: shorter code wins among all-train-correct programs
    chosen_tt = select_sampling(hidden(t), [r.rescored(hidden(t)) for r in recs], n=2)
    assert all(r.all_train_correct for r in chosen_tt[:1])


def _synthetic(
    t: Task, h_right: int, tag: str, parent: str | None = None, test_right: bool = True
) -> ProgramRecord:
    """A record right on the first `h_right` train pairs (outputs made up, not executed)."""
    outs: list[Grid] = []
    for i, p in enumerate(t.train):
        assert p.output is not None
        outs.append(p.output if i < h_right else [[i, 9, 9], [9, 9, 9], [9, 9, 9]])
    for p in t.test:
        assert p.output is not None
        outs.append(p.output if test_right else [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    code = f"def transform(grid):\n    # {tag}\n    return grid\n"
    return ProgramRecord.from_outputs(
        t, code, outs, parent_id=parent, origin="refine" if parent else "sample"
    )


def bucket_archive(counts: dict[str, int]) -> list[ProgramRecord]:
    t = task()
    h_for = {"zero": 0, "low": 1, "medium": 2, "train_only": 4}
    recs = []
    for b, n in counts.items():
        for i in range(n):
            parent = _synthetic(t, h_for[b], f"{b} parent {i % 3}", test_right=False)
            recs.append(parent)
            recs.append(_synthetic(t, 4, f"{b} child {i}", parent=parent.id))
    return recs


def test_parent_buckets() -> None:
    t = task()
    assert parent_bucket(_synthetic(t, 0, "x"), test_right=False) == "zero"
    assert parent_bucket(_synthetic(t, 1, "x"), test_right=False) == "low"
    assert parent_bucket(_synthetic(t, 3, "x"), test_right=False) == "medium"
    assert parent_bucket(_synthetic(t, 4, "x"), test_right=False) == "train_only"
    assert parent_bucket(_synthetic(t, 4, "x"), test_right=True) is None


def test_refinement_buckets_are_balanced() -> None:
    t = task()
    counts = {"zero": 30, "low": 5, "medium": 20, "train_only": 10}
    recs = bucket_archive(counts)
    got = Counter(b for _, _, b in select_refinement(t, recs, n=20))
    assert got == {b: 5 for b in BUCKETS}
    got = Counter(b for _, _, b in select_refinement(t, recs, n=50))
    assert got["low"] == 5 and got["train_only"] == 10 and abs(got["zero"] - got["medium"]) <= 1
    assert sum(got.values()) == 50
    everything = select_refinement(t, recs, n=1000)
    assert Counter(b for _, _, b in everything) == counts
    for parent, child, _ in everything:
        assert child.parent_id == parent.id and child.fully_correct
    # distinct parents come before a parent's second child inside each bucket
    first_zero = [p.id for p, _, b in select_refinement(t, recs, n=12) if b == "zero"]
    assert len(set(first_zero)) == len(first_zero) == 3


def test_refinement_examples_with_real_programs() -> None:
    t = task()
    parents = [evaluate_native(t, partial(s, "p")) for s in ({2}, {2, 9}, set())]
    children = [
        evaluate_native(t, correct(f"from {i}"), parent_id=p.id, origin="refine")
        for i, p in enumerate(parents)
    ]
    wrong_child = evaluate_native(
        t, partial({2, 9, 8}, "not fixed"), parent_id=parents[0].id, origin="refine"
    )
    data = refinement_data(t, parents + children + [wrong_child], seed=3)
    assert len(data) == 3 and {ex["bucket"] for ex in data} == {"zero", "low", "medium"}
    for ex in data:
        user = ex["messages"][1]["content"]
        parent = next(p for p in parents if p.id == ex["parent_id"])
        child = next(c for c in children if c.id == ex["program_id"])
        assert (
            parent.code.strip() in user
            and ex["messages"][2]["content"] == f"```python\n{child.code.strip()}\n```"
        )
        assert f"{parent.n_train_correct}/4 train pairs correct" in user
        # the pairs shown are the true task's (the child is correct), in shuffled order
        pairs, _ = _shown_pairs(user)
        assert sorted(map(str, pairs)) == sorted(str((p.input, p.output)) for p in t.train)
        # feedback verdicts agree with running the parent on the pairs as shown
        outs, _ = run_native(parent.code, [i for i, _ in pairs])
        for k, ((_, o), got) in enumerate(zip(pairs, outs, strict=True), 1):
            assert (f"## Output {k}: correct" in user) == (got == o)


def test_test_time_variant_uses_the_vote_instead_of_ground_truth() -> None:
    t = task()
    ht = hidden(t)
    recs = [r.rescored(ht) for r in archive()]
    deviant = recs[-1]  # right on train, wrong on the (hidden) test input
    assert deviant.test_correct == [None]
    key = pseudo_test_key(recs)
    assert key is not None and [list(map(list, g)) for g in key] == [t.test[0].output]
    # a refinement from the deviant to a solution counts as train_only; to the deviant, it is not correct
    parent = recs[3]  # 3/4
    to_dev = evaluate_native(ht, partial({2, 9, 8, 3}, "child of 3/4"), parent_id=parent.id, origin="refine")
    fix = evaluate_native(ht, correct("child of deviant"), parent_id=deviant.id, origin="refine")
    triples = select_refinement(ht, [*recs, to_dev, fix])
    assert [(p.id, c.id, b) for p, c, b in triples] == [(deviant.id, fix.id, "train_only")]


def test_parquet_round_trip(tmp_path: Path) -> None:
    t = task()
    recs = archive() + [r.rescored(hidden(t)) for r in archive()[:2]]
    recs[0].extra["tokens"] = 12
    path = tmp_path / "programs.parquet"
    assert write_parquet(recs, path, row_group_size=4) == len(recs)
    back = read_parquet(path)
    assert back == recs
    table = pq.read_table(path)
    assert table.column_names[:6] == [
        "task_id",
        "code",
        "predicted_train_output",
        "predicted_test_output",
        "correct_train_input",
        "correct_test_input",
    ]
    assert (
        write_parquet([], tmp_path / "empty.parquet") == 0 and read_parquet(tmp_path / "empty.parquet") == []
    )


def test_reads_the_released_soar_columns_alone(tmp_path: Path) -> None:
    t = task()
    rec = archive()[3]
    table = pa.table(
        {
            "task_id": [t.id],
            "code": [rec.code],
            "predicted_train_output": [rec.train_outputs],
            "predicted_test_output": [rec.test_outputs],
            "correct_train_input": [rec.train_correct],
            "correct_test_input": [rec.test_correct],
            "model": ["qwen-7b"],
        }
    )
    pq.write_table(table, tmp_path / "released.parquet")
    (back,) = read_parquet(tmp_path / "released.parquet")
    # released rows carry no id and no task grids: unknown digest, id derived from that
    assert back.task_digest == "" and back.id == program_id(t.id, rec.code, "")
    assert back.train_outputs == rec.train_outputs and back.train_accuracy == 0.75
    assert back.test_correct == rec.test_correct and back.train_errors == [None] * 4


def test_jsonl_round_trip(tmp_path: Path) -> None:
    data = sampling_data(task(), archive()) + refinement_data(task(), bucket_archive({"zero": 2, "low": 1}))
    path = tmp_path / "train.jsonl"
    assert write_jsonl(data, path) == len(data)
    assert read_jsonl(path) == data
