"""What commands print: grids in ARC's colours (`soar tasks show`, `soar sandbox run`), result lines."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from soar_async.arc import Grid

PALETTE = {
    0: "#000000", 1: "#0074D9", 2: "#FF4136", 3: "#2ECC40", 4: "#FFDC00",
    5: "#AAAAAA", 6: "#F012BE", 7: "#FF851B", 8: "#7FDBFF", 9: "#870C25",
}  # fmt: skip
"""The colours ARC's own viewer uses, so a task looks the same here as on the ARC site."""


def grid_lines(grid: Grid) -> list[Text]:
    """One `Text` per row; each cell shows its digit on its colour so it still reads without colour."""
    lines = []
    for row in grid:
        t = Text()
        for v in row:
            fg = "black" if v in (4, 5, 8) else "white"
            t.append(f"{v} ", style=f"{fg} on {PALETTE[v]}")
        lines.append(t)
    return lines


def side_by_side(grids: list[tuple[str, Grid]], gap: int = 4) -> list[Text]:
    """Grids next to each other under their titles, top-aligned."""
    cols = [[Text(title), *grid_lines(g)] for title, g in grids]
    widths = [max(len(x.plain) for x in c) for c in cols]
    out = []
    for r in range(max(len(c) for c in cols)):
        line = Text()
        for c, w in zip(cols, widths, strict=True):
            cell = c[r] if r < len(c) else Text()
            line.append_text(cell)
            line.append(" " * (w - len(cell.plain) + gap))
        out.append(line)
    return out


def evaluated_line(ev: Any) -> str:
    """One `Evaluated` result as `soar exec submit` prints it: program, task, train score, fitness, time, worker."""
    ok = sum(ev.train_correct)
    errs = sorted({e for e in ev.errors if e})
    return (
        f"{ev.program_id}  task {ev.task_id}  train {ok}/{len(ev.train_correct)}  "
        f"h={ev.fitness:.2f}  {ev.duration_s * 1000:.1f} ms  by {ev.worker_id}"
        + (f"  errors: {', '.join(errs)}" if errs else "")
    )
