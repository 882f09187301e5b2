"""The report as one self-contained HTML file: inline CSS, SVG and JS, no URL of any kind.

It opens from disk in any browser, offline, and can be mailed or archived as one file. Grids
are embedded as digit strings on `<canvas>` elements and painted by the inline script when
they come into view (a 400-task run has thousands of grids: drawn as SVG or table cells
they would weigh tens of MB; as digits one byte per cell). The filter box (solved, unsolved,
task id) is inline JS too, and reads its state from the URL's fragment (`#filter=solved&q=00`)
so that a link, or a headless browser, can open the report filtered.

Elements a reader (or a test) can rely on: `#summary-score` (the score as text, "n/a" when
unknown), `#summary-tasks`, `#summary-solved`, one `<section class="task" data-task-id
data-solved="1|0" data-score>` per task, and in it `figure.attempt[data-test][data-attempt]
[data-right="1|0|"]` (empty: the answer is unknown).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

from soar_async.arc import Grid, grid_shape
from soar_async.render import PALETTE
from soar_async.report.build import ProgramView, Report, TaskView
from soar_async.report.charts import bar_chart, line_chart
from soar_async.report.highlight import escape, highlight
from soar_async.search.generations import GenerationStats

EAGER_GRIDS = 300
"""Grids painted at load; later ones are painted as they scroll into view."""

CSS = """
:root{--fg:#1d2330;--mute:#667085;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--ok:#1a7f37;--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,#summary,#filters,main{max-width:1400px;margin:0 auto;padding:12px 20px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:0 0 4px}h3{font-size:14px;margin:14px 0 6px}
.meta,.facts,.note{color:var(--mute)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:600}.card .k{color:var(--mute);font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;max-width:100%;height:auto}
.chart .grid{stroke:#e6e9ef}.chart .tick,.chart .axis{font-size:11px;fill:var(--mute)}
.chart .title{font-size:13px;font-weight:600;fill:var(--fg)}.chart .value{font-size:11px;fill:var(--fg)}
.chart .bar{fill:#0074D9}.chart .line{fill:none;stroke:#0074D9;stroke-width:2}.chart .area{fill:#0074D922}
table{border-collapse:collapse;background:var(--card);margin:8px 0}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:right;white-space:nowrap}
th{font-weight:600;color:var(--mute)}td:first-child,th:first-child{text-align:left}
#filters{position:sticky;top:0;background:var(--bg);border-bottom:1px solid var(--line);z-index:2;
display:flex;gap:12px;align-items:center}
#filters input{padding:4px 8px;width:16em}
.task{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:14px 0}
.task[hidden]{display:none}
.badge{font-size:12px;border-radius:10px;padding:1px 8px;margin-left:6px;vertical-align:middle;color:#fff}
.badge.solved{background:var(--ok)}.badge.unsolved{background:var(--bad)}.badge.unknown{background:var(--mute)}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:6px 0}
.pair{display:flex;gap:6px;align-items:center}
figure{margin:0;display:inline-flex;flex-direction:column;align-items:flex-start;gap:2px}
figcaption{font-size:12px;color:var(--mute)}
canvas.g{image-rendering:pixelated;background:#888;flex:none}
.arrow{color:var(--mute);font-size:18px}
.attempt.right figcaption{color:var(--ok);font-weight:600}.attempt.wrong figcaption{color:var(--bad)}
.attempt.right canvas{outline:3px solid var(--ok)}.attempt.wrong canvas{outline:3px solid var(--bad)}
.none{width:60px;height:40px;border:1px dashed var(--line);color:var(--mute);font-size:11px;
display:flex;align-items:center;justify-content:center}
details.program{border:1px solid var(--line);border-radius:6px;margin:6px 0;padding:4px 8px}
details summary{cursor:pointer}
pre.code{background:#fbfbfd;border:1px solid #eceef3;padding:8px;overflow:auto;margin:6px 0;font:12px/1.4 ui-monospace,
SFMono-Regular,Menlo,Consolas,monospace}
.k{color:#a626a4;font-weight:600}.s{color:#50a14f}.n{color:#986801}.c{color:#8a8f98;font-style:italic}
.b{color:#0184bc}.f{color:#4078f2;font-weight:600}
.ok{color:var(--ok)}.bad{color:var(--bad)}
ol.lineage{margin:4px 0;padding-left:22px}ol.lineage li{margin:2px 0}
"""

JS = """
(function(){
var P=%PALETTE%;
function draw(cv){
 if(cv.getAttribute("data-done"))return;cv.setAttribute("data-done","1");
 var g=cv.getAttribute("data-g"),i=g.indexOf(":"),rows=+g.slice(0,i),d=g.slice(i+1),cols=d.length/rows;
 var s=+cv.getAttribute("data-s"),x=cv.getContext("2d");
 x.fillStyle="#555";x.fillRect(0,0,cv.width,cv.height);
 for(var r=0;r<rows;r++)for(var c=0;c<cols;c++){x.fillStyle=P[d.charCodeAt(r*cols+c)-48];
  x.fillRect(c*s+1,r*s+1,s-1,s-1);}
}
var grids=document.querySelectorAll("canvas.g"),io=null;
if("IntersectionObserver" in window){
 io=new IntersectionObserver(function(es){es.forEach(function(e){if(e.isIntersecting){draw(e.target);
  io.unobserve(e.target);}});},{rootMargin:"800px"});
}
for(var k=0;k<grids.length;k++){if(k<%EAGER%||!io)draw(grids[k]);else io.observe(grids[k]);}
var state=document.getElementById("filter-state"),text=document.getElementById("filter-text"),
 count=document.getElementById("filter-count"),tasks=document.querySelectorAll("section.task");
function apply(){
 var st=state.value,q=text.value.trim().toLowerCase(),shown=0;
 for(var k=0;k<tasks.length;k++){var t=tasks[k],solved=t.getAttribute("data-solved")==="1";
  var ok=(st==="all"||(st==="solved")===solved)&&(!q||t.getAttribute("data-task-id").toLowerCase().indexOf(q)>=0);
  if(ok){t.removeAttribute("hidden");shown++;}else t.setAttribute("hidden","");}
 count.textContent=shown+" of "+tasks.length+" tasks shown";
}
function fromHash(){
 var h=location.hash.slice(1);if(h.indexOf("filter=")<0&&h.indexOf("q=")<0)return false;
 var p={};h.split("&").forEach(function(kv){var j=kv.indexOf("="),v=kv.slice(j+1);
  if(j>0){try{v=decodeURIComponent(v);}catch(e){}p[kv.slice(0,j)]=v;}});
 state.value=["all","solved","unsolved"].indexOf(p.filter)>=0?p.filter:"all";text.value=p.q||"";return true;
}
function toHash(){
 var h="filter="+state.value+(text.value?"&q="+encodeURIComponent(text.value):"");
 if(history.replaceState)history.replaceState(null,"","#"+h);
}
state.addEventListener("change",function(){apply();toHash();});
text.addEventListener("input",function(){apply();toHash();});
window.addEventListener("hashchange",function(){if(fromHash())apply();});
fromHash();apply();
document.body.setAttribute("data-ready","1");
})();
"""


def _n(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _fmt_score(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fmt_share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _cell_px(grid: Grid) -> int:
    """Pixels per cell: small grids large enough to read, 30x30 grids about 180 px wide."""
    rows, cols = grid_shape(grid)
    return max(4, min(20, 180 // max(rows, cols)))


def grid_canvas(grid: Grid, title: str = "") -> str:
    """A `<canvas>` that the inline script paints with `grid` (one digit per cell in `data-g`)."""
    rows, cols = grid_shape(grid)
    s = _cell_px(grid)
    digits = "".join(str(v) for row in grid for v in row)
    tip = f' title="{escape(title)}"' if title else ""
    return (
        f'<canvas class="g" width="{cols * s + 1}" height="{rows * s + 1}" data-s="{s}" '
        f'data-g="{rows}:{digits}"{tip}></canvas>'
    )


def _figure(caption: str, grid: Grid | None, cls: str = "", attrs: str = "") -> str:
    shape = f" {grid_shape(grid)[0]}x{grid_shape(grid)[1]}" if grid is not None else ""
    body = grid_canvas(grid, caption) if grid is not None else '<div class="none">none</div>'
    klass = f' class="{cls}"' if cls else ""
    return f"<figure{klass}{attrs}><figcaption>{escape(caption, quote=False)}{shape}</figcaption>{body}</figure>"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    klass = f' class="{cls}"' if cls else ""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{klass}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _generation_rows(gens: Sequence[GenerationStats]) -> list[list[str]]:
    return [
        [
            escape(g.label),
            escape(g.model_version or "-"),
            str(g.tasks),
            str(g.programs),
            str(g.new_programs),
            str(g.completions),
            _fmt_share(g.usable_share),
            _fmt_share(g.mean_train_accuracy),
            f"{g.right_on_train} ({g.tasks_right_on_train})",
            str(g.tokens),
            "n/a" if g.score is None else f"{g.score:.3f}",
        ]
        for g in gens
    ]


def _model_rows(gens: Sequence[GenerationStats]) -> list[list[str]]:
    """Per model version: the generation rows added up (shares weighted by completions)."""
    by: dict[str, list[GenerationStats]] = {}
    for g in gens:
        by.setdefault(g.model_version, []).append(g)
    rows = []
    for version, gs in by.items():
        comps = sum(g.completions for g in gs)
        usable = sum(g.usable for g in gs if g.generation >= 0)
        acc = sum((g.mean_train_accuracy or 0.0) * g.completions for g in gs if g.generation >= 0)
        rows.append(
            [
                escape(version or "-"),
                escape(", ".join(g.label for g in gs)),
                str(sum(g.new_programs for g in gs)),
                str(comps),
                _fmt_share(usable / comps if comps else None),
                _fmt_share(acc / comps if comps else None),
                str(sum(g.tokens for g in gs)),
            ]
        )
    return rows


def _summary(rep: Report) -> str:
    res = rep.results
    pps = rep.programs_per_s
    cards = [
        (f'<span id="summary-score">{_fmt_score(res.score)}</span>', "score (mean per-task score)"),
        (
            f'<span id="summary-solved">{len(res.solved)}</span> / <span id="summary-tasks">{res.tasks}</span>',
            "tasks solved / attempted" + (f" ({res.scored} with known answers)" if res.scored < res.tasks else ""),
        ),
        (f'<span id="summary-programs">{res.programs}</span>', "programs evaluated"),
        (str(res.completions), "completions"),
        (str(res.tokens), "tokens"),
        (_fmt_duration(rep.wall_s), "wall time"),
        ("n/a" if pps is None else f"{pps:.2f}", "programs/s"),
    ]
    card_html = "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{k}</div></div>' for v, k in cards)
    searched = [g for g in rep.generations if g.generation >= 0]
    imports = len(searched) < len(rep.generations)
    multi_version = len({g.model_version for g in searched}) > 1
    bars = [(g.label + (f" {g.model_version}" if multi_version else ""), g.score) for g in searched]
    minutes = (rep.wall_s or 0.0) >= 180
    charts = bar_chart(
        bars, title="score by generation (that generation's vote)", y_label="score", x_label="generation", y_max=1.0
    ) + line_chart(
        rep.rate,
        title="programs evaluated per second",
        y_label="programs/s",
        x_label="minutes since start" if minutes else "seconds since start",
        x_scale=60.0 if minutes else 1.0,
    )
    gen_head = ["generation", "model", "tasks", "programs", "new", "completions", "usable", "mean h",
                "all train (tasks)", "tokens", "score"]  # fmt: skip
    model_head = ["model", "generations", "new programs", "completions", "usable", "mean h", "tokens"]
    task_rows = [
        [
            f'<a href="#task-{escape(t.task.id)}">{escape(t.task.id)}</a>',
            escape(t.result.state),
            str(t.result.programs),
            str(t.result.completions),
            f"{t.result.best_train_accuracy:.2f}",
            str(t.result.right_on_train),
            str(t.result.tokens),
            _marks(t),
            "n/a" if t.result.score is None else f"{t.result.score:.2f}",
        ]
        for t in rep.tasks
    ]
    task_head = ["task", "state", "programs", "completions", "best h", "all train", "tokens", "attempts", "score"]
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<div class="cards">{card_html}</div><div class="charts">{charts}</div>'
        "<h3>Per generation and model version</h3>"
        + _table(gen_head, _generation_rows(rep.generations), "gens")
        + '<p class="note">usable: share of completions whose program returns a valid grid for every input and '
        "passes the reuse filters; mean h: mean train accuracy over completions (not usable: 0); all train: "
        "programs right on every train pair (tasks with one); score: the vote of that generation's programs "
        "alone." + (' "import": programs imported or registered, each counted once.' if imports else "") + "</p>"
        "<h3>Per model version</h3>"
        + _table(model_head, _model_rows(rep.generations), "models")
        + "<details><summary>All tasks</summary>"
        + _table(task_head, task_rows, "tasks")
        + "</details></section>"
    )


def _marks(t: TaskView) -> str:
    out = []
    for right in t.result.attempts_right:
        if right is None:
            out.append("?")
        else:
            out.append("".join('<span class="ok">✓</span>' if ok else '<span class="bad">✗</span>' for ok in right))
    return " ".join(out)


def _code(code: str, full: int, *, colour: bool = True) -> str:
    body = highlight(code) if colour else escape(code, quote=False)
    cut = f'<p class="note">cut: {full - len(code)} more characters not shown</p>' if full > len(code) else ""
    return f'<pre class="code"><code>{body}</code></pre>{cut}'


def _flags(flags: Sequence[bool | None]) -> str:
    return "".join(
        "?" if f is None else '<span class="ok">✓</span>' if f else '<span class="bad">✗</span>' for f in flags
    )


def _program(rank: int, p: ProgramView) -> str:
    votes = f" · gives attempt {' and '.join(map(str, p.attempts))}" if p.attempts else ""
    errors = f" · errors: {escape(', '.join(p.errors))}" if p.errors else ""
    version = f" · model {escape(p.model_version)}" if p.model_version else ""
    summary = (
        f"#{rank} · h {p.train_accuracy:.2f} · train {_flags(p.train_correct)} · test {_flags(p.test_correct)}"
        f" · vote weight {p.weight:.0f} (written {p.count}x) · {escape(p.origin)} · generation {p.generation}"
        f"{version}{votes}{errors}"
    )
    return (
        f'<details class="program" data-program-id="{escape(p.program_id)}"{" open" if rank == 1 else ""}>'
        f"<summary>{summary} <code>{escape(p.program_id[:12])}</code></summary>{_code(p.code, p.code_chars)}</details>"
    )


def _lineage(t: TaskView) -> str:
    if not t.lineage:
        if t.lineage_broken:
            return f'<p class="note">the best program\'s parent {escape(t.lineage_broken)} is not in the archive</p>'
        return ""
    items = []
    last = len(t.lineage) - 1
    for i, s in enumerate(t.lineage):
        head = (
            f"<code>{escape(s.program_id[:12])}</code> {escape(s.origin)} · h {s.train_accuracy:.2f}"
            f" · generation {s.generation}"
        )
        if i == last:
            items.append(f"<li>{head} · <b>the best program (#1 above)</b></li>")
        else:
            code = _code(s.code, s.code_chars, colour=False)
            items.append(f"<li><details><summary>{head}</summary>{code}</details></li>")
    earlier = f'<p class="note">{t.lineage_hidden} earlier step(s) not shown</p>' if t.lineage_hidden else ""
    broken = (
        f'<p class="note">the chain starts at a parent not in the archive: {escape(t.lineage_broken)}</p>'
        if t.lineage_broken
        else ""
    )
    return (
        f"<h3>Lineage of the best program ({len(t.lineage) - 1 + t.lineage_hidden} refinement(s), root first)</h3>"
        f'{earlier}{broken}<ol class="lineage">{"".join(items)}</ol>'
    )


def _task(t: TaskView) -> str:
    task, res = t.task, t.result
    if res.score is None:
        badge = '<span class="badge unknown">answer unknown</span>'
    elif t.solved:
        badge = '<span class="badge solved">solved</span>'
    else:
        badge = f'<span class="badge unsolved">unsolved · score {res.score:.2f}</span>'
    facts = (
        f"{_n(res.programs, 'program')} · {_n(res.completions, 'completion')} ({res.without_program} without code, "
        f"{res.duplicates} duplicates) · best h {res.best_train_accuracy:.2f} · {res.right_on_train} right on every "
        f"train pair · {res.tokens} tokens · {escape(res.state)}"
    )
    train = "".join(
        f'<div class="pair">{_figure(f"train {i} input", p.input)}<span class="arrow">→</span>'
        f"{_figure('output', p.output)}</div>"
        for i, p in enumerate(task.train)
    )
    tests = []
    for i, p in enumerate(task.test):
        figs = [_figure(f"test {i} input", p.input)]
        right = res.attempts_right[i] if i < len(res.attempts_right) else None
        tries = t.attempts[i] if i < len(t.attempts) else []
        for k in range(len(right) if right is not None else max(2, len(tries))):
            grid = tries[k] if k < len(tries) else None
            mark = "" if right is None else "1" if right[k] else "0"
            cls = "attempt" + ("" if right is None else " right" if right[k] else " wrong")
            sign = "" if right is None else " ✓" if right[k] else " ✗"
            attrs = f' data-test="{i}" data-attempt="{k + 1}" data-right="{mark}"'
            figs.append(_figure(f"attempt {k + 1}{sign}", grid, cls, attrs))
        if p.output is not None:
            figs.append(_figure("truth", p.output, "truth"))
        tests.append(f'<div class="row test">{"".join(figs)}</div>')
    programs = "".join(_program(i + 1, p) for i, p in enumerate(t.programs)) or '<p class="note">no program</p>'
    shown = f" (the {len(t.programs)} best of {res.programs})" if res.programs > len(t.programs) else ""
    tid = escape(task.id)
    score = "" if res.score is None else f"{res.score:.6g}"
    return (
        f'<section class="task" id="task-{tid}" data-task-id="{tid}" data-solved="{1 if t.solved else 0}" '
        f'data-score="{score}"><h2>{tid}{badge}</h2><p class="facts">{facts}</p>'
        f'<h3>Train pairs</h3><div class="row">{train}</div>'
        f"<h3>Test inputs and attempts</h3>{''.join(tests)}"
        f"<h3>Best programs{shown}</h3>{programs}{_lineage(t)}</section>"
    )


def render_html(rep: Report) -> str:
    """The whole report as one HTML document (see the module doc)."""
    palette = "[" + ",".join(f'"{PALETTE[i]}"' for i in range(10)) + "]"
    js = JS.replace("%PALETTE%", palette).replace("%EAGER%", str(EAGER_GRIDS))
    made = dt.datetime.fromtimestamp(rep.created_at).strftime("%Y-%m-%d %H:%M:%S")
    started = (
        dt.datetime.fromtimestamp(rep.started_at).strftime("%Y-%m-%d %H:%M:%S") if rep.started_at is not None else "-"
    )
    n = len(rep.tasks)
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>soar report: {escape(rep.run_dir, quote=False)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>SOAR run report</h1><p class="meta">run <code>{escape(rep.run_dir, quote=False)}</code> · '
        f"attempts from {escape(rep.results.attempts_from, quote=False)} · started {started} · report made {made}"
        "</p></header>"
        + _summary(rep)
        + '<nav id="filters"><label>show <select id="filter-state"><option value="all">all tasks</option>'
        '<option value="solved">solved</option><option value="unsolved">unsolved</option></select></label>'
        '<input id="filter-text" type="search" placeholder="task id contains…" aria-label="task id">'
        f'<span id="filter-count" class="meta">{n} of {n} tasks shown</span></nav>'
        '<main id="tasks">' + "".join(_task(t) for t in rep.tasks) + f"</main><script>{js}</script></body></html>\n"
    )
    # Belt and braces: every piece of data went through `escape`; no "://" may remain anywhere.
    return doc.replace("://", ":&#47;/")


def write_report(rep: Report, out: Path) -> int:
    """Write the report to `out` (atomically: a browser never sees half a file); returns its size in bytes."""
    data = render_html(rep).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return len(data)
