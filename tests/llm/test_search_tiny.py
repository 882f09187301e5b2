"""The whole search loop with a real model: the tiny random Qwen2 through vLLM, the LLM actor and the bus.

Nothing needs to be solved (the tiny model writes noise); everything must flow and be
recorded: every slot resolved, every completion archived with its tokens and model version,
the submission written.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from soar_async.arc import load_tasks
from soar_async.config import Config, apply
from soar_async.scoring import read_submission
from soar_async.search.run import search


def shortest_tasks(n: int) -> list:  # type: ignore[type-arg]
    tasks = load_tasks("arc-agi-1:training")
    return sorted(tasks, key=lambda t: len(json.dumps(t.to_json())))[:n]


@pytest.mark.slow
def test_search_with_the_tiny_model_through_vllm(tiny_model_dir: Path, tmp_path: Path) -> None:
    tasks = shortest_tasks(2)
    values = {
        "model": {"engine": "vllm", "path": str(tiny_model_dir), "max_concurrent_requests": 8, "seed": 0},
        "search": {
            "completions_per_sample_request": 2,
            "completions_per_refine_request": 2,
            "requests_in_flight": 2,
            "max_tokens_sample": 48,
            "max_tokens_refine": 48,
        },
        "sandbox": {"workers": 1},
    }
    cfg = apply(Config(), values, "test")
    run = tmp_path / "run"
    report = anyio.run(lambda: search(tasks, run_dir=run, config=cfg, samples=4, refinements=4, timeout=600))

    assert report.unfinished == []
    assert report.score is not None and 0.0 <= report.score <= 1.0
    assert set(read_submission(run / "submission.json", tasks)) == {t.id for t in tasks}
    db = sqlite3.connect(run / "archive.sqlite")
    for t in tasks:
        rows = db.execute(
            "SELECT kind, slot, skipped, model_version, completion_tokens, error FROM slots WHERE task_id=?", (t.id,)
        ).fetchall()
        sample = [r for r in rows if r[0] == "sample"]
        refine = [r for r in rows if r[0] == "refine"]
        assert sorted(r[1] for r in sample) == [0, 1] and sorted(r[1] for r in refine) == [0, 1]
        for _kind, _slot, skipped, version, tokens, error in sample:
            assert not skipped and error == "" and version == "base" and tokens > 0
        n = db.execute("SELECT COUNT(*), MIN(tokens) FROM completions WHERE task_id=? AND kind='sample'", (t.id,))
        count, min_tokens = n.fetchone()
        assert count == 4 and min_tokens > 0
