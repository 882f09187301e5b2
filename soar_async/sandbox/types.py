"""The sandbox's public data types: what a caller asks for (`Limits`) and what it gets back
(`ExecResult` of one `GridResult` per input).

They are plain dataclasses with a `to_dict`/`from_dict` pair of msgpack-able builtins because they
travel over the message bus between actors and over pipes between pool processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from soar_async.arc import Grid

if TYPE_CHECKING:
    from soar_async.config import SandboxConfig


class ErrorKind(StrEnum):
    """Why an input produced no grid. String-valued so it serialises as itself."""

    SYNTAX_ERROR = "syntax_error"  # the source does not compile (reported on every input)
    NO_TRANSFORM = "no_transform"  # no callable `transform` after running the module body
    EXCEPTION = "exception"  # transform (or the module body) raised; detail "Type: message"
    TIMEOUT = "timeout"  # wall clock (epoch) or fuel budget exhausted
    MEMORY = "memory"  # MemoryError inside the guest: the memory limit was hit
    INVALID_OUTPUT = "invalid_output"  # not a grid: wrong type, ragged, cell not 0..9, side > 30
    OUTPUT_TOO_LARGE = "output_too_large"  # absurdly large result (a side over LARGE_SIDE)
    # The sandbox itself failed, never the program: a worker process died or hung, or an instance
    # could not be created. Load-dependent; the executor retries it as a machine fault. (A guest
    # trap such as os.abort() is deterministic and reported as EXCEPTION.)
    CRASH = "crash"


MIN_MEMORY_MB = 64  # the post-numpy snapshot alone occupies ~52 MiB of guest memory


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits.

    wall_s: None means clamp(1 s x number of grids, 2 s, 20 s) — one budget for the whole
    program, enforced by epoch interruption so even a tight wasm loop is stopped.
    fuel: optional deterministic instruction budget; it needs a separately compiled module
    (built on first use, about two minutes), so it is off by default.
    """

    wall_s: float | None = None
    memory_mb: int = 512
    stdout_bytes: int = 4096
    fuel: int | None = None

    def __post_init__(self) -> None:
        if self.wall_s is not None and not self.wall_s > 0:
            raise ValueError(f"Limits.wall_s must be positive, got {self.wall_s}")
        if self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"Limits.memory_mb must be at least {MIN_MEMORY_MB} (the snapshot's size)")
        if self.stdout_bytes < 0:
            raise ValueError("Limits.stdout_bytes must be >= 0")
        if self.fuel is not None and self.fuel <= 0:
            raise ValueError("Limits.fuel must be positive")

    def wall_for(self, n_inputs: int) -> float:
        if self.wall_s is not None:
            return float(self.wall_s)
        return min(20.0, max(2.0, 1.0 * n_inputs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "memory_mb": self.memory_mb,
            "stdout_bytes": self.stdout_bytes,
            "fuel": self.fuel,
        }

    @classmethod
    def from_settings(cls, sandbox: SandboxConfig) -> Limits:
        """The `[sandbox]` section as limits; its zeros mean "this class's default"."""
        kw: dict[str, Any] = {}
        if sandbox.wall_s:
            kw["wall_s"] = sandbox.wall_s
        if sandbox.memory_mb:
            kw["memory_mb"] = sandbox.memory_mb
        if sandbox.stdout_bytes:
            kw["stdout_bytes"] = sandbox.stdout_bytes
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Limits:
        return cls(
            wall_s=d.get("wall_s"),
            memory_mb=int(d.get("memory_mb", 512)),
            stdout_bytes=int(d.get("stdout_bytes", 4096)),
            fuel=d.get("fuel"),
        )


@dataclass
class GridResult:
    """One input's outcome: an output grid, or an error kind with a short detail."""

    output: Grid | None
    error: ErrorKind | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None


@dataclass
class ExecResult:
    """One program's outcome over all its inputs, in input order."""

    results: list[GridResult]
    stdout: str = ""
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only (str/int/float/list/dict/None) so msgpack and JSON accept it."""
        return {
            "results": [
                {
                    "output": r.output,
                    "error": None if r.error is None else str(r.error),
                    "detail": r.detail,
                }
                for r in self.results
            ],
            "stdout": self.stdout,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecResult:
        return cls(
            results=[
                GridResult(
                    output=r.get("output"),
                    error=None if r.get("error") is None else ErrorKind(r["error"]),
                    detail=r.get("detail"),
                )
                for r in d["results"]
            ],
            stdout=d.get("stdout", ""),
            duration_s=float(d.get("duration_s", 0.0)),
        )

    @classmethod
    def all_failed(cls, n: int, kind: ErrorKind, detail: str | None, duration_s: float = 0.0) -> ExecResult:
        return cls([GridResult(None, kind, detail) for _ in range(n)], "", duration_s)
