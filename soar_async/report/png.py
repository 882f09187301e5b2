"""ARC tasks drawn to PNG with Pillow (`soar tasks show ID --png FILE`): a picture to paste
into an issue or a note, where the terminal's coloured digits cannot go.

One row per pair: train pairs input -> output, then test inputs -> outputs where known,
in ARC's palette (`soar_async.render.PALETTE`) with grid lines, on a white page.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from soar_async.arc import Grid, Task, grid_shape
from soar_async.render import PALETTE

if TYPE_CHECKING:
    from PIL import Image

MARGIN = 16
"""Around the page and between rows."""
LABEL_H = 16
"""Room for a grid's caption above it."""
TITLE_H = 22
"""Room for the task's id at the top."""
ARROW_W = 40
LINE = (85, 85, 85)
"""Grid lines and borders: the dark grey ARC's viewer uses."""
GAP = 1
"""Grid line width in pixels."""


def cell_size(task: Task) -> int:
    """One cell size for every grid of the task (so sizes compare at a glance): 30x30 grids
    get 8 px cells, small ones up to 24 px."""
    side = max(max(grid_shape(g)) for p in (*task.train, *task.test) for g in (p.input, p.output) if g is not None)
    return max(8, min(24, 240 // side))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


COLOURS = {k: _rgb(v) for k, v in PALETTE.items()}


def grid_px(grid: Grid, cell: int) -> tuple[int, int]:
    """(width, height) in pixels of `grid` drawn with `cell`-pixel cells and its lines."""
    rows, cols = grid_shape(grid)
    return cols * (cell + GAP) + GAP, rows * (cell + GAP) + GAP


def draw_grid(img: Image.Image, grid: Grid, x: int, y: int, cell: int) -> None:
    """Paint `grid` with its top-left corner at (x, y): the line colour under it, cells on top."""
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    w, h = grid_px(grid, cell)
    d.rectangle((x, y, x + w - 1, y + h - 1), fill=LINE)
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            x0, y0 = x + GAP + c * (cell + GAP), y + GAP + r * (cell + GAP)
            d.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=COLOURS[v])


def _arrow(img: Image.Image, x: int, y: int) -> None:
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    d.line((x + 8, y, x + ARROW_W - 10, y), fill=LINE, width=2)
    d.polygon([(x + ARROW_W - 8, y), (x + ARROW_W - 16, y - 5), (x + ARROW_W - 16, y + 5)], fill=LINE)


def task_image(task: Task) -> Image.Image:
    """The whole task as one RGB image (see the module doc)."""
    from PIL import Image, ImageDraw

    cell = cell_size(task)
    rows: list[tuple[str, Grid, Grid | None]] = [(f"train {i}", p.input, p.output) for i, p in enumerate(task.train)]
    rows += [(f"test {i}", p.input, p.output) for i, p in enumerate(task.test)]
    widths, heights = [], []
    for _, inp, out in rows:
        wi, hi = grid_px(inp, cell)
        wo, ho = grid_px(out, cell) if out is not None else (0, 0)
        widths.append(wi + (ARROW_W + wo if out is not None else 0))
        heights.append(LABEL_H + max(hi, ho))
    width = max(max(widths) + 2 * MARGIN, 240)
    height = MARGIN + TITLE_H + sum(heights) + MARGIN * len(rows)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((MARGIN, MARGIN), f"task {task.id}", fill="black")
    y = MARGIN + TITLE_H
    for (name, inp, out), h in zip(rows, heights, strict=True):
        wi, hi = grid_px(inp, cell)
        d.text((MARGIN, y), f"{name} input {len(inp)}x{len(inp[0])}", fill=(60, 60, 60))
        draw_grid(img, inp, MARGIN, y + LABEL_H, cell)
        if out is not None:
            x = MARGIN + wi
            _arrow(img, x, y + LABEL_H + hi // 2)
            d.text((x + ARROW_W, y), f"output {len(out)}x{len(out[0])}", fill=(60, 60, 60))
            draw_grid(img, out, x + ARROW_W, y + LABEL_H, cell)
        y += h + MARGIN
    return img


def write_task_png(task: Task, path: Path) -> tuple[int, int]:
    """Draw `task` to the PNG file `path`; returns the image's (width, height)."""
    img = task_image(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return img.size
