"""The trainer process: `python -m soar_async.train.worker [--watch-stdin] SPEC.json`.

Runs `soar_async.train.lora.train` on the spec and writes its events to stdout as JSON lines,
one per event, ending with `train_done`, or `train_error` and exit status 1. Stdout carries
nothing else: the original stdout is kept for events and file descriptor 1 is pointed at
stderr, so whatever a library prints lands in the log (stderr), not in the event stream.

With `--watch-stdin` (what `run_training` passes), a thread reads stdin and ends the process
as soon as it closes: the parent that spawned it (and holds the pipe's other end) is gone, so
nobody waits for the adapter any more and a killed actor leaves no orphan trainer behind. It
is off under a distributed launcher (`RANK` set), whose ranks do not share the parent's stdin.

Under a distributed launcher (`torchrun --nproc_per_node N -m soar_async.train.worker SPEC.json`,
or `accelerate launch`) every rank trains and only rank 0 writes events and the adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO


def _watch_stdin() -> None:
    """Exit the whole process once stdin reaches end of file (the parent died or closed it)."""

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader
        # holds its lock and aborts the interpreter's shutdown.
        try:
            while os.read(0, 1 << 16):
                pass
        except OSError:
            pass
        os._exit(3)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _event_stream() -> TextIO:
    """A private copy of stdout for events; fd 1 (and `print`) goes to stderr from now on."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soar_async.train.worker", description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path, help="a TrainSpec as JSON")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (the parent is gone)")
    ns = parser.parse_args(argv)
    events = _event_stream()
    if ns.watch_stdin and "RANK" not in os.environ:
        _watch_stdin()

    def emit(event: dict[str, Any]) -> None:
        try:
            events.write(json.dumps(event, separators=(",", ":")) + "\n")
        except BrokenPipeError:  # the reader is gone: nobody waits for this training
            os._exit(3)

    from soar_async.train.lora import TrainSpec, train

    try:
        spec = TrainSpec.from_json(ns.spec.read_text())
        train(spec, emit)
    except Exception as e:
        traceback.print_exc()
        emit({"event": "train_error", "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
