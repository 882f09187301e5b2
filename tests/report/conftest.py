"""One small real run for every report test: the scripted search (`tests/search/scripted.py`)
with the LLM test double, made once per session, with its report and its `soar results --json`."""

from __future__ import annotations

import json

import anyio
import pytest

from soar_async.arc import load_tasks
from soar_async.search.run import search
from tests.report.helpers import ScriptedRun, soar_out
from tests.search.scripted import TASK_IDS, write_script
from tests.search.test_search_e2e import double_config


@pytest.fixture(scope="session")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> ScriptedRun:
    base = tmp_path_factory.mktemp("report-run")
    tasks = load_tasks("arc-agi-1:training#" + ",".join(TASK_IDS))
    cfg = double_config(write_script(base / "script.json", tasks))
    run_dir = base / "run"
    rep = anyio.run(lambda: search(tasks, run_dir=run_dir, config=cfg, timeout=300))
    assert rep.unfinished == []
    results = json.loads(soar_out("results", "--run", str(run_dir), "--json"))
    out = soar_out("report", "--run", str(run_dir))  # the default place: DIR/report.html
    return ScriptedRun(run_dir, run_dir / "report.html", results, out)
