"""The report's pieces without a run: the highlighter, the SVG charts and the PNG drawing."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soar_async.arc import load_tasks
from soar_async.cli import main
from soar_async.render import PALETTE
from soar_async.report.charts import bar_chart, line_chart, nice_ticks
from soar_async.report.highlight import highlight
from soar_async.report.png import GAP, LABEL_H, MARGIN, TITLE_H, cell_size, grid_px
from tests.report.helpers import Dom

SPAN = re.compile(r"<span class=(\w)>(.*?)</span>", re.S)


def spans(code: str) -> list[tuple[str, str]]:
    return [(cls, html.unescape(text)) for cls, text in SPAN.findall(highlight(code))]


def test_highlight_marks_keywords_strings_numbers_comments() -> None:
    code = (
        "import numpy as np\n"
        "def transform(grid):  # turn it\n"
        "    s = 'it\\'s' + \"x\" + f'{1}'\n"
        "    n = 0x1F + 3.5e-2 + 10\n"
        "    return [r[::-1] for r in grid if r is not None] + list(range(len(grid)))\n"
    )
    got = spans(code)
    kinds = {k: [t for c, t in got if c == k] for k in "ksncbf"}
    assert kinds["k"] == ["import", "as", "def", "return", "for", "in", "if", "is", "not", "None"]
    assert kinds["f"] == ["transform"]
    assert kinds["c"] == ["# turn it"]
    assert kinds["s"] == ["'it\\'s'", '"x"', "f'{1}'"]
    assert kinds["n"] == ["0x1F", "3.5e-2", "10", "1"]
    assert kinds["b"] == ["list", "range", "len"]


def test_highlight_survives_broken_code_and_escapes_markup() -> None:
    broken = "def f(:\n    s = 'unterminated\n    t = '''never closed\n<b>&amp;</b> http://x"
    out = highlight(broken)
    assert "<b>" not in out and "&lt;b&gt;&amp;amp;&lt;/b&gt;" in out and "://" not in out
    assert Dom(out).root.text() == broken


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_highlight_never_loses_or_adds_a_character(text: str) -> None:
    """Whatever the text, the spans only wrap it: the document reads exactly the code back."""
    out = highlight(text)
    assert "://" not in out
    assert html.unescape(re.sub(r"<span class=\w>|</span>", "", out)) == text
    assert Dom(f"<pre>{out}</pre>").root.find_all("pre")[0].text() == text


def test_charts_are_inline_svg_without_namespace() -> None:
    bars = bar_chart([("0", 0.25), ("1", None), ("2", 0.75)], title="t", y_label="y", x_label="x", y_max=1.0)
    assert bars.startswith("<svg ") and "xmlns" not in bars and "://" not in bars
    assert bars.count('class="bar"') == 2 and "n/a" in bars
    dom = Dom(bars)
    heights = [float(r.attrs["height"]) for r in dom.root.find_all("rect", cls="bar")]
    assert heights[1] == pytest.approx(3 * heights[0])  # bars are proportional to the values
    line = line_chart([(0, 1.0), (30, 4.0), (60, 2.0)], title="r", y_label="p/s", x_label="min", x_scale=60)
    (poly,) = Dom(line).root.find_all("polyline")
    assert len(poly.attrs["points"].split()) == 3
    assert "nothing to show" in line_chart([], title="r", y_label="y", x_label="x")
    assert nice_ticks(0.9) == [0, 0.5, 1.0] and nice_ticks(1.0) == [0, 0.5, 1.0]
    assert nice_ticks(7.3) == [0, 2, 4, 6, 8] and nice_ticks(0) == [0.0, 1.0]


def test_tasks_show_png_draws_every_grid_in_the_arc_palette(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    (task,) = load_tasks("arc-agi-1:training#3c9b0459")
    out = tmp_path / "task.png"
    assert main(["tasks", "show", "3c9b0459", "--png", str(out)]) == 0
    img = Image.open(out).convert("RGB")
    assert capsys.readouterr().out.strip() == f"wrote {out} ({img.width}x{img.height} px): task 3c9b0459"
    cell = cell_size(task)
    rows = len(task.train) + len(task.test)
    # One row per pair, each at least as tall as its grid: the test output (known here) is drawn too.
    assert img.height >= MARGIN + rows * (grid_px(task.train[0].input, cell)[1] + MARGIN)
    rgb = {k: tuple(int(v[i : i + 2], 16) for i in (1, 3, 5)) for k, v in PALETTE.items()}
    # The first train input sits at the left margin under the title and its caption: every cell's
    # centre has its colour.
    x0, y0 = MARGIN, MARGIN + TITLE_H + LABEL_H
    grid = task.train[0].input
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            px = (x0 + GAP + c * (cell + GAP) + cell // 2, y0 + GAP + r * (cell + GAP) + cell // 2)
            assert img.getpixel(px) == rgb[v], (r, c)
    # Grid lines between cells are the dark line colour, and the page is white.
    assert img.getpixel((x0, y0 + cell // 2)) == (85, 85, 85)
    assert img.getpixel((img.width - 2, img.height - 2)) == (255, 255, 255)
    colours = {img.getpixel((x, y)) for x in range(0, img.width, 3) for y in range(0, img.height, 3)}
    grids = [g for p in (*task.train, *task.test) for g in (p.input, p.output) if g is not None]
    used = {v for g in grids for row in g for v in row}
    assert {rgb[v] for v in used} <= colours
