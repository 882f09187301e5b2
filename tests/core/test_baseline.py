"""The non-learning program source: real programs, right where they should be, never peeking at tests."""

from __future__ import annotations

from soar_async import baseline
from soar_async.arc import load_tasks
from soar_async.records import evaluate_native


def test_fitted_colour_map_comes_from_train_pairs_only() -> None:
    task = load_tasks("c8f0f002")[0]
    assert baseline.fitted_colour_map(task) == {7: 5}
    assert baseline.fitted_colour_map(load_tasks("007bbfb7")[0]) is None  # shapes differ: no cell-wise map


def test_each_baseline_program_is_named_and_solves_what_it_should() -> None:
    expected = {"3c9b0459": "rot180", "67a3c6ac": "flip_lr", "68b16354": "flip_ud", "a416b8f3": "tile1x2",
                "c8f0f002": "colour_map"}  # fmt: skip
    for task in load_tasks("arc-agi-1:training#" + ",".join(expected)):
        progs = dict(baseline.programs_for(task))
        rec = evaluate_native(task, progs[expected[task.id]])
        assert rec.fully_correct, task.id
        wrong = evaluate_native(task, progs["transpose"])
        assert not wrong.fully_correct


def test_programs_run_on_every_real_input_shape() -> None:
    for task in load_tasks("arc-agi-1:evaluation[:15]"):
        for name, code in baseline.programs_for(task):
            rec = evaluate_native(task, code)
            assert len(rec.train_outputs) == len(task.train), name
            for err in rec.train_errors + rec.test_errors:
                assert err is None or "Error" in err or "grid" in err or "more than" in err, (name, err)
