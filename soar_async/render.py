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


class ProgressLine:
    """A status line that keeps a user informed while a command waits.

    On a terminal it rewrites one line in place at every update; into a file or pipe it
    writes a line at most every `every` seconds (logs stay readable, yet a stalled run
    still shows that it is alive and what it waits for).
    """

    def __init__(self, stream: Any, *, quiet: bool = False, every: float = 5.0) -> None:
        import time

        self._clock = time.monotonic
        self.stream = stream
        self.quiet = quiet
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = 0.0 if self.tty else every
        self._last = -float("inf")
        self._width = 0

    def update(self, text: str) -> None:
        if self.quiet or self._clock() - self._last < self.every:
            return
        self._last = self._clock()
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an in-place line so that what is printed next starts on a fresh one."""
        if self.tty and self._width and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._width = 0
