"""A script for the LLM test double (`soar_async.llm.double`): known-right programs for real ARC tasks
among wrong, crashing and code-less answers, and the score a search over them must reach.

Tasks (ARC-AGI-1 training):
- 3c9b0459 (rotate 180): sampling writes the right program among a wrong, a crashing and a
  code-less answer; refinement rewrites the wrong one, still wrong. Solved by sampling.
- 67a3c6ac (mirror left-right): sampling writes only the identity (runs, 0 pairs right) and
  prose; refinement writes the right program. Solved only through refinement.
- 68b16354 (flip upside-down): every sample crashes: no arms, refinement slots skipped.
- 007bbfb7: sampling never writes code: nothing to vote on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from soar_async.arc import Task, load_tasks
from soar_async.config import Config, apply
from soar_async.prompts import grid_text
from soar_async.search.run import search


def fenced(body: str) -> str:
    return f"Let me think about it.\n\n```python\nimport numpy as np\n\ndef transform(grid):\n{body}\n```\n"


RIGHT = {
    "3c9b0459": fenced("    return np.rot90(np.array(grid), 2).tolist()"),
    "67a3c6ac": fenced("    return np.fliplr(np.array(grid)).tolist()"),
}
IDENTITY = fenced("    return grid")
IDENTITY_REWRITTEN = fenced("    # the grid stays as it is\n    return grid")
CRASH = fenced("    raise ValueError('no idea')")
PROSE = "I am not sure what the rule is; the grids look symmetric."

SAMPLES: dict[str, list[str]] = {
    "3c9b0459": [RIGHT["3c9b0459"], IDENTITY, CRASH, PROSE],
    "67a3c6ac": [IDENTITY, PROSE, IDENTITY_REWRITTEN],
    "68b16354": [CRASH],
    "007bbfb7": [PROSE],
}
REFINES: dict[str, list[str]] = {
    "3c9b0459": [IDENTITY],
    "67a3c6ac": [RIGHT["67a3c6ac"], PROSE],
}
TASK_IDS = list(SAMPLES)
EXPECTED_SCORE = {"3c9b0459": 1.0, "67a3c6ac": 1.0, "68b16354": 0.0, "007bbfb7": 0.0}


def write_script(path: Path, tasks: list[Task], *, log: Path | None = None, delay_s: float = 0.0) -> Path:
    """The double engine's script: a rule per task and kind, keyed by the task's first train input."""
    rules: list[dict[str, Any]] = []
    for t in tasks:
        key = grid_text(t.train[0].input)
        if t.id in REFINES:
            rules.append({"contains": key, "kind": "refine", "texts": REFINES[t.id]})
        rules.append({"contains": key, "kind": "sample", "texts": SAMPLES[t.id]})
    script: dict[str, Any] = {"rules": rules, "default": [PROSE], "delay_s": delay_s}
    if log is not None:
        script["log"] = str(log)
    path.write_text(json.dumps(script))
    return path


def double_config(script: Path, **search_keys: object) -> Config:
    """The configuration of a search whose model is the test double reading `script`."""
    values = {
        "model": {"engine": "double", "path": str(script), "max_concurrent_requests": 8},
        "search": {
            "samples_per_task": 8,
            "refinements_per_task": 8,
            "completions_per_sample_request": 4,
            "completions_per_refine_request": 2,
            "requests_in_flight": 2,
            "stop_after_correct": 0,
            "rex_islands": 2,
            **search_keys,
        },
        "sandbox": {"workers": 2},
    }
    return apply(Config(), values, "test")


def scripted_run(base: Path) -> Path:
    """Run the scripted search over `TASK_IDS` to its end in `base/run`; its run directory."""
    tasks = load_tasks("arc-agi-1:training#" + ",".join(TASK_IDS))
    cfg = double_config(write_script(base / "script.json", tasks))
    run_dir = base / "run"
    report = anyio.run(lambda: search(tasks, run_dir=run_dir, config=cfg, timeout=300))
    assert report.unfinished == [], report.unfinished
    return run_dir
