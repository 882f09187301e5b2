"""The archive's store and the slot plan, without a bus: idempotency, duplicates in the vote, when a task is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from soar_async.arc import Task, load_tasks
from soar_async.config import SearchConfig
from soar_async.messages import Completions, Evaluated, Proposals
from soar_async.records import evaluate_native
from soar_async.search.common import Proposing, chain
from soar_async.search.plan import Plan, norm_key, search_task, slot_size, slots
from soar_async.search.store import ArchiveStore, UnknownTask

ROT180 = "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n"
ROT180_COMMENTED = ROT180.replace("    return", "    # turn it around\n    return")
IDENTITY = "def transform(grid):\n    return grid\n"
FLIP = "import numpy as np\n\ndef transform(grid):\n    return np.flipud(np.array(grid)).tolist()\n"


@pytest.fixture(scope="module")
def task() -> Task:
    return load_tasks("arc-agi-1:training#3c9b0459")[0]


def evaluated(task: Task, code: str) -> Evaluated:
    """The Evaluated an executor would send, from a native run (same outputs for these programs)."""
    rec = evaluate_native(task, code)
    outputs = rec.train_outputs + rec.test_outputs
    errors = [None if e is None else "exception" for e in rec.train_errors + rec.test_errors]
    return Evaluated(
        program_id=rec.id, task_id=task.id, code=code, outputs=outputs, errors=errors,
        train_correct=rec.train_correct, fitness=rec.train_accuracy, task_digest=task.digest,
    )  # fmt: skip


def completions(plan: Plan, slot: int, texts: list[str]) -> Completions:
    return Completions(
        request_id=plan.request_id("sample", slot), task_id=plan.task.id, texts=texts, kind="sample",
        tokens=[10] * len(texts), finish_reasons=["stop"] * len(texts), completion_tokens=10 * len(texts),
        meta={"slot": slot}, model_version="base",
    )  # fmt: skip


def fenced(code: str) -> str:
    return f"```python\n{code}```"


def test_slots_cover_the_budget_exactly() -> None:
    assert slots(0, 4) == 0 and slots(16, 4) == 4 and slots(17, 4) == 5 and slots(3, 50) == 1
    assert [slot_size(10, 4, s) for s in range(slots(10, 4))] == [4, 4, 2]
    cfg = SearchConfig(samples_per_task=10, completions_per_sample_request=4, requests_in_flight=2)
    plan = Plan.of(search_task(load_tasks("arc-agi-1:training#3c9b0459")[0], cfg))
    # Slots 0 and 1 start the phase; every later slot is sent by exactly one completion.
    later = sorted(s for k in range(plan.slots("sample")) for s in chain(plan, "sample", k))
    assert later == [2]
    assert chain(plan, "sample", 0) == [2] and chain(plan, "sample", 1) == []


def test_norms_ignore_comments_and_layout() -> None:
    assert norm_key(ROT180) == norm_key(ROT180_COMMENTED)
    assert norm_key(ROT180) != norm_key(IDENTITY)
    assert norm_key("def transform(:") == norm_key("def transform(:")  # unparsable code keys by its text


def test_store_is_idempotent_and_counts_duplicates_in_the_vote(tmp_path: Path, task: Task) -> None:
    cfg = SearchConfig(samples_per_task=8, refinements_per_task=0, completions_per_sample_request=4)
    msg = search_task(task, cfg)
    store = ArchiveStore(tmp_path / "archive.sqlite")
    with pytest.raises(UnknownTask):
        store.add_evaluated(evaluated(task, IDENTITY))
    plan = store.add_search(msg)
    store.add_search(msg)
    proposing = Proposing()
    # Slot 0: the identity three times (once with a comment-free rewrite), prose, and slot 1:
    # the rotation twice (once commented) and the flip once, and prose.
    out0 = proposing.process(plan, completions(plan, 0, [fenced(IDENTITY)] * 3 + ["no code here"]), origin="sample")
    out1 = proposing.process(
        plan, completions(plan, 1, [fenced(ROT180), fenced(ROT180_COMMENTED), fenced(FLIP), "prose"]), origin="sample"
    )
    execs = [m for m in out0 + out1 if not isinstance(m, Proposals)]
    assert len(execs) == 3  # identity, rotation, flip: one run per norm
    for props in (out0[-1], out1[-1]):
        assert store.add_proposals(props) and not store.add_proposals(props)
    st = store.status(task.id)
    assert st.state == "running" and st.pending == 3 and st.sample_resolved == 2 and not st.sampling_settled
    for ex in execs:
        ev = evaluated(task, ex.code)
        assert store.add_evaluated(ev) and not store.add_evaluated(ev)
    # The commented rotation run as well (a restarted proposer forgot it sent the rotation):
    # another program id, the same norm, so not a second program.
    again = evaluated(task, ROT180_COMMENTED)
    assert again.program_id != evaluated(task, ROT180).program_id
    assert not store.add_evaluated(again)
    st = store.status(task.id)
    assert st.state == "done" and st.sampling_settled and st.pending == 0
    assert st.programs == 3 and st.correct == 1 and st.best_fitness == 1.0 and st.tokens == 80
    counts = {r.code: r.extra["count"] for r in store.records(task.id)}
    assert counts == {IDENTITY: 3, ROT180: 2, FLIP: 1}
    assert store.completion_stats(task.id) == {"completions": 8, "without_program": 2, "duplicates": 3}
    # The rotation is right: it outweighs the identity written more often.
    attempts = store.attempts(task.id, c=1000.0)
    assert attempts[0][0] == task.test[0].output
    # Without the train accuracy weight, the identity's three copies would win.
    assert store.attempts(task.id, c=0.0)[0][0] == task.test[0].input
    # The running totals agree with a store that reads the same file from scratch.
    fresh = ArchiveStore(tmp_path / "archive.sqlite")
    a, b = store.status(task.id).to_dict(), fresh.status(task.id).to_dict()
    a.pop("updated_at"), b.pop("updated_at")
    assert a == b
