"""Training in a child process, driven from async code.

Why a process: a training step holds the GIL and every core for seconds; in the actor's own
process it would starve the event loop that answers heartbeats and acks messages, and a crash
in a CUDA kernel would take the actor down. So `run_training` spawns
`python -m soar_async.train.worker SPEC.json` in its own process group, streams its JSON-lines
events to `on_event` as they come, and returns the `TrainResult` of its `train_done` event.

Cancelling `run_training` really cancels: in a shielded cleanup the whole process group gets
SIGTERM, then SIGKILL after `kill_grace_s`, and the child is reaped before the cancellation
propagates. A child that fails raises `TrainingFailed` with its exit status and the tail of its
stderr. A child whose parent dies exits on its own (it watches its stdin, see the worker).
Since the training resumes from its checkpoints, a cancelled or failed run started again on the
same `out_dir` loses at most `save_steps` steps.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process

from soar_async.train.lora import TrainResult, TrainSpec

EventHandler = Callable[[dict[str, Any]], Awaitable[None] | None]

REQUEST_FILE = "request.json"
"""The spec as handed to the child, in `out_dir` (kept: it says what the folder is for)."""

STDERR_TAIL_LINES = 60
MAX_EVENT_BYTES = 1 << 20


class TrainingFailed(RuntimeError):
    """The trainer process ended without a result: its exit status and the end of its stderr."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(f"{message}\n--- trainer stderr (tail) ---\n{stderr_tail}" if stderr_tail else message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def worker_command(
    spec_path: Path, *, python: str = sys.executable, launcher: Sequence[str] | None = None
) -> list[str]:
    """The trainer's command line: `python -m soar_async.train.worker --watch-stdin SPEC`, or under
    a distributed launcher for several devices, e.g. `["torchrun", "--standalone", "--nproc_per_node",
    "4"]` or `["accelerate", "launch", "--multi_gpu", "--num_processes", "4"]` (tested: torchrun with
    two CPU processes trains the same steps and losses as one process accumulating gradients)."""
    head = list(launcher) if launcher else [python]
    return [*head, "-m", "soar_async.train.worker", "--watch-stdin", str(spec_path)]


async def _lines(stream: ByteReceiveStream) -> Any:
    """Lines of a byte stream (without the newline), the last one even when unterminated."""
    buf = b""
    async for chunk in stream:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
        if len(buf) > MAX_EVENT_BYTES:
            yield buf.decode("utf-8", "replace")
            buf = b""
    if buf:
        yield buf.decode("utf-8", "replace")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _kill_group(process: Process, grace_s: float) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace_s`; reap the child. Also
    SIGKILLs whatever is left in the group (a launcher's ranks) once the child is gone."""
    pgid = process.pid  # the child leads its own session and process group
    if process.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            await process.wait()
        if process.returncode is None:
            _signal_group(pgid, signal.SIGKILL)
            await process.wait()
    _signal_group(pgid, signal.SIGKILL)


async def run_training(
    spec: TrainSpec,
    on_event: EventHandler | None = None,
    *,
    python: str = sys.executable,
    launcher: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    kill_grace_s: float = 5.0,
) -> TrainResult:
    """Train `spec` in a child process; returns its result, calling `on_event` (sync or async)
    for every event, first `{"event": "train_process", "pid": ...}` from this side.

    `env` replaces the child's environment (default: this process's). Raises TrainingFailed when
    the child exits without a `train_done` event or with a non-zero status; cancellation kills
    the child's process group before it propagates.
    """
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    request = out / REQUEST_FILE
    tmp = request.with_name(request.name + ".tmp")
    tmp.write_text(spec.to_json() + "\n")
    tmp.replace(request)
    command = worker_command(request, python=python, launcher=launcher)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"

    async def deliver(event: dict[str, Any]) -> None:
        if on_event is not None:
            res = on_event(event)
            if inspect.isawaitable(res):
                await res

    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    result: TrainResult | None = None
    error: str | None = None
    process = await anyio.open_process(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
        start_new_session=True,
    )
    try:
        await deliver({"event": "train_process", "pid": process.pid, "command": command})

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for line in _lines(process.stderr):
                stderr_tail.append(line)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stderr)
            assert process.stdout is not None
            async for line in _lines(process.stdout):
                try:
                    event = json.loads(line)
                except ValueError:
                    stderr_tail.append(f"[stdout] {line}")
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("event") == "train_done":
                    result = TrainResult.from_dict(event)
                elif event.get("event") == "train_error":
                    error = str(event.get("error"))
                await deliver(event)
            await process.wait()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _kill_group(process, kill_grace_s)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()  # closes stdin too: a child still alive would exit on its own
    rc = process.returncode
    tail = "\n".join(stderr_tail)
    if rc != 0:
        why = f"exit status {rc}" if rc is not None and rc >= 0 else f"killed by signal {-(rc or 0)}"
        message = f"training in {out} failed ({why})" + (f": {error}" if error else "")
        raise TrainingFailed(message, returncode=rc, stderr_tail=tail)
    if result is None:
        raise TrainingFailed(f"training in {out} ended without a result", returncode=rc, stderr_tail=tail)
    return result
