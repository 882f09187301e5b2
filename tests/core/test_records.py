"""ProgramRecord: judging outputs against real ARC tasks, derived facts, serialisation."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import msgpack
import pytest

from soar_async.arc import Task, load_tasks
from soar_async.records import ProgramRecord, evaluate_native, program_id, run_native

ARC1 = Path(__file__).resolve().parents[3] / "shared" / "arc-agi-1"
"""The ARC Prize files in the shared/ folder beside the checkout (see conftest.py)."""

SOLUTIONS = {
    "3c9b0459": "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n",
    "6150a2bd": "def transform(grid):\n    return [row[::-1] for row in grid[::-1]]\n",
    "67a3c6ac": "def transform(grid):\n    return [row[::-1] for row in grid]\n",
    "68b16354": "def transform(grid):\n    return grid[::-1]\n",
    "a416b8f3": "def transform(grid):\n    return [row + row for row in grid]\n",
    "c8f0f002": "def transform(grid):\n    return [[5 if v == 7 else v for v in row] for row in grid]\n",
}
"""Hand-written correct programs for real ARC-AGI-1 training tasks."""


@cache
def tasks() -> dict[str, Task]:
    return {t.id: t for t in load_tasks(str(ARC1 / "arc-agi_training_challenges.json"))}


@pytest.mark.parametrize("task_id", sorted(SOLUTIONS))
def test_hand_written_solutions_are_correct(task_id: str) -> None:
    t = tasks()[task_id]
    rec = evaluate_native(t, SOLUTIONS[task_id])
    assert rec.train_accuracy == 1.0 and rec.all_train_correct
    assert rec.test_correct == [True] * len(t.test) and rec.test_accuracy == 1.0
    assert rec.fully_correct and not rec.raised_any and rec.all_outputs_valid
    assert rec.id == program_id(task_id, SOLUTIONS[task_id], t.digest)


def test_same_task_id_other_grids_is_another_program() -> None:
    one = load_tasks("arc-agi-1:training#007bbfb7")[0]
    two = load_tasks("arc-agi-2:training#007bbfb7")[0]
    assert one.train != two.train and one.digest != two.digest
    code = "def transform(grid):\n    return grid\n"
    assert evaluate_native(one, code).id != evaluate_native(two, code).id
    assert one.digest == load_tasks("arc-agi-1:training#007bbfb7")[0].digest  # stable across loads


def test_partial_and_failing_programs() -> None:
    t = tasks()["3c9b0459"]
    # flips left-right: right on no pair of a 180-degree rotation task except by accident
    rec = evaluate_native(t, SOLUTIONS["67a3c6ac"])
    assert rec.train_accuracy < 1.0 and rec.test_correct == [False]
    boom = evaluate_native(
        t,
        "def transform(grid):\n    if grid[0][0] == 2:\n        raise ValueError('nope')\n"
        "    return [r[::-1] for r in grid[::-1]]\n",
    )
    assert boom.raised_any and boom.train_errors[0] == "ValueError: nope" and boom.train_outputs[0] is None
    assert boom.train_correct[0] is False and boom.train_correct[1:] == [True, True, True]
    assert boom.train_accuracy == 0.75 and not boom.all_outputs_valid
    bad = evaluate_native(t, "def transform(grid):\n    return [[12]]\n")
    assert bad.raised_any and all(e and e.startswith("invalid output") for e in bad.train_errors)
    syntax = evaluate_native(t, "def transform(grid)\n    return grid\n")
    assert all(e and e.startswith("SyntaxError") for e in syntax.train_errors + syntax.test_errors)
    missing = evaluate_native(t, "def other(grid):\n    return grid\n")
    assert missing.train_errors[0] == "NameError: no function named transform"


def test_run_native_does_not_let_programs_mutate_inputs() -> None:
    t = tasks()["3c9b0459"]
    before = json.dumps(t.inputs())
    outs, errs = run_native("def transform(grid):\n    grid[0][0] = 9\n    return grid\n", t.inputs())
    assert json.dumps(t.inputs()) == before and errs == [None] * len(outs)


def test_unknown_ground_truth() -> None:
    t = tasks()["67a3c6ac"]
    hidden = Task(t.id, t.train, tuple(type(p)(p.input, None) for p in t.test))
    rec = evaluate_native(hidden, SOLUTIONS["67a3c6ac"])
    assert rec.test_correct == [None] and rec.test_accuracy is None and not rec.test_known
    assert rec.all_train_correct and rec.fully_correct


def test_from_outputs_checks_lengths() -> None:
    t = tasks()["67a3c6ac"]
    with pytest.raises(ValueError, match="outputs for"):
        ProgramRecord.from_outputs(t, "x", [[[1]]])
    with pytest.raises(ValueError, match="origin"):
        evaluate_native(t, SOLUTIONS["67a3c6ac"], origin="mutation")


def test_roundtrip_msgpack_and_json() -> None:
    t = tasks()["3c9b0459"]
    rec = evaluate_native(
        t,
        SOLUTIONS["67a3c6ac"],
        parent_id="p1",
        origin="refine",
        model_version="v3",
        generation=2,
        extra={"tokens": 321},
    )
    d = rec.to_dict()
    assert ProgramRecord.from_dict(msgpack.unpackb(msgpack.packb(d))) == rec
    assert ProgramRecord.from_dict(json.loads(json.dumps(d))) == rec
    assert ProgramRecord.from_dict({**d, "added_in_v2": 1}) == rec  # unknown keys ignored
    d["train_outputs"][0] = [[0]]  # to_dict gives copies
    assert rec.train_outputs[0] != [[0]]


def test_rescored_against_other_outputs() -> None:
    t = tasks()["3c9b0459"]
    rec = evaluate_native(t, SOLUTIONS["67a3c6ac"])
    relabelled = Task(
        t.id, tuple(type(p)(p.input, o) for p, o in zip(t.train, rec.train_outputs, strict=True)), t.test
    )
    again = rec.rescored(relabelled)
    assert again.all_train_correct and again.id == rec.id and again.test_correct == rec.test_correct
