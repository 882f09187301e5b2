"""Engine processes die with the process that started them, even when it is killed with SIGKILL.

vLLM runs the model in engine-core processes of its own. When the LLM worker exits normally
it shuts them down; when it is killed (SIGKILL, the OOM killer, a SIGTERM to `soar solve`
without a handler), they are re-parented to init and keep the model, its memory and a core
busy forever. Measured here: a `soar solve` stopped with SIGTERM left an EngineCore and its
worker using 4 GB and 80% of a core.

The reaper is a tiny process started with PR_SET_PDEATHSIG: the kernel sends it SIGTERM
when its parent dies, however that happens, and it then kills the engine processes it was
told about. A normal close tells it to exit without killing anything (it writes "close" to
the reaper's stdin; a bare end of file means the parent died).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

import psutil

from soar_async.bus.server import _die_with_parent

_REAPER = r"""
import os, signal, sys
pids = [int(p) for p in sys.argv[1:]]
def reap(*_):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)
signal.signal(signal.SIGTERM, reap)
if os.getppid() == 1:  # the parent died before the signal was armed
    reap()
print("armed", flush=True)
# The parent says "close" when it shut the engine down itself. Plain EOF means it died: the
# pipe closes as it dies, possibly before the death signal arrives.
if sys.stdin.read().strip() != "close":
    reap()
"""


def children() -> set[int]:
    """Pids of this process's descendants now."""
    return {c.pid for c in psutil.Process().children(recursive=True)}


class Reaper:
    """Kills `pids` if this process dies before `close()`; see the module doc."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = sorted(set(pids))
        self.proc: subprocess.Popen[bytes] | None = None
        if self.pids:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _REAPER, *map(str, self.pids)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
            # Until its handler is installed, a SIGTERM would just end the reaper: wait for it
            # (tens of milliseconds, once per engine start).
            assert self.proc.stdout is not None
            self.proc.stdout.readline()

    def close(self) -> None:
        """The engine was shut down properly: let the reaper go without killing anything."""
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(b"close\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
