"""`soar report` on a real small run (the scripted search): what the HTML file holds, read back
as a document, against `soar results --json` and what `scripted.py` says each task does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from soar_async.cli import main
from soar_async.render import PALETTE
from soar_async.report.build import build_report
from tests.report.helpers import Dom, ScriptedRun
from tests.search.scripted import EXPECTED_SCORE, RIGHT, TASK_IDS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dom(scripted_run: ScriptedRun) -> Dom:
    return Dom(scripted_run.report.read_text())


def test_the_command_says_what_it_wrote(scripted_run: ScriptedRun) -> None:
    out = scripted_run.report_stdout
    assert out.startswith(f"wrote {scripted_run.report} (") and "4 task(s), 2 solved, score 50.00%" in out


def test_every_task_is_there_with_marks_matching_soar_results(scripted_run: ScriptedRun, dom: Dom) -> None:
    res = scripted_run.results
    sections = dom.root.find_all("section", cls="task")
    assert sorted(s.attrs["data-task-id"] for s in sections) == sorted(TASK_IDS) == sorted(res["per_task"])
    assert dom.root.by_id("summary-tasks").text() == str(res["tasks"]) == "4"
    assert dom.root.by_id("summary-score").text() == f"{res['score']:.3f}" == "0.500"
    assert dom.root.by_id("summary-solved").text() == str(len(res["solved"])) == "2"
    scores = []
    for s in sections:
        tid = s.attrs["data-task-id"]
        per = res["per_task"][tid]
        assert s.attrs["id"] == f"task-{tid}"
        assert s.attrs["data-solved"] == ("1" if tid in res["solved"] else "0")
        assert float(s.attrs["data-score"]) == per["score"] == EXPECTED_SCORE[tid]
        marks: dict[int, list[bool]] = {}
        for fig in s.find_all("figure", cls="attempt"):
            right = fig.attrs["data-right"]
            assert right in ("1", "0")  # every answer of these tasks is known
            assert ("right" in fig.classes) == (right == "1") and ("wrong" in fig.classes) == (right == "0")
            assert ("✓" in fig.text()) == (right == "1") and ("✗" in fig.text()) == (right == "0")
            marks.setdefault(int(fig.attrs["data-test"]), []).append(right == "1")
        assert [marks[i] for i in sorted(marks)] == per["attempts_right"]
        # The task's score from the marks: test inputs with a right attempt.
        scores.append(sum(any(m) for m in marks.values()) / len(marks))
        assert scores[-1] == per["score"]
    assert sum(scores) / len(scores) == res["score"]


def test_grids_are_embedded_as_digits_with_the_arc_palette(scripted_run: ScriptedRun, dom: Dom) -> None:
    from soar_async.arc import load_tasks

    (task,) = load_tasks("arc-agi-1:training#3c9b0459")
    section = dom.root.find_all("section", data_task_id="3c9b0459")[0]
    grids = [c.attrs["data-g"] for c in section.find_all("canvas", cls="g")]
    digits = lambda g: f"{len(g)}:" + "".join(str(v) for row in g for v in row)  # noqa: E731
    # Every train pair, the test input, and the truth beside the attempts.
    for p in task.train:
        assert digits(p.input) in grids and digits(p.output) in grids
    assert digits(task.test[0].input) in grids
    truth = section.find_all("figure", cls="truth")[0].find_all("canvas")[0]
    assert truth.attrs["data-g"] == digits(task.test[0].output)
    # Attempt 1 of a solved task is the truth; attempt 2 (the identity's vote) is the input itself.
    (a1,) = section.find_all("figure", data_attempt="1")
    (a2,) = section.find_all("figure", data_attempt="2")
    assert a1.find_all("canvas")[0].attrs["data-g"] == digits(task.test[0].output)
    assert a2.find_all("canvas")[0].attrs["data-g"] == digits(task.test[0].input)
    text = scripted_run.report.read_text()
    for colour in PALETTE.values():
        assert colour in text  # the inline script paints with ARC's palette


def test_best_programs_are_highlighted_and_the_lineage_shows_refinement(dom: Dom) -> None:
    solved_by_sampling = dom.root.find_all("section", data_task_id="3c9b0459")[0]
    best = solved_by_sampling.find_all("details", cls="program")[0]
    assert "open" in best.attrs and "h 1.00" in best.text() and "gives attempt 1" in best.text()
    code = best.find_all("pre")[0]
    assert "np.rot90(np.array(grid), 2).tolist()" in code.text()
    assert [e.text() for e in code.find_all("span", cls="k")][:3] == ["import", "as", "def"]
    assert [e.text() for e in code.find_all("span", cls="f")] == ["transform"]
    assert [e.text() for e in code.find_all("span", cls="n")] == ["2"]
    assert "vote weight 2002 (written 2x)" in best.text()  # 2 x (1 + 1000 x 1.0)
    # The right program came from sampling: no lineage.
    assert "Lineage" not in solved_by_sampling.text()

    # 67a3c6ac is solved only through refinement: the identity (a sample, h 0) -> the right program.
    refined = dom.root.find_all("section", data_task_id="67a3c6ac")[0]
    steps = refined.find_all("ol", cls="lineage")[0].find_all("li")
    assert len(steps) == 2
    assert "sample" in steps[0].text() and "h 0.00" in steps[0].text() and "return grid" in steps[0].text()
    assert "refine" in steps[1].text() and "h 1.00" in steps[1].text() and "the best program" in steps[1].text()
    assert "np.fliplr" in RIGHT["67a3c6ac"] and "np.fliplr(np.array(grid)).tolist()" in refined.text()

    nothing = dom.root.find_all("section", data_task_id="007bbfb7")[0]
    assert "no program" in nothing.text() and nothing.find_all("figure", cls="attempt")[0].find_all("canvas") == []


def test_the_file_is_self_contained(scripted_run: ScriptedRun) -> None:
    text = scripted_run.report.read_text()
    assert "http://" not in text and "https://" not in text and "://" not in text
    assert "xmlns" not in text
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text)
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert "@import" not in text and "url(" not in text
    assert text.count("<svg") == 2  # the two charts, inline


def test_a_program_with_markup_and_urls_cannot_break_out(scripted_run: ScriptedRun) -> None:
    from soar_async.report.html import render_html

    rep = build_report(scripted_run.run_dir)
    view = next(t for t in rep.tasks if t.programs)  # the views are plain data: make one program hostile
    view.programs[0].code = "def transform(grid):  # see https://example.org </pre><script>alert(1)</script>\n"
    text = render_html(rep)
    assert "://" not in text and "<script>alert" not in text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "https:/" + "/example.org </pre><script>alert(1)</script>" in Dom(text).root.text()  # reads as written


def test_report_of_a_directory_without_an_archive_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "report", "--run", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "no archive store" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "report.html").exists()


def test_out_names_another_file(scripted_run: ScriptedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "r.html"
    assert main(["report", "--run", str(scripted_run.run_dir), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    # Same run, same report but for the time it was made.
    strip = lambda t: re.sub(r"report made [0-9: -]+", "", t)  # noqa: E731
    assert strip(out.read_text()) == strip(scripted_run.report.read_text())


def test_a_run_whose_answers_are_unknown_says_so(tmp_path: Path) -> None:
    """Test outputs hidden (a competition's challenges file): no score, no marks, the attempts still drawn."""
    from soar_async.arc import load_tasks, parse_task
    from soar_async.messages import SearchTask
    from soar_async.records import evaluate_native
    from soar_async.report.html import render_html
    from soar_async.search.store import ArchiveStore

    (full,) = load_tasks("arc-agi-1:training#3c9b0459")
    hidden = parse_task(full.id, {"train": full.to_json()["train"], "test": [{"input": p.input} for p in full.test]})
    code = "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n"
    with ArchiveStore(tmp_path / "archive.sqlite") as store:
        store.add_search(SearchTask(task_id=hidden.id, task=hidden.to_json(), generation=-1))
        store.add_record(evaluate_native(hidden, code, generation=-1))
    dom = Dom(render_html(build_report(tmp_path)))
    assert dom.root.by_id("summary-score").text() == "n/a" and dom.root.by_id("summary-tasks").text() == "1"
    (section,) = dom.root.find_all("section", cls="task")
    assert section.attrs["data-solved"] == "0" and section.attrs["data-score"] == ""
    assert "answer unknown" in section.text() and not section.find_all("figure", cls="truth")
    attempts = section.find_all("figure", cls="attempt")
    assert attempts and all(f.attrs["data-right"] == "" and "✓" not in f.text() for f in attempts)
    rot = [[v for v in reversed(row)] for row in reversed(full.test[0].input)]
    assert attempts[0].find_all("canvas")[0].attrs["data-g"] == f"{len(rot)}:" + "".join(
        str(v) for row in rot for v in row
    )
    # The imported program is in the "import" row of the generation table.
    (gens,) = dom.root.find_all("table", cls="gens")
    assert [tr.find_all("td")[0].text() for tr in gens.find_all("tbody")[0].find_all("tr")] == ["import"]
