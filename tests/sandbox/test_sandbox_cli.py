"""`soar sandbox run` and `soar bench sandbox` end to end through the CLI entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from soar_async.cli import main

SOLVER = """import numpy as np
def transform(grid):
    a = np.array(grid)
    top = np.hstack([a, a, a])
    mid = np.hstack([np.fliplr(a)] * 3)
    return np.vstack([top, mid, top])
"""


TASK = "arc-agi-1:evaluation#00576224"


def test_run_json(sandbox_built: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text(SOLVER)
    assert main(["sandbox", "run", "--task", TASK, "--file", str(prog), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"train", "test"}
    for entry in out["train"] + out["test"]:
        assert set(entry) == {"ok", "correct", "error", "output"}
        assert entry["ok"] is True and entry["error"] is None
    assert all(e["correct"] is True for e in out["train"])


def test_run_reports_errors_and_wrong_answers(
    sandbox_built: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prog = tmp_path / "p.py"
    prog.write_text(
        "def transform(g):\n    if len(g) == 2 and g[0][0] == 8:\n        raise ValueError('no')\n    return g\n"
    )
    assert main(["sandbox", "run", "--task", TASK, "--file", str(prog), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kinds = [(e["error"], e["correct"]) for e in out["train"]]
    assert ("exception", False) in kinds and (None, False) in kinds
    assert main(["sandbox", "run", "--task", TASK, "--file", str(prog)]) == 0
    text = capsys.readouterr().out
    assert "exception: ValueError: no" in text and "wrong" in text


def test_run_rejects_multi_task_selector(
    tmp_path: Path, prize_files: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    challenges = prize_files("arc-agi-1:evaluation", ["00576224", "009d5c81", "00dbd492"])
    prog = tmp_path / "p.py"
    prog.write_text(SOLVER)
    rc = main(["sandbox", "run", "--task", f"{challenges}[:2]", "--file", str(prog)])
    assert rc == 1
    assert "exactly one" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_sandbox_json(sandbox_built: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sandbox", "--json", "--n", "6", "--workers", "1", "--no-heavy"]) == 0
    report = json.loads(capsys.readouterr().out)
    executors = {r["executor"] for r in report["rows"]}
    assert len(executors) == 5 and len(report["rows"]) == 5
    assert report["output_mismatches_vs_native"] == 0
    assert set(report["ratios"]["light"]) >= {"c_over_a", "c_over_b", "c_over_b2"}
