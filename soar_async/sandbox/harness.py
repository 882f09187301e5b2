"""The harness that runs *inside* the guest (and, unchanged, natively for the baselines).

It is shipped to the guest as source (`HARNESS_SOURCE` is this file's text) and executed once in
the prelude turn, before the memory snapshot, so each fresh instance starts with it imported.
Keeping one implementation for guest and native runs is what makes the correctness suite and the
benchmark compare like with like: the same compile, exec, call and output validation.

Protocol with the host (guest side): `_host.call(b"g")` returns the JSON request
`{"code", "inputs", "stdout"}`; each input's outcome is sent as `b"r" + json([i, kind, grid,
detail])` as soon as it is known, so results before a trap are never lost; `b"o" + text` sends the
captured stdout at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

MAX_SIDE = 30
LARGE_SIDE = 100  # a side beyond this is "output_too_large" rather than "invalid_output"
DETAIL_CHARS = 300

Emit = Callable[[int, "str | None", Any, "str | None"], None]


class CappedWriter:
    """A text stream that keeps at most `cap` characters and silently drops the rest, so a
    gigantic print costs the guest time (bounded by the wall clock) but never host memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.dropped = False

    def write(self, s: object) -> int:
        if type(s) is not str:
            s = str(s)
        n = len(s)
        room = self.cap - self.size
        if room > 0:
            piece = s[:room]
            self.parts.append(piece)
            self.size += len(piece)
        if n > room:
            self.dropped = True
        return n

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        return "".join(self.parts)


def _describe(e: BaseException) -> str:
    """'Type: message', truncated; never lets a hostile __str__/__repr__ escape."""
    try:
        name = type(e).__name__
        if type(name) is not str:
            name = "Exception"
    except BaseException:
        name = "Exception"
    try:
        msg = str(e)
        if type(msg) is not str:
            msg = ""
    except BaseException:
        msg = "<unprintable>"
    text = f"{name}: {msg}" if msg else name
    return text[:DETAIL_CHARS]


def _cell(v: Any, np: Any) -> int | None:
    t = type(v)
    if t is int:
        return v if 0 <= v <= 9 else None
    if np is not None and issubclass(t, np.integer) and t.__module__ == "numpy":
        iv = int(v)
        return iv if type(iv) is int and 0 <= iv <= 9 else None
    return None


def to_grid(obj: Any) -> tuple[str | None, Any, str | None]:
    """(error kind or None, grid, detail). Accepts a list of lists of ints or numpy integers,
    rows that are 1-D integer arrays, or a 2-D integer numpy array. Only exact types are
    trusted (no subclasses), so hostile __eq__/__len__/__iter__ never run."""
    np = sys.modules.get("numpy")
    t = type(obj)
    if np is not None and t is np.ndarray:
        if obj.ndim != 2:
            return "invalid_output", None, f"array has {obj.ndim} dimensions, not 2"
        h, w = obj.shape
        if h > LARGE_SIDE or w > LARGE_SIDE:
            return "output_too_large", None, f"array shape {h}x{w}"
        if obj.dtype.kind not in "iu":
            return "invalid_output", None, f"array dtype {obj.dtype}, not an integer type"
        obj = obj.tolist()
        t = list
    if t is not list:
        return "invalid_output", None, f"not a grid: {t.__name__}"
    if not obj:
        return "invalid_output", None, "grid is empty"
    if len(obj) > LARGE_SIDE:
        return "output_too_large", None, f"{len(obj)} rows"
    rows: list[list[int]] = []
    width = -1
    for r, row in enumerate(obj):
        rt = type(row)
        if np is not None and rt is np.ndarray:
            if row.ndim != 1 or row.dtype.kind not in "iu":
                return "invalid_output", None, f"row {r} is an array of {row.dtype}/{row.ndim}d"
            if row.shape[0] > LARGE_SIDE:
                return "output_too_large", None, f"row {r} has {row.shape[0]} cells"
            row = row.tolist()
        elif rt is not list:
            return "invalid_output", None, f"row {r} is {rt.__name__}, not a list"
        if len(row) > LARGE_SIDE:
            return "output_too_large", None, f"row {r} has {len(row)} cells"
        if not row:
            return "invalid_output", None, f"row {r} is empty"
        if width < 0:
            width = len(row)
        elif len(row) != width:
            return "invalid_output", None, f"ragged grid: row {r} has {len(row)} cells, not {width}"
        out = []
        for c, v in enumerate(row):
            iv = _cell(v, np)
            if iv is None:
                return "invalid_output", None, f"cell ({r}, {c}) is not an integer 0..9"
            out.append(iv)
        rows.append(out)
    if len(rows) > MAX_SIDE or width > MAX_SIDE:
        return "invalid_output", None, f"grid is {len(rows)}x{width}, a side over {MAX_SIDE}"
    return None, rows, None


def run_program(code: str, inputs: list[Any], emit: Emit) -> None:
    """Compile and exec `code` in a fresh namespace, then call `transform` on each input and
    `emit(i, kind, grid, detail)` for each. Whole-program failures are emitted for every input."""
    n = len(inputs)

    def all_inputs(kind: str, detail: str | None) -> None:
        for i in range(n):
            emit(i, kind, None, detail)

    try:
        compiled = compile(code, "<program>", "exec")
    except MemoryError:
        return all_inputs("memory", "MemoryError while compiling")
    except BaseException as e:  # SyntaxError, ValueError (null bytes), RecursionError...
        return all_inputs("syntax_error", _describe(e))
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compiled, namespace)
    except MemoryError:
        return all_inputs("memory", "MemoryError")
    except BaseException as e:
        return all_inputs("exception", _describe(e))
    transform = namespace.get("transform")
    if not callable(transform):
        return all_inputs("no_transform", "no callable `transform` defined")
    for i, grid in enumerate(inputs):
        try:
            result = transform(grid)
            kind, out, detail = to_grid(result)
            del result
        except MemoryError:
            kind, out, detail = "memory", None, "MemoryError"
        except BaseException as e:
            kind, out, detail = "exception", None, _describe(e)
        emit(i, kind, out, detail)


def main() -> None:
    """Guest entry point: one program per instance, driven through the `host.call` door."""
    import json

    import _host  # type: ignore[import-not-found]  # the guest's builtin door module

    call = _host.call
    dumps = json.dumps
    req = json.loads(call(b"g"))
    writer = CappedWriter(int(req["stdout"]))
    sys.stdout = sys.stderr = writer  # type: ignore[assignment]

    def emit(i: int, kind: str | None, grid: Any, detail: str | None) -> None:
        call(b"r" + dumps([i, kind, grid, detail], separators=(",", ":")).encode())

    try:
        run_program(req["code"], req["inputs"], emit)
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        call(b"o" + writer.text().encode("utf-8", "replace"))
