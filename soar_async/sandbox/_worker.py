"""Sandbox pool worker process: `python -m soar_async.sandbox._worker FD [--fuel]`.

A plain interpreter started with subprocess (not multiprocessing spawn), so the parent's
`__main__` is never re-imported: pools work from scripts without a main guard, from notebooks and
from stdin. FD is this end of a socketpair, wrapped as a multiprocessing Connection.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection

from soar_async.sandbox.types import ErrorKind, ExecResult, Limits


def serve(conn: Connection, fuel: bool) -> None:
    """Load the runtime once, then execute jobs until told to stop (None) or the pipe closes."""
    from soar_async.sandbox.runtime import runtime

    rt = runtime(fuel)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        code, inputs, limits = msg
        conn.send("started")  # a death from here on is this program's doing (see pool.run)
        try:
            res = rt.execute(code, inputs, Limits.from_dict(limits)).to_dict()
        except Exception as e:  # a host-side failure: report it, keep serving
            res = ExecResult.all_failed(len(inputs), ErrorKind.CRASH, f"host error: {e!r}"[:300]).to_dict()
        conn.send(res)


if __name__ == "__main__":
    # Ctrl-C in a terminal signals the whole foreground process group. A worker must not die
    # of it mid-program (that would read as a crashed program): its owner decides when it
    # stops, by closing the pipe, and drains first on its own signal handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])), "--fuel" in sys.argv[2:])
