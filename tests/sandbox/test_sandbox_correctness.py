"""Sandbox outputs are identical to native CPython outputs over the program corpus
(>= 200 programs on real ARC inputs, light numpy/pure-Python and heavy flood fills)."""

from __future__ import annotations

from typing import Any

import pytest

from soar_async.sandbox import SandboxPool, execute
from soar_async.sandbox.corpus import Program, corpus, heavy_programs, light_programs
from soar_async.sandbox.harness import run_program


def _host_has_scipy() -> bool:
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


def comparable(progs: list[Program]) -> list[Program]:
    """Programs the host can also run natively (scipy is a declared dependency, but be clear)."""
    return progs if _host_has_scipy() else [p for p in progs if "scipy" not in p.code]


def native(p: Program) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    run_program(p.code, p.inputs, lambda i, k, g, d: out.append((k, g)))
    return out


def test_corpus_is_big_enough() -> None:
    progs = corpus()
    assert len(progs) >= 200
    assert len({p.code for p in progs}) == len(progs)  # no duplicates
    assert heavy_programs() and all(p.heavy for p in heavy_programs())


def test_native_corpus_mostly_succeeds() -> None:
    """The corpus exercises real outputs, not just error paths."""
    results = [k for p in comparable(light_programs()) for k, _ in native(p)]
    assert results.count(None) / len(results) > 0.95


@pytest.mark.slow
def test_sandbox_matches_native_on_corpus(sandbox_built: object) -> None:
    progs = comparable(corpus())
    assert len(progs) >= 200 or not _host_has_scipy()
    with SandboxPool(workers=2) as pool:
        got = pool.map([(p.code, p.inputs) for p in progs])
    mismatches = []
    for p, res in zip(progs, got, strict=True):
        sandboxed = [(None if r.error is None else str(r.error), r.output) for r in res.results]
        if sandboxed != native(p):
            mismatches.append((p.name, [r.detail for r in res.results]))
    assert not mismatches, mismatches[:5]


def test_numpy_outputs_are_converted(sandbox_built: object) -> None:
    code = (
        "import numpy as np\n"
        "def transform(g):\n"
        "    a = np.array(g, dtype=np.uint8)\n"
        "    return [list(a[0]), [np.int64(3)] * len(a[0])] if len(g) == 1 else a.T\n"
    )
    res = execute(code, [[[1, 2]], [[1, 2], [3, 4]]])
    assert [r.output for r in res.results] == [[[1, 2], [3, 3]], [[1, 3], [2, 4]]]
    assert all(type(v) is int for r in res.results for row in r.output or [] for v in row)
