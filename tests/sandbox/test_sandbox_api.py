"""The execution API's contract: result shapes, serialisation, whole-program errors, stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgpack
import pytest

from soar_async.sandbox import ErrorKind, ExecResult, GridResult, Limits, ensure_built, execute

G = [[0, 1], [2, 3]]


def test_exec_result_round_trips_through_msgpack_and_json() -> None:
    res = ExecResult([GridResult([[1]]), GridResult(None, ErrorKind.TIMEOUT, "wall clock")], "out", 0.25)
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = ExecResult.from_dict(msgpack.unpackb(msgpack.packb(d)))
    assert back.results == res.results and back.stdout == "out" and back.duration_s == 0.25
    assert back.results[1].error is ErrorKind.TIMEOUT


def test_limits_round_trip() -> None:
    lim = Limits(wall_s=3.0, memory_mb=100, stdout_bytes=10, fuel=None)
    assert Limits.from_dict(lim.to_dict()) == lim


def test_error_kind_values() -> None:
    assert {k.value for k in ErrorKind} == {
        "syntax_error",
        "no_transform",
        "exception",
        "timeout",
        "memory",
        "invalid_output",
        "output_too_large",
        "crash",
    }


def test_identity_and_stdout(sandbox_built: object) -> None:
    res = execute("def transform(g):\n    print('seen', len(g))\n    return g\n", [G, [[5]]])
    assert [r.output for r in res.results] == [G, [[5]]]
    assert all(r.ok for r in res.results)
    assert res.stdout == "seen 2\nseen 1\n"
    assert res.duration_s > 0


def test_whole_program_errors_are_reported_on_every_input(sandbox_built: object) -> None:
    for code, kind in [
        ("def transform(g) return", ErrorKind.SYNTAX_ERROR),
        ("x = 1", ErrorKind.NO_TRANSFORM),
        ("raise ValueError('bad shape')", ErrorKind.EXCEPTION),
    ]:
        res = execute(code, [G, G, G])
        assert [r.error for r in res.results] == [kind] * 3
    res = execute("raise ValueError('bad shape')", [G])
    assert res.results[0].detail == "ValueError: bad shape"


def test_exception_detail_is_truncated(sandbox_built: object) -> None:
    res = execute("def transform(g):\n    raise KeyError('k' * 100000)\n", [G])
    assert res.results[0].error is ErrorKind.EXCEPTION
    assert res.results[0].detail is not None and len(res.results[0].detail) <= 300


def test_per_input_errors_are_independent(sandbox_built: object) -> None:
    code = "def transform(g):\n    if g[0][0] == 0:\n        raise ZeroDivisionError('x')\n    return g\n"
    res = execute(code, [G, [[1]]])
    assert res.results[0].error is ErrorKind.EXCEPTION
    assert res.results[1].output == [[1]]


def test_inputs_are_not_shared_between_calls(sandbox_built: object) -> None:
    code = "def transform(g):\n    g[0][0] = 9\n    return g\n"
    grid = [[1]]
    res = execute(code, [grid, grid])
    assert [r.output for r in res.results] == [[[9]], [[9]]]
    assert grid == [[1]]  # the host's object is never touched


def test_empty_input_list(sandbox_built: object) -> None:
    assert execute("def transform(g): return g", []).results == []


@pytest.mark.slow
def test_fresh_instance_per_program(sandbox_built: object) -> None:
    execute("import numpy\nnumpy.flipud = None\nX = 1\ndef transform(g): return g", [G])
    res = execute("import numpy\ndef transform(g):\n    return numpy.flipud(numpy.array(g)).tolist()", [G])
    assert res.results[0].output == [[2, 3], [0, 1]]


def test_limits_are_validated() -> None:
    for bad in ({"wall_s": 0}, {"memory_mb": 10}, {"stdout_bytes": -1}, {"fuel": 0}):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_fuel_limit(sandbox_built: object) -> None:
    """Fuel needs its own compiled module: the first run on a machine builds it (about two minutes)."""
    ensure_built(fuel=True)
    spin = "def transform(g):\n    while True: pass\n"
    res = execute(spin, [G], Limits(fuel=10_000_000, wall_s=60))
    assert res.results[0].error is ErrorKind.TIMEOUT
    assert res.results[0].detail == "fuel limit exceeded"
    ok = execute("def transform(g):\n    return g\n", [G], Limits(fuel=10**9))
    assert ok.results[0].output == G


def test_main_block_does_not_run(sandbox_built: object) -> None:
    """Programs run under a non-main module name, as natively (`records.run_native`)."""
    code = (
        "def transform(g):\n    return [[len(__name__) % 10]]\n"
        "if __name__ == '__main__':\n    print('main ran')\n    transform = lambda g: [[9]]\n"
    )
    res = execute(code, [G])
    assert res.results[0].output == [[len("soar_program") % 10]]
    assert "main ran" not in res.stdout


def test_old_snapshot_builds_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soar_async.sandbox import build

    monkeypatch.setenv("SOAR_CACHE_DIR", str(tmp_path))
    root = build.build_dir().parent
    current = build.build_dir()
    current.mkdir(parents=True)
    olds = []
    for i, name in enumerate(["aaa", "bbb", "ccc"]):
        d = root / name
        (d / "lib").mkdir(parents=True)
        (d / "snapshot.cwasm").write_bytes(b"x")
        os.utime(d, (1_000_000 + i, 1_000_000 + i))
        olds.append(d)
    gone = build.prune_old_builds(keep=2)
    assert sorted(gone) == sorted(olds[:2])
    assert current.is_dir() and olds[2].is_dir() and not olds[0].exists() and not olds[1].exists()


def test_limits_from_the_sandbox_config_section() -> None:
    """The executor's limits come from the typed config; its zeros mean the sandbox's own defaults."""
    from soar_async.config import SandboxConfig

    assert Limits.from_settings(SandboxConfig()) == Limits()
    got = Limits.from_settings(SandboxConfig(wall_s=3.0, memory_mb=256, stdout_bytes=100))
    assert got == Limits(wall_s=3.0, memory_mb=256, stdout_bytes=100)
    assert Limits.from_settings(SandboxConfig(memory_mb=0, stdout_bytes=0)) == Limits()
