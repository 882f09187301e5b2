"""Hostile programs: each is contained with the right error kind, the host is unharmed, and the
next program in the same process runs normally (fresh instance per program)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from soar_async.sandbox import ErrorKind, Limits, execute

E = ErrorKind
GRID = [[1, 2, 0], [0, 3, 4], [5, 0, 6]]
FAST = Limits(wall_s=1.0)
ROOMY = Limits(wall_s=30.0)
"""For programs that must be stopped by the memory limit: filling 512 MiB takes about a second
on a slow shared core, so a 1 s wall clock would race the memory limit instead of testing it."""
CANARY_ENV = "SOAR_SANDBOX_TEST_SECRET"
CANARY_VALUE = "hunter2-do-not-leak"
PWNED = Path("/tmp/soar-sandbox-pwned")

BENIGN = (
    "import numpy as np\n"
    "def transform(g):\n"
    "    assert len(g) == 3 and sum(1 for _ in g) == 3 and isinstance([], list)\n"
    "    assert np.array(g).sum() == 21 and np.flipud is not None\n"
    "    return np.flipud(np.array(g)).tolist()\n"
)
BENIGN_OUT = [[5, 0, 6], [0, 3, 4], [1, 2, 0]]


def t(body: str) -> str:
    """A transform whose body is `body` (indented)."""
    lines = "\n".join("    " + ln for ln in body.strip("\n").splitlines())
    return f"import numpy as np\nimport os, sys\ndef transform(g):\n{lines}\n"


HOSTILE: dict[str, tuple[str, set[ErrorKind]]] = {
    # --- CPU
    "loop_python": (t("while True: pass"), {E.TIMEOUT}),
    "loop_numpy": (t("a = np.ones(100)\nwhile True: a = a + 1"), {E.TIMEOUT}),
    "loop_module_level": ("while True: pass\ndef transform(g): return g\n", {E.TIMEOUT}),
    "huge_int_power": (t("x = 10 ** (10 ** 9)\nreturn g"), {E.TIMEOUT, E.MEMORY}),
    # --- memory
    "bomb_list": (t("x = [0] * (10 ** 9)\nreturn g"), {E.MEMORY}),
    "bomb_list_append": (t("l = []\nwhile True: l.append([0] * 10 ** 6)"), {E.MEMORY}),
    "bomb_numpy": (t("a = np.ones((9000, 9000))\nreturn g"), {E.MEMORY}),
    "bomb_string": (t("s = 'x' * (600 * 2 ** 20)\nreturn g"), {E.MEMORY}),
    "bomb_bytearray_growth": (t("b = bytearray()\nwhile True: b += bytes(2 ** 24)"), {E.MEMORY}),
    # --- recursion
    "recursion": (t("def f(n): return f(n + 1)\nreturn f(0)"), {E.EXCEPTION}),
    "recursion_unlimited": (
        t("sys.setrecursionlimit(10 ** 8)\ndef f(n): return f(n + 1)\nreturn f(0)"),
        {E.EXCEPTION, E.TIMEOUT},
    ),
    "recursion_c_level": (
        t("l = []\nfor _ in range(10 ** 6): l = [l]\nreturn repr(l)"),
        {E.EXCEPTION, E.INVALID_OUTPUT},
    ),
    # --- threads / processes / signals
    "threads": (t("import threading\nthreading.Thread(target=print).start()\nreturn g"), {E.EXCEPTION}),
    "fork": (t("os.fork()\nreturn g"), {E.EXCEPTION}),
    "subprocess": (
        t("import subprocess\nsubprocess.run(['touch', '/tmp/soar-sandbox-pwned'])\nreturn g"),
        {E.EXCEPTION},
    ),
    "os_system": (t("os.system('touch /tmp/soar-sandbox-pwned')\nreturn g"), {E.EXCEPTION}),
    "signal_raise": (t("import signal\nsignal.raise_signal(signal.SIGINT)\nreturn g"), {E.EXCEPTION}),
    "signal_kill": (t("os.kill(os.getppid(), 9)\nreturn g"), {E.EXCEPTION}),
    "sleep": (t("import time\ntime.sleep(3600)\nreturn g"), {E.EXCEPTION}),
    "sys_exit": (t("sys.exit(3)"), {E.EXCEPTION}),
    "os_exit": (t("os._exit(0)"), {E.EXCEPTION}),
    "os_abort": (t("os.abort()"), {E.EXCEPTION}),  # a wasm trap: deterministic, so not CRASH
    "fatal_error": (t("import faulthandler\nfaulthandler._sigsegv()"), {E.EXCEPTION}),
    "module_level_exit": ("import sys\nsys.exit(0)\n", {E.EXCEPTION}),
    # --- filesystem / network / environment
    "read_passwd": (t("return open('/etc/passwd').read()"), {E.EXCEPTION}),
    "escape_stdlib": (t("return open('/usr/local/lib/../../../etc/passwd').read()"), {E.EXCEPTION}),
    "list_root": (t("return os.listdir('/')"), {E.EXCEPTION}),
    "write_file": (t("open('/tmp/soar-sandbox-pwned', 'w').write('x')\nreturn g"), {E.EXCEPTION}),
    "write_stdlib": (t("open('/usr/local/lib/evil.py', 'w').write('x')\nreturn g"), {E.EXCEPTION}),
    "socket": (t("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\nreturn g"), {E.EXCEPTION}),
    "urllib": (t("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1/')\nreturn g"), {E.EXCEPTION}),
    "host_env": (t(f"raise RuntimeError(repr(dict(os.environ)) + os.environ['{CANARY_ENV}'])"), {E.EXCEPTION}),
    "ctypes": (t("import ctypes\nctypes.CDLL(None).system(b'touch /tmp/soar-sandbox-pwned')\nreturn g"), {E.EXCEPTION}),
    "stdin": (t("return input()"), {E.EXCEPTION}),
    # --- poisoning the next program (must not leak: fresh instance per program)
    "poison_builtins": (
        t(
            "import builtins\nbuiltins.len = lambda x: 0\nbuiltins.sum = lambda *a: -1\n"
            "builtins.isinstance = lambda *a: False\nbuiltins.type = lambda *a: int\n"
            "builtins.enumerate = builtins.int = builtins.repr = None\nreturn g"
        ),
        {None},
    ),
    "poison_numpy": (
        t("np.array = lambda *a, **k: None\nnp.flipud = None\nimport numpy\nnumpy.sum = None\nreturn g"),
        {None},
    ),
    "poison_harness": (
        t("import _soar, json\n_soar.to_grid = lambda o: (None, [[9]], None)\njson.dumps = None\nreturn g"),
        {None, E.EXCEPTION},
    ),
    "forge_results": (
        t("import _host\n_host.call(b'r[0,null,[[7]],null]')\n_host.call(b'r[5,\"bogus\",1,2]')\nreturn g"),
        {None},
    ),
    # --- output
    "gigantic_print": (t("for _ in range(50): print('x' * 10 ** 6)\nreturn g"), {None}),
    "print_forever": (t("while True: print('spam')"), {E.TIMEOUT}),
    "stderr_flood": (
        t("for _ in range(10 ** 4): sys.stderr.write('y' * 1000)\nos.write(1, b'z' * 10 ** 6)\nreturn g"),
        {None},
    ),
    "return_string": (t("return 'hello'"), {E.INVALID_OUTPUT}),
    "return_none": (t("return None"), {E.INVALID_OUTPUT}),
    "return_ragged": (t("return [[1, 2], [3]]"), {E.INVALID_OUTPUT}),
    "return_out_of_range": (t("return [[10]]"), {E.INVALID_OUTPUT}),
    "return_negative": (t("return [[-1]]"), {E.INVALID_OUTPUT}),
    "return_bool": (t("return [[True]]"), {E.INVALID_OUTPUT}),
    "return_float_array": (t("return np.array(g) + 0.5"), {E.INVALID_OUTPUT}),
    "return_float_array_integral": (t("return np.array(g) * 1.0"), {None}),  # as np.zeros builds
    "return_float_lists": (t("return [[float(v) for v in r] for r in g]"), {None}),
    "return_nan": (t("return np.full((3, 3), np.nan)"), {E.INVALID_OUTPUT}),
    "return_bool_array": (t("return np.array(g) > 0"), {E.INVALID_OUTPUT}),
    "return_float_subclass": (
        t("class F(float):\n    def is_integer(self): raise SystemExit\nreturn [[F(1.0)]]"),
        {E.INVALID_OUTPUT},
    ),
    "return_3d": (t("return np.zeros((2, 2, 2), dtype=int)"), {E.INVALID_OUTPUT}),
    "return_side_31": (t("return [[0] * 31]"), {E.INVALID_OUTPUT}),
    "return_huge": (t("return [[0] * 5000] * 5000"), {E.OUTPUT_TOO_LARGE}),
    "return_huge_array": (t("return np.zeros((5000, 5000), dtype=np.int8)"), {E.OUTPUT_TOO_LARGE}),
    "return_generator": (t("return (row for row in g)"), {E.INVALID_OUTPUT}),
    "return_tuple": (t("return tuple(map(tuple, g))"), {None}),
    "return_array_rows": (t("return [np.array(r, dtype=float) for r in g]"), {None}),
    "hostile_eq": (
        t(
            "class G(list):\n    def __eq__(self, o): return True\n    def __len__(self): raise SystemExit\n"
            "return G([[1]])"
        ),
        {E.INVALID_OUTPUT},
    ),
    "hostile_int": (
        t("class I(int):\n    def __eq__(self, o): return True\nreturn [[I(1)]]"),
        {E.INVALID_OUTPUT},
    ),
    "hostile_str_exception": (
        t("class X(Exception):\n    def __str__(self): raise RuntimeError('nope')\nraise X()"),
        {E.EXCEPTION},
    ),
    "del_raises": (
        t(
            "class D:\n    def __del__(self): raise RuntimeError('from __del__')\n"
            "d = D()\ndel d\nreturn [D() and r for r in g]"
        ),
        {None},
    ),
    "del_exits": (
        t("class D:\n    def __del__(self): os._exit(1)\nD()\nreturn g"),
        {E.EXCEPTION},
    ),
    "syntax_error": ("def transform(g) return g\n", {E.SYNTAX_ERROR}),
    "null_bytes": ("def transform(g):\n    return g\x00\n", {E.SYNTAX_ERROR}),
    "no_transform": ("x = 1\n", {E.NO_TRANSFORM}),
    "transform_not_callable": ("transform = 3\n", {E.NO_TRANSFORM}),
}


@pytest.fixture(scope="module", autouse=True)
def _host_canary(sandbox_built: object) -> object:
    os.environ[CANARY_ENV] = CANARY_VALUE
    PWNED.unlink(missing_ok=True)
    yield
    os.environ.pop(CANARY_ENV, None)


def test_there_are_enough_hostile_programs() -> None:
    assert len(HOSTILE) >= 25


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name: str) -> None:
    code, allowed = HOSTILE[name]
    res = execute(code, [GRID, GRID], ROOMY if allowed == {E.MEMORY} else FAST)
    assert len(res.results) == 2
    for r in res.results:
        assert r.error in allowed, (name, r)
        if r.error is None:
            assert r.output == GRID or name in ("poison_harness", "forge_results")
        else:
            assert r.output is None
    # the host is unharmed
    assert not PWNED.exists(), "a guest wrote to the host filesystem"
    assert os.environ.get(CANARY_ENV) == CANARY_VALUE
    assert CANARY_VALUE not in (res.stdout + "".join(r.detail or "" for r in res.results))
    assert len(res.stdout) <= FAST.stdout_bytes
    # the next program is unaffected
    nxt = execute(BENIGN, [GRID])
    assert nxt.results[0].error is None, nxt.results[0]
    assert nxt.results[0].output == BENIGN_OUT


def test_forged_results_are_revalidated() -> None:
    code, _ = HOSTILE["forge_results"]
    res = execute(code, [GRID], FAST)
    # the forged result arrived first, but it can only describe the program's own input
    assert res.results[0].error is None
    assert res.results[0].output in ([[7]], GRID)


def test_default_wall_clock_scales_with_inputs() -> None:
    assert Limits().wall_for(1) == 2.0
    assert Limits().wall_for(5) == 5.0
    assert Limits().wall_for(100) == 20.0
    assert Limits(wall_s=0.5).wall_for(100) == 0.5


def test_abort_is_an_exception_on_every_input_not_a_crash() -> None:
    """CRASH means the sandbox failed (retried as a machine fault); a trap is the program's."""
    res = execute(t("os.abort()"), [GRID, GRID, GRID], FAST)
    assert [r.error for r in res.results] == [E.EXCEPTION] * 3
    detail = res.results[0].detail or ""
    assert "abort" in detail and "unreachable" in detail, detail
    assert "backtrace" not in detail
    assert "not run" in (res.results[2].detail or "")
    nxt = execute(BENIGN, [GRID])
    assert nxt.results[0].output == BENIGN_OUT


def test_abort_on_a_later_input_keeps_earlier_results() -> None:
    res = execute(t("if g[0][0] == 9:\n    os.abort()\nreturn g"), [GRID, [[9]], GRID], FAST)
    assert res.results[0].output == GRID
    assert [r.error for r in res.results] == [None, E.EXCEPTION, E.EXCEPTION]


@pytest.mark.slow
def test_timeout_reports_earlier_results() -> None:
    code = t("if g[0][0] == 9:\n    while True: pass\nreturn g")
    res = execute(code, [GRID, [[9]], GRID], Limits(wall_s=0.5))
    assert res.results[0].output == GRID
    assert [r.error for r in res.results] == [None, E.TIMEOUT, E.TIMEOUT]
    assert "not run" in (res.results[2].detail or "")


def test_memory_limit_is_configurable() -> None:
    code = t("b = bytearray(100 * 2 ** 20)\nreturn g")
    assert execute(code, [GRID], Limits(memory_mb=512)).results[0].error is None
    assert execute(code, [GRID], Limits(memory_mb=80)).results[0].error == E.MEMORY


def test_stdout_cap_is_configurable() -> None:
    res = execute(t("print('a' * 1000)\nreturn g"), [GRID], Limits(stdout_bytes=10))
    assert res.stdout == "a" * 10
