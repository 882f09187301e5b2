"""The harness that runs *inside* the guest (and, unchanged, natively for the baselines).

It is shipped to the guest as source (`HARNESS_SOURCE` is this file's text) and executed once in
the prelude turn, before the memory snapshot, so each fresh instance starts with it imported.
Keeping one implementation for guest and native runs is what makes the correctness suite and the
benchmark compare like with like: the same compile, exec, call and output validation.
`to_grid` is the project's one definition of a valid output: `scoring.validate_output` wraps it,
so outputs judged natively and in the sandbox cannot disagree. This file must stay self-contained
(it imports nothing of ours): it runs alone inside the guest.

Protocol with the host (guest side): `_host.call(b"g")` returns the JSON request
`{"code", "inputs", "stdout"}`; each input's outcome is sent as `b"r" + json([i, kind, grid,
detail])` as soon as it is known, so results before a trap are never lost; `b"o" + text` sends the
captured stdout at the end.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable
from typing import Any

# The harness looks builtins up in a private copy taken when it loads, before any program runs: a
# program that replaces builtins.len & co. changes its own behaviour, not how it is run and judged.
# (Functions take their builtins from the module's `__builtins__` when they are defined.)
__builtins__ = dict(builtins.__dict__)

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


PROGRAM_NAME = "soar_program"
"""`__name__` of a program's namespace, as in `records.run_native`: not "__main__", so an
`if __name__ == "__main__":` block (a test driver left in by the model) does not run."""

NUMERIC_KINDS = "iufO"
"""Array dtype kinds whose `tolist()` may hold valid cells (ints, integral floats, objects that are
ints); each cell is still checked. Bool, complex, string and datetime arrays are rejected."""

_np_scalars: dict[int, str] = {}  # id(numpy scalar type) -> "i" or "f"; filled once numpy is seen


def _scalar_kinds(np: Any) -> dict[int, str]:
    """numpy's own integer and float scalar types, keyed by id: recognising a cell's type by
    identity runs none of its code (a subclass or a metaclass could override __eq__/__hash__)."""
    if not _np_scalars:
        for code in np.typecodes["AllInteger"]:
            _np_scalars[id(np.dtype(code).type)] = "i"
        for code in np.typecodes["Float"]:
            _np_scalars[id(np.dtype(code).type)] = "f"
    return _np_scalars


def _tname(t: type) -> str:
    """A type's name for a message, without running a hostile metaclass's code."""
    return str(t.__name__)[:40] if type(t) is type else "object"


def _cell(v: Any, np: Any) -> int | None:
    """An integral cell value 0..9 as a Python int, else None.

    Accepts ints, integral floats (`np.zeros` grids: the reference compares lists with `==`, and
    `1.0 == 1`) and numpy integer/float scalars. Rejects bools (a mask returned by mistake), NaN,
    infinities, and subclasses of anything (their methods are untrusted)."""
    t = type(v)
    if t is int:
        return v if 0 <= v <= 9 else None
    if t is float:
        return int(v) if v.is_integer() and 0 <= v <= 9 else None
    if np is not None:
        kind = _scalar_kinds(np).get(id(t))
        if kind == "i":
            iv = int(v)
            return iv if 0 <= iv <= 9 else None
        if kind == "f":
            fv = float(v)
            return int(fv) if fv.is_integer() and 0 <= fv <= 9 else None
    return None


def _show(v: Any, np: Any) -> str:
    """A rejected cell for a message: the repr of a plain or numpy number, else its type's name."""
    t = type(v)
    if t is int and not -(10**9) < v < 10**9:
        return "an int out of range"  # repr of a huge int is slow, or refused past 4300 digits
    if t is int or t is float or t is bool or (np is not None and id(t) in _scalar_kinds(np)):
        return repr(v)[:40]
    return f"a {_tname(t)}"


_INT_ONLY = frozenset((int,))


def _plain_grid(obj: list[Any]) -> list[list[int]] | None:
    """The common output, checked with C loops: a list of equally long lists of plain ints 0..9,
    within MAX_SIDE on each side. A fresh copy, or None to take `to_grid`'s careful path, which
    also says what is wrong. Only exact lists and ints pass, so no program code runs here either.
    (A cell-by-cell walk costs about 3x as much; the host re-checks every output it is sent.)"""
    h = len(obj)
    if not 0 < h <= MAX_SIDE or type(obj[0]) is not list:
        return None
    w = len(obj[0])
    if not 0 < w <= MAX_SIDE:
        return None
    for row in obj:
        if type(row) is not list or len(row) != w or not _INT_ONLY.issuperset(map(type, row)):
            return None
        if min(row) < 0 or max(row) > 9:
            return None
    return [row[:] for row in obj]


def to_grid(obj: Any) -> tuple[str | None, Any, str | None]:
    """(error kind or None, grid, detail): THE definition of a valid program output, used inside
    the guest and natively (`scoring.validate_output` wraps it).

    Accepts a list or tuple of rows, or a 2-D numpy array; rows may be lists, tuples or 1-D numpy
    arrays; cells ints 0..9, integral floats or numpy integer/float scalars. The grid must be
    non-empty, rectangular and at most MAX_SIDE on each side. The result is a fresh list of lists
    of Python ints. Errors: "invalid_output", or "output_too_large" for a side over LARGE_SIDE.
    Only exact types are trusted (no subclasses), so hostile __eq__/__len__/__iter__ never run."""
    np = sys.modules.get("numpy")
    if np is not None:
        _scalar_kinds(np)  # filled before the program can touch numpy (in the guest: at snapshot time)
    t = type(obj)
    if obj is None:
        return "invalid_output", None, "transform returned None"
    if np is not None and t is np.ndarray:
        if obj.ndim != 2:
            return "invalid_output", None, f"numpy array with {obj.ndim} dimensions, expected 2"
        h, w = obj.shape
        if h > LARGE_SIDE or w > LARGE_SIDE:
            return "output_too_large", None, f"array of shape {h}x{w}, far over {MAX_SIDE}x{MAX_SIDE}"
        if obj.dtype.kind not in NUMERIC_KINDS:
            return "invalid_output", None, f"array of dtype {obj.dtype}, not integers"
        obj = obj.tolist()
        t = list
    if t is list:
        plain = _plain_grid(obj)
        if plain is not None:
            return None, plain, None
    elif t is not tuple:
        return "invalid_output", None, f"expected a list of rows, got {_tname(t)}"
    h = len(obj)
    if not h:
        return "invalid_output", None, "grid is empty"
    if h > MAX_SIDE:
        kind = "output_too_large" if h > LARGE_SIDE else "invalid_output"
        return kind, None, f"grid has {h} rows, more than {MAX_SIDE}"
    rows: list[list[int]] = []
    width = -1
    for r, row in enumerate(obj):
        rt = type(row)
        if np is not None and rt is np.ndarray:
            if row.ndim != 1 or row.dtype.kind not in NUMERIC_KINDS:
                return "invalid_output", None, f"row {r} is a {row.ndim}-D array of {row.dtype}"
            row = row.tolist()
        elif rt is not list and rt is not tuple:
            return "invalid_output", None, f"row {r} is {_tname(rt)}, not a list"
        n = len(row)
        if not n:
            return "invalid_output", None, f"row {r} is empty"
        if width < 0:
            width = n
            if n > MAX_SIDE:
                kind = "output_too_large" if n > LARGE_SIDE else "invalid_output"
                return kind, None, f"grid has {n} columns, more than {MAX_SIDE}"
        elif n != width:
            return "invalid_output", None, f"ragged grid: row {r} has {n} cells, row 0 has {width}"
        out = []
        for c, v in enumerate(row):
            iv = _cell(v, np)
            if iv is None:
                return "invalid_output", None, f"cell ({r}, {c}) is {_show(v, np)}, not an integer 0..9"
            out.append(iv)
        rows.append(out)
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
    namespace: dict[str, Any] = {"__name__": PROGRAM_NAME, "__builtins__": builtins}
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
