"""Structured logging, configured once per process.

Every event goes to two places: a JSON-lines file per process under `<run dir>/logs/` (the
record to grep and replay) and a readable console. Every event carries `actor` and
`worker_id`, plus `task_id` / `program_id` when the code handling a message has bound them
(`structlog.contextvars`; anyio tasks inherit the binding of the task that started them, so
each handler's events carry its own ids). Events at info level and above (debug too when the
process runs at debug level) are also queued for the bus (`soar.log.<actor>`) so that
`soar logs -f` works from any machine; the queue is bounded and drops the oldest entries
rather than block a handler.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
FORWARD_MIN_LEVEL = 20

_state: dict[str, Any] = {"configured": False, "file": None, "path": None}

BULK_EVENTS = frozenset({"evaluated"})
"""Events logged once per item of work (the executor's one per evaluated program: thousands a
minute in a search). They go to the JSON file and the bus like any other event, which is where
they are read (`soar logs --task ID`, jq on the files), but the console shows them only when it
shows debug events: at info, one line per program would bury the few lines (workers joining,
warnings, errors) that `soar up` / `soar worker` users watch. Filtering by event name here,
rather than logging them at debug, keeps them in the files and on the bus at the default level.
"""


class LogForwarder:
    """Bounded queue of events waiting to be published on the bus by the actor host."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self.enabled = False
        self.min_level = FORWARD_MIN_LEVEL

    def __call__(self, _logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if self.enabled and LEVELS.get(method if method != "exception" else "error", 20) >= self.min_level:
            self.queue.append(dict(event_dict))
        return event_dict

    def drain(self, limit: int = 1000) -> list[dict[str, Any]]:
        out = []
        while self.queue and len(out) < limit:
            out.append(self.queue.popleft())
        return out


forwarder = LogForwarder()
_static: dict[str, Any] = {}


def _add_static(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for k, v in _static.items():
        event_dict.setdefault(k, v)
    return event_dict


def _jsonable(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, Path):
        return str(o)
    return repr(o)


class _Tee:
    """Final processor: JSON line to the process's file, readable text to the console."""

    def __init__(self, console: bool, json_console: bool, console_level: int = 0) -> None:
        self.console = console
        self.json_console = json_console
        self.console_level = console_level
        self.lock = threading.Lock()
        self.pretty = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        line = json.dumps(event_dict, default=_jsonable, ensure_ascii=False)
        f: TextIO | None = _state["file"]
        if f is not None:
            with self.lock:
                f.write(line + "\n")
                f.flush()
        if not self.console or LEVELS.get(method, logging.CRITICAL) < self.console_level:
            raise structlog.DropEvent
        if self.console_level > LEVELS["debug"] and event_dict.get("event") in BULK_EVENTS:
            raise structlog.DropEvent
        if self.json_console:
            return line
        return str(self.pretty(logger, method, dict(event_dict)))


def configure_logging(
    *,
    process: str,
    worker_id: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    level: str = "info",
    console: bool = True,
    json_console: bool = False,
    console_level: str | None = None,
    stream: TextIO | None = None,
) -> Path | None:
    """Set up structlog for this process; returns the JSON log file path (None without run dir).

    `console_level` shows only events at or above it on the console (the file still gets
    everything at `level`): a command with its own progress output keeps warnings visible.
    Per-item events (`BULK_EVENTS`) reach the console only when it shows debug events.

    `process` names the file (`<process>-<pid>.jsonl`); `worker_id` is stamped on every event.
    Calling again reconfigures (tests run several configurations in one interpreter).
    """
    path: Path | None = None
    old = _state.get("file")
    if old is not None:
        old.close()
        _state["file"] = None
    if run_dir is not None:
        logs = Path(run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{process}-{os.getpid()}.jsonl"
        _state["file"] = open(path, "a", encoding="utf-8")
    _state["path"] = path
    # Forward what this process logs, but never below info unless asked (--log-level debug):
    # per-program debug events at millions per generation belong in files, not on the bus.
    forwarder.min_level = LEVELS.get(level.lower(), logging.INFO)
    _static.clear()
    _static["worker_id"] = worker_id or process
    _static["pid"] = os.getpid()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_static,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            forwarder,
            _Tee(console, json_console, LEVELS.get((console_level or level).lower(), logging.INFO)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _state["configured"] = True
    return path


def get_logger(**bind: Any) -> Any:
    if not _state["configured"]:
        configure_logging(process="soar")
    return structlog.get_logger().bind(**bind) if bind else structlog.get_logger()


def bind(**kw: Any) -> None:
    """Bind ids (actor, task_id, program_id) to events logged from the current task and its children."""
    structlog.contextvars.bind_contextvars(**kw)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def parse_ts(ts: Any) -> float:
    """Seconds since the epoch from an ISO timestamp written by this module."""
    if isinstance(ts, int | float):
        return float(ts)
    try:
        return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def event_to_log_message(ev: dict[str, Any]) -> Any:
    """A forwarded event as a LogEvent message (ids lifted into fields `soar logs` filters on)."""
    from soar_async.messages import LogEvent

    ev = dict(ev)
    fields = {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        for k, v in ev.items()
        if k not in ("timestamp", "level", "event", "actor", "worker_id", "task_id", "program_id")
    }
    return LogEvent(
        ts=parse_ts(ev.get("timestamp")),
        level=str(ev.get("level", "info")),
        event=str(ev.get("event", "")),
        actor=str(ev.get("actor") or ev.get("worker_id") or ""),
        worker_id=str(ev.get("worker_id", "")),
        task_id=None if ev.get("task_id") is None else str(ev["task_id"]),
        program_id=None if ev.get("program_id") is None else str(ev["program_id"]),
        fields=fields,
    )


def format_event(ev: dict[str, Any]) -> str:
    """One readable line for `soar logs` (same shape as the console renderer, without colour)."""
    ts = ev.get("timestamp") or ev.get("ts")
    if isinstance(ts, int | float):
        ts = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
    head = f"{ts} [{ev.get('level', 'info'):<7}] {ev.get('actor') or '-'}/{ev.get('worker_id') or '-'}"
    ids = " ".join(f"{k}={ev[k]}" for k in ("task_id", "program_id") if ev.get(k))
    rest = " ".join(f"{k}={v}" for k, v in (ev.get("fields") or {}).items() if k not in ("pid",))
    return " ".join(x for x in (head, ev.get("event", ""), ids, rest) if x)
