"""The report in a real browser: headless Chromium opens it from a file:// URL, runs its scripts,
and we read the DOM it dumps and look at a screenshot.

Chromium is Debian's `chromium` package, installed by `ops/setup.sh dev`. Without it this test
fails (it is never skipped): the report's scripts would otherwise go untested.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from soar_async.render import PALETTE
from tests.report.helpers import Dom, ScriptedRun

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if path is None:
        pytest.fail(
            f"{CHROMIUM} is missing: the report's browser test needs Debian's chromium package. "
            "`ops/setup.sh dev` (make test) installs it; by hand: apt-get update && apt-get install -y chromium"
        )
    return path


def browse(url: str, tmp_path: Path, *extra: str) -> str:
    """Run headless Chromium on `url`; its stdout (the DOM with --dump-dom)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def shown(dom: Dom) -> list[str]:
    return [s.attrs["data-task-id"] for s in dom.root.find_all("section", cls="task") if "hidden" not in s.attrs]


def test_the_browser_runs_the_report(scripted_run: ScriptedRun, tmp_path: Path) -> None:
    res = scripted_run.results
    url = scripted_run.report.resolve().as_uri()
    dom = Dom(browse(url, tmp_path, "--dump-dom"))
    assert dom.root.find_all("body")[0].attrs.get("data-ready") == "1"  # the inline script ran to its end
    sections = dom.root.find_all("section", cls="task")
    assert len(sections) == res["tasks"] == 4
    assert dom.root.by_id("summary-score").text() == f"{res['score']:.3f}"
    assert dom.root.by_id("summary-tasks").text() == str(res["tasks"])
    assert sorted(shown(dom)) == sorted(res["per_task"])  # no filter: every task shown
    assert dom.root.by_id("filter-count").text() == "4 of 4 tasks shown"
    painted = dom.root.find_all("canvas", cls="g")
    assert painted and all(c.attrs.get("data-done") == "1" for c in painted)  # a small report paints at once

    # The filter box, driven by the URL's fragment as a link would open it.
    solved = Dom(browse(url + "#filter=solved", tmp_path, "--dump-dom"))
    assert sorted(shown(solved)) == sorted(res["solved"]) == ["3c9b0459", "67a3c6ac"]
    assert solved.root.by_id("filter-count").text() == "2 of 4 tasks shown"
    unsolved = Dom(browse(url + "#filter=unsolved", tmp_path, "--dump-dom"))
    assert sorted(shown(unsolved)) == sorted(set(res["per_task"]) - set(res["solved"]))
    by_id = Dom(browse(url + "#filter=all&q=68B1", tmp_path, "--dump-dom"))
    assert shown(by_id) == ["68b16354"]
    (state,) = by_id.root.find_all("select", id="filter-state")
    assert [o.attrs.get("value") for o in state.find_all("option")] == ["all", "solved", "unsolved"]


def test_a_screenshot_shows_the_grids(scripted_run: ScriptedRun, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    browse(scripted_run.report.resolve().as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 1
    assert any(c != (255, 255, 255) for _, c in colours)
    # The canvases were painted: ARC colours fill whole cells (many pixels each).
    counts = {c: n for n, c in colours}
    arc = {tuple(int(v[i : i + 2], 16) for i in (1, 3, 5)) for v in PALETTE.values()}
    assert sum(1 for c in arc if counts.get(c, 0) > 200) >= 5
