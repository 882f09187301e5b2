"""The search end to end with the LLM test double: proposer, refiner, archive, executors, vote.

Everything but the model is real: an embedded nats-server, the LLM actor (running the
scripted test double engine), the wasm sandbox, the SQLite archive. The score must equal
the one worked out by hand in `scripted.py`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from soar_async.arc import load_tasks
from soar_async.scoring import read_submission
from soar_async.search.run import search
from tests.search.scripted import EXPECTED_SCORE, TASK_IDS, double_config, write_script


@pytest.mark.slow
def test_search_scores_what_was_worked_out_by_hand(tmp_path: Path) -> None:
    tasks = load_tasks("arc-agi-1:training#" + ",".join(TASK_IDS))
    prompts = tmp_path / "prompts.jsonl"
    cfg = double_config(write_script(tmp_path / "script.json", tasks, log=prompts))
    run = tmp_path / "run"
    report = anyio.run(lambda: search(tasks, run_dir=run, config=cfg, timeout=300))

    assert report.unfinished == []
    assert report.per_task["3c9b0459"]["score"] == EXPECTED_SCORE["3c9b0459"]
    assert {t: report.per_task[t]["score"] for t in TASK_IDS} == EXPECTED_SCORE
    assert report.score == sum(EXPECTED_SCORE.values()) / len(EXPECTED_SCORE)
    sub = read_submission(run / "submission.json", tasks)
    assert set(sub) == set(TASK_IDS)
    # Resuming a finished run answers from its archive without starting anything.
    again = anyio.run(lambda: search(tasks, run_dir=run, config=cfg, resume=True, timeout=300))
    assert again.already_done and again.score == report.score and again.per_task == report.per_task

    db = sqlite3.connect(run / "archive.sqlite")
    # Every slot resolved exactly once: 2 sampling slots per task; 4 refinement slots where
    # arms exist, skipped where none.
    slots = dict(db.execute("SELECT task_id || ':' || kind, COUNT(*) FROM slots GROUP BY 1").fetchall())
    for t in TASK_IDS:
        assert slots[f"{t}:sample"] == 2
        assert slots[f"{t}:refine"] == 4
    skipped = dict(db.execute("SELECT task_id, SUM(skipped) FROM slots WHERE kind='refine' GROUP BY 1").fetchall())
    assert skipped == {"3c9b0459": 0, "67a3c6ac": 0, "68b16354": 4, "007bbfb7": 4}
    # Code-less completions are recorded, not dropped; duplicates are run once.
    no_code = db.execute("SELECT COUNT(*) FROM completions WHERE task_id='007bbfb7' AND norm IS NULL").fetchone()[0]
    assert no_code == 8
    ran = db.execute("SELECT COUNT(*) FROM programs WHERE task_id='68b16354'").fetchone()[0]
    assert ran == 1  # eight crashing completions, one program
    # The identity and its comment-only rewrite are one norm: run once, counted as often as written.
    norms = db.execute(
        "SELECT COUNT(DISTINCT norm), COUNT(DISTINCT program_id) FROM completions "
        "WHERE task_id='67a3c6ac' AND kind='sample' AND norm IS NOT NULL"
    ).fetchone()
    assert norms == (1, 2)
    identity_runs = db.execute("SELECT COUNT(*) FROM programs WHERE task_id='67a3c6ac' AND origin='sample'").fetchone()[
        0
    ]
    assert identity_runs == 1
    # Refinements of 67a3c6ac name their parent and carry its feedback.
    child = db.execute(
        "SELECT program_id, parent_id, origin FROM programs WHERE task_id='67a3c6ac' AND all_train=1"
    ).fetchone()
    assert child is not None and child[2] == "refine" and child[1] is not None
    refine_prompts = [json.loads(line) for line in prompts.read_text().splitlines()]
    refine_prompts = [p for p in refine_prompts if p["kind"] == "refine"]
    assert refine_prompts
    identity_prompts = [p for p in refine_prompts if "return grid" in p["messages"][1]["content"]]
    assert identity_prompts
    n_train = len(tasks[TASK_IDS.index("67a3c6ac")].train)
    assert any(f"0/{n_train}" in p["messages"][1]["content"] for p in identity_prompts)


@pytest.mark.slow
def test_a_seeded_program_becomes_a_parent(tmp_path: Path) -> None:
    """Programs imported into the archive before the search are REX arms like any other:
    68b16354's samples all crash, yet refinement starts from the imported (right) program."""
    from soar_async.records import evaluate_native
    from soar_async.relabel import write_parquet
    from soar_async.search.exchange import import_parquet

    tasks = load_tasks("arc-agi-1:training#68b16354")
    flip = "import numpy as np\n\ndef transform(grid):\n    return np.flipud(np.array(grid)).tolist()\n"
    seeded = evaluate_native(tasks[0], flip)
    assert seeded.all_train_correct
    write_parquet([seeded], tmp_path / "seed.parquet")
    run = tmp_path / "run"
    got = import_parquet(tmp_path / "seed.parquet", run, tasks="arc-agi-1:training#68b16354")
    assert got.added == 1
    prompts = tmp_path / "prompts.jsonl"
    cfg = double_config(write_script(tmp_path / "script.json", tasks, log=prompts))
    report = anyio.run(lambda: search(tasks, run_dir=run, config=cfg, resume=True, timeout=300))
    assert report.unfinished == [] and report.per_task["68b16354"]["score"] == 1.0
    db = sqlite3.connect(run / "archive.sqlite")
    refine = db.execute(
        "SELECT COUNT(*), SUM(skipped), COUNT(DISTINCT parent_id) FROM slots WHERE kind='refine'"
    ).fetchone()
    assert refine == (4, 0, 1)
    assert db.execute("SELECT DISTINCT parent_id FROM slots WHERE kind='refine'").fetchone()[0] == seeded.id
    assert any("np.flipud" in json.loads(line)["messages"][1]["content"] for line in prompts.read_text().splitlines())


def test_joining_a_system_without_the_search_roles_names_them(tmp_path: Path) -> None:
    from soar_async.bus.conn import BusConfig
    from soar_async.bus.server import NatsServer

    tasks = load_tasks("arc-agi-1:training#3c9b0459")
    with NatsServer(tmp_path / "nats") as srv:
        with pytest.raises(ValueError) as e:
            anyio.run(lambda: search(tasks, run_dir=tmp_path / "run", bus=BusConfig.from_url(srv.url), timeout=30))
    msg = str(e.value)
    assert "no live executor, llm, proposer, refiner, archive worker(s)" in msg and "soar worker --role" in msg
