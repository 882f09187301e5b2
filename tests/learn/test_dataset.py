"""A generation's training data: which programs become examples, and seeds that never touch the searched tasks."""

from __future__ import annotations

import json

import pytest

from soar_async.arc import Task, load_tasks
from soar_async.learn.dataset import DatasetStats, seed_examples, task_examples
from soar_async.records import ProgramRecord, evaluate_native

ROT180 = "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n"
FLIP = "import numpy as np\n\ndef transform(grid):\n    return np.flipud(np.array(grid)).tolist()\n"
IDENTITY = "def transform(grid):\n    return grid\n"
CONSTANT = "def transform(grid):\n    return [[1, 2], [3, 4]]\n"
CRASH = "def transform(grid):\n    raise ValueError('no')\n"


@pytest.fixture(scope="module")
def task() -> Task:
    return load_tasks("arc-agi-1:training#3c9b0459")[0]


def records(task: Task, generation: int = 0) -> list[ProgramRecord]:
    return [evaluate_native(task, c, generation=generation) for c in (ROT180, FLIP, IDENTITY, CONSTANT, CRASH)]


def test_only_programs_passing_the_reuse_filters_become_examples(task: Task) -> None:
    examples, stats = task_examples(task, records(task), sampling_per_task=10, refinement_per_task=10)
    answers = [e["messages"][-1]["content"] for e in examples]
    # The rotation (right) and the flip (wrong, but a real program) are relabelled; the
    # identity and the pasted constant are kept out by the filters, the crash has no outputs.
    assert len(examples) == 2 and all(e["kind"] == "sample" for e in examples)
    assert any("rot90" in a for a in answers) and any("flipud" in a for a in answers)
    assert not any("return grid\n" in a or "[[1, 2]" in a for a in answers)
    assert stats.programs == 5 and stats.relabellable == 4 and stats.usable == 2
    assert stats.rejected == {"identity_like": 1, "near_constant": 1, "hardcoded": 1}
    # The flip's example is a relabelled task: its prompt shows the flip's outputs, which are
    # not the task's real outputs.
    flip = next(e for e in examples if "flipud" in e["messages"][-1]["content"])
    assert flip["program_id"] == evaluate_native(task, FLIP).id
    json.dumps(examples)  # plain data: it travels as JSONL


def test_later_generations_are_left_out_of_an_earlier_generations_data(task: Task) -> None:
    recs = [evaluate_native(task, ROT180, generation=0), evaluate_native(task, FLIP, generation=1)]
    early, _ = task_examples(task, recs, sampling_per_task=10, refinement_per_task=0, up_to_generation=0)
    late, _ = task_examples(task, recs, sampling_per_task=10, refinement_per_task=0, up_to_generation=1)
    assert len(early) == 1 and "rot90" in early[0]["messages"][-1]["content"]
    assert len(late) == 2


def test_seed_examples_come_from_other_tasks_only() -> None:
    selector = "arc-agi-1:training[:6]"
    ids = [t.id for t in load_tasks(selector)]
    examples, stats = seed_examples(f"baseline:{selector}", exclude=ids[:2], per_task=3)
    assert {e["task_id"] for e in examples} <= set(ids[2:]) and len({e["task_id"] for e in examples}) == 4
    assert all(e["kind"] == "seed" for e in examples)
    assert stats.tasks == 4 and stats.seed_examples == len(examples) <= 12
    with pytest.raises(ValueError, match="baseline:SELECTOR"):
        seed_examples("somewhere:else", exclude=[], per_task=3)


def test_stats_add_up_and_round_trip() -> None:
    a = DatasetStats(tasks=1, programs=5, usable=2, rejected={"hardcoded": 1}, sampling_examples=2)
    b = DatasetStats(tasks=1, programs=3, usable=1, rejected={"hardcoded": 2, "degenerate": 1}, seed_examples=4)
    a.add(b)
    assert (a.tasks, a.programs, a.usable, a.examples) == (2, 8, 3, 6)
    assert a.rejected == {"hardcoded": 3, "degenerate": 1}
    assert DatasetStats.from_dict(a.to_dict()) == a
