"""The learning loop's table, as `soar daemon` ends with it and `soar status` shows it."""

from __future__ import annotations

import pytest

from actors.conductor import ConductorState
from soar_async.learn.report import render_generations
from soar_async.runtime.status import render_status

HISTORY = [
    {
        "generation": 0, "model_version": "base", "programs": 41, "right_on_train": 1, "solved": 0,
        "score": 0.0, "search_s": 212.4, "dataset": {"examples": 58},
        "train": {"version": "g1-0a1b2c3d", "first_loss": 1.25, "final_loss": 0.5, "seconds": 402.0},
    },
    {"generation": 1, "model_version": "g1-0a1b2c3d", "programs": 37, "right_on_train": 2, "solved": 1,
     "score": 1 / 3, "search_s": 198.0},
]  # fmt: skip


def test_the_table_has_a_row_per_generation_with_its_model_data_and_training() -> None:
    lines = render_generations(HISTORY).splitlines()
    assert lines[0].split()[:3] == ["gen", "model", "programs"]
    row0, row1 = lines[2].split(), lines[3].split()
    assert row0 == ["0", "base", "41", "1", "0", "0.000", "212", "58", "1.25->0.50", "402"]
    assert row1 == ["1", "g1-0a1b2c3d", "37", "2", "1", "0.333", "198", "-", "-", "-"]


def test_status_shows_the_loop_where_a_conductor_runs() -> None:
    state = ConductorState(tasks=["a", "b", "c"], generation=1, phase="train", model_version="g1-0a1b2c3d")
    state.history = HISTORY
    st = {"nats": "nats://x", "workers": [], "queues": [], "streams": {}, "tasks": [], "conductor": state.__dict__}
    text = render_status(st)
    assert "learning loop: generation 1, phase train, model g1-0a1b2c3d, 3 tasks" in text
    assert "1.25->0.50" in text
    assert "learning loop" not in render_status({**st, "conductor": None})


def test_conductor_state_round_trips_and_refuses_an_unknown_phase() -> None:
    state = ConductorState(tasks=["a"], generation=2, phase="swap", model_version="g2-x", history=list(HISTORY))
    assert ConductorState.decode(state.encode()) == state
    with pytest.raises(ValueError, match="nap"):
        ConductorState.decode(state.encode().replace(b'"swap"', b'"nap"'))
