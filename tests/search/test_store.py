"""The archive's store and the slot plan, without a bus: idempotency, duplicates in the vote, when a task is done."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import msgpack
import pytest

from soar_async.arc import Task, load_tasks
from soar_async.config import SearchConfig
from soar_async.messages import Completions, Evaluated, EvaluatedBatch, ExecBatch, ExecRequest, Proposals, decode
from soar_async.records import evaluate_native
from soar_async.scoring import vote
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
    # The vote reads only test outputs and weights from the store: the same as over whole records.
    for c in (0.0, 1000.0):
        whole = [(r.test_outputs, r.train_accuracy) for r in store.records(task.id) for _ in range(r.extra["count"])]
        assert store.attempts(task.id, c=c) == vote(whole, c=c)
    # The running totals agree with a store that reads the same file from scratch.
    fresh = ArchiveStore(tmp_path / "archive.sqlite")
    a, b = store.status(task.id).to_dict(), fresh.status(task.id).to_dict()
    a.pop("updated_at"), b.pop("updated_at")
    assert a == b


def test_a_completion_batch_travels_as_exec_batches_and_is_stored_in_one_transaction(
    tmp_path: Path, task: Task
) -> None:
    """`exec_batch` groups a completion batch's new programs; the archive stores an
    `EvaluatedBatch` whole or not at all, and counts it exactly as the single events."""
    cfg = SearchConfig(samples_per_task=8, refinements_per_task=0, completions_per_sample_request=8)
    msg = search_task(task, cfg)
    plan = Plan.of(msg)
    texts = [fenced(IDENTITY), fenced(ROT180), fenced(ROT180_COMMENTED), "prose", fenced(FLIP)]
    singles = Proposing().process(plan, completions(plan, 0, texts), origin="sample")
    batched = Proposing().process(plan, completions(plan, 0, texts), origin="sample", batch=2)
    one_by_one = [m for m in singles if isinstance(m, ExecRequest)]
    batches = [m for m in batched if isinstance(m, ExecBatch)]
    assert [len(b) for b in batches] == [2, 1]
    assert batched[-1].entries == singles[-1].entries  # the same Proposals, last
    # A batch stands for exactly the single requests, in order, and survives the wire.
    unpacked = [r for b in batches for r in decode(b.encode()).requests()]
    for r in (*unpacked, *one_by_one):
        r.submitted_at = 0.0
    assert unpacked == one_by_one
    # Its id names its programs: the same programs give the same id, other programs another.
    again = Proposing().process(plan, completions(plan, 0, texts), origin="sample", batch=2)
    assert [b.batch_id for b in again[:2]] == [b.batch_id for b in batches]
    assert batches[0].batch_id != batches[1].batch_id
    # Malformed batches are refused with the reason, not half-read.
    with pytest.raises(ValueError, match="differ in 'parent_id'"):
        ExecBatch.of("x", [one_by_one[0], dataclasses.replace(one_by_one[1], parent_id="p")])
    broken = batches[0].to_dict()
    broken["codes"] = broken["codes"][:1]
    with pytest.raises(ValueError, match="codes do not have 2 rows"):
        decode(msgpack.packb(broken)).requests()

    store = ArchiveStore(tmp_path / "archive.sqlite")
    store.add_search(msg)
    store.add_proposals(batched[-1])
    evs = [evaluated(task, r.code) for r in unpacked]
    bad = EvaluatedBatch.of("b", [evs[0], evs[1]])
    bad.outputs[1] = bad.outputs[1][:1]  # the rotation's outputs cut short: not of this task
    with pytest.raises(ValueError):
        store.add_evaluated_many(bad.items())
    assert store.status(task.id).programs == 0 and store.records(task.id) == []  # nothing half-stored
    good = decode(EvaluatedBatch.of("b", evs).encode())
    assert store.add_evaluated_many(good.items()) == 3 and store.add_evaluated_many(good.items()) == 0
    st = store.status(task.id)
    assert st.state == "done" and st.programs == 3 and st.correct == 1
    fresh = ArchiveStore(tmp_path / "archive.sqlite")
    a, b = st.to_dict(), fresh.status(task.id).to_dict()
    a.pop("updated_at"), b.pop("updated_at")
    assert a == b


def test_norms_are_the_same_in_every_process() -> None:
    """A set literal compiles to a frozenset constant, whose repr follows the per-process string
    hash seed: the norm must not (proposers and archives in other processes compare norms)."""
    import subprocess
    import sys

    code = "def transform(grid):\n    return [[c for c in r if c in {'a', 'b', 'c', 1.5}] for r in grid]\n"
    run = [sys.executable, "-c", f"from soar_async.search.plan import norm_key; print(norm_key({code!r}))"]
    seen = {
        subprocess.run(
            run, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seen == {norm_key(code) + "\n"}
    assert norm_key("x = 1") != norm_key("x = 1.0") and norm_key("x = 'a'") == norm_key('x = "a"')
