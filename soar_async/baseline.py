"""A non-learning program source: hand-written transformations, some fitted to each task.

It is the floor every LLM run must beat, and it lets the whole pipeline (bus, sandbox,
archive, vote, submission) run on a machine with no model at all. Every program here is
plain source text, executed in the sandbox exactly like an LLM's program would be; none
of them sees a test output.
"""

from __future__ import annotations

from collections import Counter

from soar_async.arc import Task

GEOMETRY = {
    "identity": "g",
    "rot90": "np.rot90(g, 1)",
    "rot180": "np.rot90(g, 2)",
    "rot270": "np.rot90(g, 3)",
    "flip_lr": "np.fliplr(g)",
    "flip_ud": "np.flipud(g)",
    "transpose": "g.T",
    "anti_transpose": "np.rot90(g, 2).T",
    "scale2": "np.kron(g, np.ones((2, 2), dtype=int))",
    "scale3": "np.kron(g, np.ones((3, 3), dtype=int))",
    "tile2x2": "np.tile(g, (2, 2))",
    "tile3x3": "np.tile(g, (3, 3))",
    "tile1x2": "np.tile(g, (1, 2))",
    "tile2x1": "np.tile(g, (2, 1))",
    "mirror_lr": "np.hstack([g, np.fliplr(g)])",
    "mirror_ud": "np.vstack([g, np.flipud(g)])",
    "mirror_4": "np.vstack([np.hstack([g, np.fliplr(g)]), np.flipud(np.hstack([g, np.fliplr(g)]))])",
    "crop_nonzero": "_crop(g)",
    "top_half": "g[: g.shape[0] // 2]",
    "left_half": "g[:, : g.shape[1] // 2]",
    "gravity_down": "_gravity(g)",
    "dedup_rows_cols": "_dedup(g)",
}

HELPERS = '''
def _crop(g):
    ys, xs = np.nonzero(g)
    if len(ys) == 0:
        return g
    return g[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _gravity(g):
    out = np.zeros_like(g)
    for c in range(g.shape[1]):
        col = [v for v in g[:, c] if v != 0]
        if col:
            out[g.shape[0] - len(col) :, c] = col
    return out


def _dedup(g):
    rows = [r for i, r in enumerate(g) if i == 0 or not np.array_equal(r, g[i - 1])]
    g = np.array(rows)
    cols = [c for i, c in enumerate(g.T) if i == 0 or not np.array_equal(c, g.T[i - 1])]
    return np.array(cols).T
'''


def _program(expr: str, colour_map: dict[int, int] | None = None) -> str:
    body = [f"    out = {expr}"]
    if colour_map:
        body.append(f"    lut = np.arange(10)\n    for a, b in {sorted(colour_map.items())!r}:\n        lut[a] = b")
        body.append("    out = lut[np.asarray(out)]")
    return (
        "import numpy as np\n"
        + HELPERS
        + "\n\ndef transform(grid):\n    g = np.array(grid)\n"
        + "\n".join(body)
        + "\n    return np.asarray(out).tolist()\n"
    )


def fitted_colour_map(task: Task) -> dict[int, int] | None:
    """The cell-wise colour substitution the train pairs agree on, where shapes allow one."""
    votes: dict[int, Counter[int]] = {}
    for p in task.train:
        assert p.output is not None
        if len(p.input) != len(p.output) or len(p.input[0]) != len(p.output[0]):
            return None
        for row_in, row_out in zip(p.input, p.output, strict=True):
            for a, b in zip(row_in, row_out, strict=True):
                votes.setdefault(a, Counter())[b] += 1
    mapping = {a: c.most_common(1)[0][0] for a, c in votes.items()}
    changed = {a: b for a, b in mapping.items() if a != b}
    return changed or None


def programs_for(task: Task) -> list[tuple[str, str]]:
    """(name, source) pairs: every geometric candidate, plus the fitted colour map where one exists."""
    out = [(name, _program(expr)) for name, expr in GEOMETRY.items()]
    cmap = fitted_colour_map(task)
    if cmap:
        out.append(("colour_map", _program("g", cmap)))
    return out
