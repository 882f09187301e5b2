"""ProgramRecord: judging outputs against real ARC tasks, derived facts, serialisation."""

from __future__ import annotations

import json
from functools import cache

import msgpack
import pytest

from soar_async.arc import Task, load_tasks
from soar_async.messages import DecodeError, Evaluated
from soar_async.records import ProgramRecord, evaluate_native, program_id, run_native
from soar_async.runtime.client import exec_request

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
    return {t.id: t for t in load_tasks("arc-agi-1:training")}


@pytest.mark.parametrize("task_id", sorted(SOLUTIONS))
def test_hand_written_solutions_are_correct(task_id: str) -> None:
    t = tasks()[task_id]
    rec = evaluate_native(t, SOLUTIONS[task_id])
    assert rec.train_accuracy == 1.0 and rec.all_train_correct
    assert rec.test_correct == [True] * len(t.test) and rec.test_accuracy == 1.0
    assert rec.fully_correct and not rec.raised_any and rec.all_outputs_valid
    assert rec.id == program_id(task_id, SOLUTIONS[task_id], t.digest) and rec.task_digest == t.digest


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
    assert again.all_train_correct and again.test_correct == rec.test_correct
    # other train outputs make another task: same code, another program id
    assert again.task_digest == relabelled.digest != rec.task_digest
    assert again.id == program_id(t.id, rec.code, relabelled.digest) != rec.id
    hidden = Task(t.id, t.train, tuple(type(p)(p.input, None) for p in t.test))
    assert rec.rescored(hidden).id == rec.id  # the digest leaves test outputs out


# --------------------------------------------------------------------------- one program id


def evaluated_for(t: Task, code: str, **kw: object) -> Evaluated:
    """The Evaluated event an executor would publish for `code` on `t` (run natively here)."""
    req = exec_request(t, code, **kw)  # type: ignore[arg-type]
    outs, errs = run_native(code, t.inputs())
    return Evaluated(
        program_id=req.program_id,
        task_id=req.task_id,
        code=req.code,
        outputs=outs,
        errors=[None if e is None else "exception" for e in errs],
        details=errs,
        parent_id=req.parent_id,
        origin=req.origin,
        model_version=req.model_version,
        generation=req.generation,
        task_digest=req.task_digest,
    )


def every_id(t: Task, code: str) -> set[str]:
    """The program id of `code` on `t` as each way of making a record (or request) gives it."""
    native = evaluate_native(t, code)
    direct = ProgramRecord(
        task_id=t.id,
        task_digest=t.digest,
        code=code,
        train_outputs=native.train_outputs,
        test_outputs=native.test_outputs,
        train_errors=native.train_errors,
        test_errors=native.test_errors,
        train_correct=native.train_correct,
        test_correct=native.test_correct,
    )
    outs, errs = run_native(code, t.inputs())
    ids = {
        "program_id": program_id(t.id, code, t.digest),
        "direct": direct.id,
        "from_outputs": ProgramRecord.from_outputs(t, code, outs, errs).id,
        "evaluate_native": native.id,
        "from_dict": ProgramRecord.from_dict(msgpack.unpackb(msgpack.packb(native.to_dict()))).id,
        "exec_request": exec_request(t, code).program_id,
        "from_evaluated": ProgramRecord.from_evaluated(t, evaluated_for(t, code)).id,
    }
    assert len(set(ids.values())) == 1, ids
    return set(ids.values())


def test_one_program_id_for_every_way_of_making_a_record() -> None:
    code = "def transform(grid):\n    return grid\n"
    one = load_tasks("arc-agi-1:training#007bbfb7")[0]
    two = load_tasks("arc-agi-2:training#007bbfb7")[0]
    assert one.id == two.id and one.digest != two.digest
    # same task id, other grids: another program, whichever way the id is made
    assert every_id(one, code).isdisjoint(every_id(two, code))
    assert every_id(one, code).isdisjoint(every_id(one, code + "\n"))


def test_a_given_id_must_be_the_program_id() -> None:
    t = tasks()["67a3c6ac"]
    rec = evaluate_native(t, SOLUTIONS["67a3c6ac"])
    d = rec.to_dict()
    assert d["task_digest"] == t.digest
    wrong = program_id(t.id, rec.code, "")  # the id without the digest
    with pytest.raises(ValueError, match=f"{wrong}.*{rec.id}"):
        ProgramRecord.from_dict({**d, "id": wrong})
    with pytest.raises(ValueError, match="is not the program id"):
        ProgramRecord.from_dict({**d, "task_digest": "other"})
    with pytest.raises(TypeError, match="task_digest"):
        ProgramRecord.from_dict({k: v for k, v in d.items() if k != "task_digest"})


# --------------------------------------------------------------------------- from_evaluated


def test_from_evaluated_builds_the_whole_record_from_the_event() -> None:
    t = tasks()["3c9b0459"]  # 4 train pairs, 1 test input
    code = SOLUTIONS["3c9b0459"]
    pid = program_id(t.id, code, t.digest)
    ok = [p.output for p in t.train] + [t.test[0].output]
    ev = Evaluated(
        program_id=pid,
        task_id=t.id,
        code=code,
        outputs=[ok[0], None, [[1, 2], [3]], None, ok[4]],
        errors=[None, "timeout", None, "exception", None],
        details=[None, "", None, "ValueError: nope", None],
        parent_id="parent-1",
        origin="refine",
        model_version="v7",
        generation=3,
        task_digest=t.digest,
        duration_s=0.25,
        worker_id="w1",
    )
    # through the wire and back, as a consumer gets it
    ev = Evaluated.decode(ev.encode())
    rec = ProgramRecord.from_evaluated(t, ev)
    assert rec.id == ev.program_id == pid and rec.task_digest == t.digest and rec.code == code
    assert rec.train_outputs == [ok[0], None, None, None] and rec.test_outputs == [ok[4]]
    assert rec.train_errors[:2] == [None, "timeout"] and rec.train_errors[3] == "exception: ValueError: nope"
    assert rec.train_errors[2] is not None and rec.train_errors[2].startswith("invalid output")  # ragged grid
    assert rec.test_errors == [None]
    assert rec.train_correct == [True, False, False, False] and rec.test_correct == [True]
    assert (rec.parent_id, rec.origin, rec.model_version, rec.generation) == ("parent-1", "refine", "v7", 3)
    assert rec.extra == {"duration_s": 0.25, "worker_id": "w1"}
    assert ProgramRecord.from_dict(rec.to_dict()) == rec

    # without details (an older executor), the kinds alone; without a digest, the id still checks it
    bare = Evaluated(
        program_id=pid, task_id=t.id, code=code, outputs=[None] * 5, errors=["timeout"] * 5
    )
    rec = ProgramRecord.from_evaluated(t, bare)
    assert rec.train_errors == ["timeout"] * 4 and rec.origin == "sample" and rec.parent_id is None


def test_from_evaluated_refuses_an_event_of_another_task() -> None:
    one = load_tasks("arc-agi-1:training#007bbfb7")[0]
    two = load_tasks("arc-agi-2:training#007bbfb7")[0]
    code = "def transform(grid):\n    return grid\n"
    ev = evaluated_for(one, code, origin="refine", parent_id="p", model_version="m", generation=1)
    rec = ProgramRecord.from_evaluated(one, ev)
    assert (rec.origin, rec.parent_id, rec.model_version, rec.generation) == ("refine", "p", "m", 1)
    with pytest.raises(ValueError, match="digest"):
        ProgramRecord.from_evaluated(two, ev)
    ev.task_digest = ""  # an event that does not say: the program id still tells
    with pytest.raises(ValueError, match="program id"):
        ProgramRecord.from_evaluated(two, ev)
    with pytest.raises(ValueError, match="not '3c9b0459'"):
        ProgramRecord.from_evaluated(tasks()["3c9b0459"], ev)
    ev.task_digest = one.digest
    ev.code = code + "# edited\n"
    with pytest.raises(ValueError, match="program id"):
        ProgramRecord.from_evaluated(one, ev)


def test_evaluated_schema_carries_the_program() -> None:
    ev = Evaluated(program_id="p", task_id="t", code="c", outputs=[], errors=[])
    d = ev.to_dict()
    assert d["v"] == 2 and {"code", "origin", "model_version", "task_digest", "parent_id", "generation"} <= d.keys()
    with pytest.raises(DecodeError, match="version 1"):
        Evaluated.decode(msgpack.packb({**d, "v": 1}))
    with pytest.raises(DecodeError, match="code"):
        Evaluated.decode(msgpack.packb({k: v for k, v in d.items() if k != "code"}))
    req = exec_request(tasks()["3c9b0459"], "c", origin="refine", model_version="m", parent_id="p", generation=2)
    assert (req.origin, req.model_version, req.parent_id, req.generation) == ("refine", "m", "p", 2)
    assert req.task_digest == tasks()["3c9b0459"].digest
