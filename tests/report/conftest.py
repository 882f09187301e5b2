"""One small real run for every report test: the scripted search (`tests/search/scripted.py`)
with the LLM test double, made once per session, with its report and its `soar results --json`."""

from __future__ import annotations

import json

import pytest

from tests.report.helpers import ScriptedRun, soar_out
from tests.search.scripted import scripted_run as run_scripted


@pytest.fixture(scope="session")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> ScriptedRun:
    run_dir = run_scripted(tmp_path_factory.mktemp("report-run"))
    results = json.loads(soar_out("results", "--run", str(run_dir), "--json"))
    out = soar_out("report", "--run", str(run_dir))  # the default place: DIR/report.html
    return ScriptedRun(run_dir, run_dir / "report.html", results, out)
