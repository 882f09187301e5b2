"""Executing one program in a fresh wasm instance made from the cached snapshot module.

One `Runtime` per process holds the engine, the deserialized module (~10 ms to load) and a linker;
`execute` then costs one Store + Instance (~ms, copy-on-write memory) per program. Nothing
survives between programs: a program that monkey-patches numpy or builtins poisons only its own
instance, which is dropped afterwards (and an instance that trapped is never reused).

Isolation comes from what the linker hands the guest: WASI with no host env, no inherited stdio,
one read-only preopen holding only the stdlib zip, `poll_oneoff` replaced so `time.sleep` (and any
blocking wait) fails at once, and `host.call` answering only this program's own request.
"""

from __future__ import annotations

import ctypes
import json
import math
import threading
import time
from typing import Any

from soar_async.arc import Grid, check_grid
from soar_async.sandbox import build
from soar_async.sandbox.types import ErrorKind, ExecResult, GridResult, Limits

TICK_S = 0.01  # epoch granularity: deadlines are enforced to within ~10 ms
ENOTSUP = 58  # WASI errno returned by the replaced poll_oneoff
DETAIL_CHARS = 300
MAX_REPLY = 8 << 20  # refuse absurd door messages from the guest (outputs are <= 30x30 anyway)
TURN_SOURCE = b"__import__('_soar').main()"


class _Ticker:
    """One daemon thread per engine advancing its epoch every TICK_S: the wall clock for every
    store's deadline. It only ever calls increment_epoch (an atomic add), so it is cheap."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.thread = threading.Thread(target=self._run, name="soar-sandbox-epoch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK_S)
            self.engine.increment_epoch()


class _Call:
    """Host-side state of one running program, found by the door through a thread-local."""

    __slots__ = ("alloc", "memory", "n", "request", "results", "stdout", "stdout_cap")

    def __init__(self, request: bytes, n: int, stdout_cap: int = 1 << 20) -> None:
        self.request = request
        self.n = n
        self.stdout_cap = stdout_cap
        self.results: dict[int, GridResult] = {}
        self.stdout = ""
        self.memory: Any = None  # the instance's exports, resolved once per program
        self.alloc: Any = None


def _truncate(s: object) -> str | None:
    if s is None:
        return None
    return str(s)[:DETAIL_CHARS]


class Runtime:
    """Engine + module + linker for one flavour (plain or fuel-metered); thread-safe."""

    def __init__(self, fuel: bool = False) -> None:
        import wasmtime as wt

        self.wt = wt
        self.fuel = fuel
        path = build.ensure_built(fuel=fuel)
        self.engine = build.make_engine(fuel)
        self.module = wt.Module.deserialize_file(self.engine, str(path))
        self.stdlib_dir = str(build.stdlib_dir())
        self._local = threading.local()
        self.linker = self._make_linker()
        self._ticker = _Ticker(self.engine)

    # -- host functions -------------------------------------------------------------------
    def _make_linker(self) -> Any:
        wt = self.wt
        linker = wt.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        i32 = wt.ValType.i32()
        ty4 = wt.FuncType([i32] * 4, [i32])

        def poll_oneoff(caller: Any, a: int, b: int, c: int, d: int) -> int:
            return ENOTSUP  # time.sleep / select fail immediately instead of blocking

        linker.define_func("wasi_snapshot_preview1", "poll_oneoff", ty4, poll_oneoff, True)
        linker.define_func("host", "call", ty4, self._door, True)
        return linker

    def _door(self, caller: Any, ptr: int, length: int, out_pp: int, out_lp: int) -> int:
        """host.call(ptr, len, *out_ptr, *out_len): never raises into wasmtime.

        Reads and writes go straight through the memory's base pointer (bounds-checked against
        its current length) because wasmtime-py's Memory.read/write wrappers cost more than the
        guest's whole per-input work; an empty reply needs no guest allocation."""
        try:
            call: _Call | None = getattr(self._local, "call", None)
            if call is None or call.memory is None:
                return -1
            mem = call.memory
            ptr &= 0xFFFFFFFF
            length &= 0xFFFFFFFF
            out_pp &= 0xFFFFFFFF
            out_lp &= 0xFFFFFFFF
            size = mem.data_len(caller)
            if length > MAX_REPLY or ptr + length > size or out_pp + 4 > size or out_lp + 4 > size:
                return -2
            base = ctypes.addressof(mem.data_ptr(caller).contents)
            reply = self._handle(call, ctypes.string_at(base + ptr, length))
            p = 0
            if reply:
                p = call.alloc(caller, len(reply)) & 0xFFFFFFFF
                size = mem.data_len(caller)  # the allocation may have grown (moved) memory
                if not p or p + len(reply) > size:
                    return -2
                base = ctypes.addressof(mem.data_ptr(caller).contents)
                ctypes.memmove(base + p, reply, len(reply))
            ctypes.c_uint32.from_address(base + out_pp).value = p
            ctypes.c_uint32.from_address(base + out_lp).value = len(reply)
            return 0
        except self.wt.Trap:
            raise  # a trap inside host_alloc (e.g. the deadline) must stop the guest
        except Exception:
            return -2

    @staticmethod
    def _handle(call: _Call, msg: bytes) -> bytes:
        tag, body = msg[:1], msg[1:]
        if tag == b"g":
            return call.request
        if tag == b"r":
            _record(call, body)
        elif tag == b"o":
            call.stdout = body.decode("utf-8", "replace")[: call.stdout_cap]
        return b""

    # -- execution ------------------------------------------------------------------------
    def execute(self, code: str, inputs: list[Grid], limits: Limits) -> ExecResult:
        wt = self.wt
        t0 = time.perf_counter()
        n = len(inputs)
        wall = limits.wall_for(n)
        request = json.dumps(
            {"code": code, "inputs": inputs, "stdout": limits.stdout_bytes},
            separators=(",", ":"),
        ).encode()
        call = _Call(request, n, limits.stdout_bytes)
        store = wt.Store(self.engine)
        wasi = wt.WasiConfig()
        wasi.argv = [build.ARGV0]
        wasi.env = build.GUEST_ENV
        wasi.preopen_dir(self.stdlib_dir, build.STDLIB_GUEST_DIR, False)
        store.set_wasi(wasi)
        store.set_limits(memory_size=limits.memory_mb << 20)
        if self.fuel:
            store.set_fuel(int(limits.fuel or (1 << 62)))
        trap: tuple[ErrorKind, str] | None = None
        started = False  # whether the program's turn began: a failure before it is the sandbox's
        self._local.call = call
        try:
            store.set_epoch_deadline(max(1, math.ceil(wall / TICK_S)) + 1)
            inst = self.linker.instantiate(store, self.module)
            ex = inst.exports(store)
            call.memory, call.alloc = ex["memory"], ex["host_alloc"]
            p = ex["host_alloc"](store, len(TURN_SOURCE))
            ex["memory"].write(store, TURN_SOURCE, p)
            started = True
            ex["turn"](store, p, len(TURN_SOURCE))
        except wt.ExitTrap as e:
            trap = (ErrorKind.EXCEPTION, f"SystemExit: the program exited the interpreter ({e.code})")
        except wt.Trap as e:
            trap = _classify_trap(wt, e, wall, started)
        except wt.WasmtimeError as e:
            trap = _classify_error(e, started)
        finally:
            self._local.call = None
            try:
                store.close()  # frees the instance's memory now, not at GC time
            except Exception:
                pass
        results: list[GridResult] = []
        first_missing = True
        for i in range(n):
            r = call.results.get(i)
            if r is None:
                if trap is not None:
                    kind, detail = trap
                    if not first_missing:
                        detail = f"not run: the instance stopped on an earlier input ({detail})"
                else:  # the turn ended normally without this result: the program broke the harness
                    kind, detail = ErrorKind.EXCEPTION, "no result reported: the program interfered with the harness"
                first_missing = False
                r = GridResult(None, kind, _truncate(detail))
            results.append(r)
        return ExecResult(results, call.stdout, time.perf_counter() - t0)


def _trap_summary(e: Any) -> str:
    """The useful part of a wasmtime trap message: the cause ("wasm trap: wasm `unreachable`
    instruction executed") and the innermost guest frames ("abort <- os_abort"), not the
    "error while executing at wasm backtrace:" header."""
    lines = [ln.strip() for ln in str(getattr(e, "message", e)).splitlines() if ln.strip()]
    cause = ""
    if "Caused by:" in lines:
        after = lines[lines.index("Caused by:") + 1 :]
        cause = after[-1] if after else ""
    frames = []
    for ln in lines:
        if ln[:1].isdigit() and ":" in ln and "!" in ln:
            frames.append(ln.rsplit("!", 1)[1])
    if not cause:
        cause = next((ln for ln in lines if "backtrace" not in ln and not ln[:1].isdigit()), "")
    where = f" in {' <- '.join(frames[:3])}" if frames else ""
    return f"{cause or 'trap'}{where}"


def _classify_trap(wt: Any, e: Any, wall: float, started: bool = True) -> tuple[ErrorKind, str]:
    """Deadline and fuel traps are TIMEOUT; any other trap while the program runs is deterministic
    guest behaviour (os.abort(), a fatal interpreter error, a C extension fault), so EXCEPTION:
    CRASH is kept for the sandbox itself failing, which the executor retries as a machine fault."""
    code = getattr(e, "trap_code", None)
    if code == wt.TrapCode.INTERRUPT:
        return ErrorKind.TIMEOUT, f"wall clock limit of {wall:g}s exceeded"
    if code == wt.TrapCode.OUT_OF_FUEL:
        return ErrorKind.TIMEOUT, "fuel limit exceeded"
    if code == wt.TrapCode.STACK_OVERFLOW:
        return ErrorKind.EXCEPTION, "RecursionError: wasm stack exhausted"
    name = str(getattr(code, "name", "")).lower() or "trap"
    summary = _trap_summary(e)
    if code == wt.TrapCode.UNREACHABLE and " in abort" in summary:
        name = "the interpreter aborted (os.abort() or a fatal error)"
    kind = ErrorKind.EXCEPTION if started else ErrorKind.CRASH
    prefix = "guest trapped" if started else "sandbox instance failed to start"
    return kind, f"{prefix}: {name}; {summary}"[:DETAIL_CHARS]


def _classify_error(e: Any, started: bool) -> tuple[ErrorKind, str]:
    """A wasmtime error that is not a trap: before the program started, the instance could not
    be made (host resources): CRASH, retried; during the program, the program's doing."""
    first = str(e).strip().splitlines()
    msg = first[0][:200] if first else type(e).__name__
    if not started:
        return ErrorKind.CRASH, f"sandbox instance failed to start: {msg}"
    return ErrorKind.EXCEPTION, f"guest error: {msg}"


def _record(call: _Call, body: bytes) -> None:
    """Accept one per-input result from the guest, re-validated on the host: the guest is not
    trusted, so a forged or malformed report can at worst describe the program's own inputs."""
    try:
        i, kind, grid, detail = json.loads(body)
    except Exception:
        return
    if type(i) is not int or not 0 <= i < call.n or i in call.results:
        return
    if kind is None:
        problem = check_grid(grid)
        if problem is not None:
            call.results[i] = GridResult(None, ErrorKind.INVALID_OUTPUT, _truncate(problem))
        else:
            call.results[i] = GridResult(grid, None, None)
        return
    try:
        ek = ErrorKind(kind)
    except ValueError:
        ek = ErrorKind.EXCEPTION
    call.results[i] = GridResult(None, ek, _truncate(detail) if isinstance(detail, str) else None)


_runtimes: dict[bool, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime(fuel: bool = False) -> Runtime:
    """This process's shared Runtime for the flavour (built and loaded on first use)."""
    rt = _runtimes.get(fuel)
    if rt is None:
        with _runtimes_lock:
            rt = _runtimes.get(fuel)
            if rt is None:
                rt = _runtimes[fuel] = Runtime(fuel)
    return rt


def execute(code: str, inputs: list[Grid], limits: Limits | None = None) -> ExecResult:
    """Run `code`'s `transform` on every input in one fresh sandbox instance."""
    limits = limits or Limits()
    return runtime(limits.fuel is not None).execute(code, inputs, limits)
