"""Small SVG charts for the HTML report, written by hand: no plotting library, no script.

Inline `<svg>` in an HTML5 document needs no namespace attribute, so none is written (the
report holds no URL at all). Styles come from the report's CSS classes (`.chart ...`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from soar_async.report.highlight import escape

WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 24, 40
"""Plot margins: room for the y tick labels on the left and the x labels below."""


def nice_ticks(top: float, n: int = 4) -> list[float]:
    """Round tick values from 0 to at least `top` (1, 2 or 5 times a power of ten apart)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def _fmt(v: float) -> str:
    """A tick label: as few digits as tell the ticks apart (1, 2.5, 0.002, 1200)."""
    return f"{v:.4g}"


def _frame(title: str, ticks: Sequence[float], y_label: str, x_label: str) -> tuple[list[str], float]:
    """The chart's opening, title, horizontal grid lines with labels and axis labels; returns the
    parts and the y scale's top."""
    top = ticks[-1] or 1.0
    ph = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text class="title" x="{LEFT}" y="15">{escape(title)}</text>',
    ]
    for t in ticks:
        y = TOP + ph - ph * t / top
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    parts.append(
        f'<text class="axis" x="14" y="{TOP + ph / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + ph / 2:.0f})">{escape(y_label)}</text>'
    )
    parts.append(
        f'<text class="axis" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    return parts, top


def empty_chart(title: str, why: str) -> str:
    """A placeholder of the charts' size saying why there is nothing to draw."""
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><text class="title" x="{LEFT}" y="15">{escape(title)}</text>'
        f'<text class="tick" x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle">{escape(why)}</text></svg>'
    )


def bar_chart(
    bars: Sequence[tuple[str, float | None]], *, title: str, y_label: str, x_label: str, y_max: float | None = None
) -> str:
    """One bar per (label, value); a None value is drawn as "n/a" (e.g. a generation whose tasks'
    answers are unknown)."""
    if not bars:
        return empty_chart(title, "nothing to show")
    known = [v for _, v in bars if v is not None]
    ticks = nice_ticks(y_max if y_max is not None else max(known, default=0.0) or 1.0)
    parts, top = _frame(title, ticks, y_label, x_label)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = pw / len(bars)
    bw = max(2.0, min(48.0, slot * 0.7))
    for i, (label, v) in enumerate(bars):
        cx = LEFT + slot * (i + 0.5)
        if v is None:
            parts.append(f'<text class="tick" x="{cx:.1f}" y="{TOP + ph - 4}" text-anchor="middle">n/a</text>')
        else:
            h = ph * min(v, top) / top
            parts.append(
                f'<rect class="bar" x="{cx - bw / 2:.1f}" y="{TOP + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)}: {v:.3f}</title></rect>"
            )
            parts.append(
                f'<text class="value" x="{cx:.1f}" y="{TOP + ph - h - 4:.1f}" text-anchor="middle">{v:.2f}</text>'
            )
        if len(bars) <= 24 or i % math.ceil(len(bars) / 24) == 0:
            parts.append(
                f'<text class="tick" x="{cx:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[float, float]], *, title: str, y_label: str, x_label: str, x_scale: float = 1.0
) -> str:
    """A filled line through (x, y) points in x order, both axes from 0; x values are divided
    by `x_scale` (e.g. 60: seconds shown as minutes)."""
    if not points:
        return empty_chart(title, "nothing to show")
    points = [(x / x_scale, y) for x, y in points]
    ticks = nice_ticks(max(y for _, y in points) or 1.0)
    parts, top = _frame(title, ticks, y_label, x_label)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_ticks = nice_ticks(max(x for x, _ in points) or 1.0, n=6)
    x_top = x_ticks[-1] or 1.0

    def xy(x: float, y: float) -> str:
        return f"{LEFT + pw * x / x_top:.1f},{TOP + ph - ph * y / top:.1f}"

    line = " ".join(xy(x, y) for x, y in points)
    area = f"{xy(points[0][0], 0)} {line} {xy(points[-1][0], 0)}"
    parts.append(f'<polygon class="area" points="{area}"/>')
    parts.append(f'<polyline class="line" points="{line}"/>')
    for t in x_ticks:
        x = LEFT + pw * t / x_top
        parts.append(f'<text class="tick" x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append("</svg>")
    return "".join(parts)
