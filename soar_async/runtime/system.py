"""Bringing a system up, one way: `soar up`, `soar worker`, `soar solve`, the benchmarks and
the test fixtures all enter `bring_up`.

`bring_up` owns, for the length of an `async with` block: the embedded `nats-server` (when
no URL is given) or a connection to the given one; the bus layout (provisioned, and brought
to the configured settings when this process owns the system); the log forwarder; and the
requested actors, each started before the block begins. Leaving the block drains the actors
(fetching stops at once, in-flight work gets `drain_timeout`), closes the connection and
stops the embedded server. Lifetimes are task groups and cancel scopes: there are no stop
flags to poll.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from soar_async.bus.conn import Bus, BusConfig, BusError
from soar_async.bus.server import NatsServer, ServerError
from soar_async.bus.topology import Topology, provision
from soar_async.config import Config
from soar_async.logs import event_to_log_message, forwarder, get_logger
from soar_async.runtime.actor import ActorRunner
from soar_async.runtime.discovery import URL_FILE, bus_config
from soar_async.runtime.inputs import Partition
from soar_async.runtime.roles import resolve_role

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """One actor to start in this process.

    Attributes:
        role: a role name (`executor`) or `module:Class`.
        concurrency: messages handled at once (None: the role's default).
        worker_id: fixed id (None: role-host-pid-random).
        partition: (index, count) for a partitioned role such as the archive.
        replay_from: re-read its event inputs from this stream sequence.
    """

    role: str
    concurrency: int | None = None
    worker_id: str | None = None
    partition: Partition | None = None
    replay_from: int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """How to start our own `nats-server` when no URL is given.

    Attributes:
        host: listen address (loopback by default; another address lets other machines attach).
        port: client port (None: a free one).
        config_file: a server config (e.g. `ops/nats/auth.conf`); its relative paths resolve
            in the run directory, and its own `jetstream { store_dir }` applies.
    """

    host: str = "127.0.0.1"
    port: int | None = None
    config_file: Path | None = None

    def server(self, run_dir: Path) -> NatsServer:
        log_file = run_dir / "logs" / "nats-server.log"
        if self.config_file is not None:
            return NatsServer(
                None, host=self.host, port=self.port, config=self.config_file.resolve(), cwd=run_dir, log_file=log_file
            )
        return NatsServer(run_dir / "nats", host=self.host, port=self.port, log_file=log_file)


class System:
    """A running system as this process sees it: the bus, the server if we own it, our actors."""

    def __init__(
        self, bus_config: BusConfig, bus: Bus, server: NatsServer | None, topology: Topology, config: Config
    ) -> None:
        self.bus_config = bus_config
        self.bus = bus
        self.server = server
        self.topology = topology
        self.config = config
        self.runners: list[ActorRunner] = []
        self._stopped = anyio.Event()
        self._finished = 0

    @property
    def url(self) -> str:
        return self.bus_config.redacted()

    def stop(self) -> None:
        """Drain every actor: no new work; in-flight work finishes or is handed back."""
        for r in self.runners:
            r.request_stop()
        if not self.runners:
            self._stopped.set()

    def abort(self) -> None:
        """Hand back in-flight work now (a second Ctrl-C)."""
        for r in self.runners:
            r.abort()
        self._stopped.set()

    async def wait(self) -> None:
        """Until every actor has stopped (after `stop()`, a signal, or a fatal error)."""
        await self._stopped.wait()


async def forward_logs(bus: Bus, period: float = 0.25) -> None:
    """Publish queued log events to `soar.log.<actor>` (core NATS; the LOGS stream keeps them)."""
    forwarder.enabled = True
    try:
        while True:
            await _flush_logs(bus)
            await anyio.sleep(period)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await _flush_logs(bus)
        forwarder.enabled = False


async def _flush_logs(bus: Bus) -> None:
    if not bus.connected:
        return
    for ev in forwarder.drain():
        try:
            m = event_to_log_message(ev)
            await bus.publish(m.subject(), m.encode())
        except Exception:
            continue


class ServerGone(BusError):
    """The embedded server died and could not be restarted in time."""


async def supervise(server: NatsServer, restart_timeout: float, log: Any) -> None:
    """Restart the embedded server whenever it dies, on the same port and JetStream store.

    Runs until cancelled (which `bring_up` does before it stops the server on purpose). The
    clients reconnect by themselves; queued work and stored events are on disk. When the
    server cannot be brought back within `restart_timeout` this raises, which ends the
    process's system with an error instead of leaving it waiting on a dead address.
    """
    while True:
        proc = server.proc
        if proc is None:
            return
        # Waiting reaps the child (no zombie); cancelling abandons the wait, not the process.
        code = await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
        log.error(
            "embedded nats-server died; restarting it on the same port and store",
            exit_code=code,
            url=server.url,
            log_file=str(server.log_file),
        )
        try:
            # start() itself retries on the fixed port until the deadline (the old socket may linger).
            await anyio.to_thread.run_sync(lambda: server.start(timeout=restart_timeout), abandon_on_cancel=True)
        except ServerError as e:
            raise ServerGone(
                f"the embedded nats-server died (exit code {code}) and could not be restarted within "
                f"{restart_timeout:g} s (bus.server_restart_timeout_s): {e}"
            ) from None
        log.info("embedded nats-server restarted", url=server.url, pid=server.proc.pid if server.proc else None)


async def _watch_signals(system: System, log: Any) -> None:
    """First SIGINT/SIGTERM drains, a second one hands back what is still running."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        seen = 0
        async for s in signals:
            seen += 1
            if seen == 1:
                log.info("signal received: draining", signal=signal.Signals(s).name)
                system.stop()
            else:
                log.warning("second signal: handing back in-flight work now")
                system.abort()


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    for e in eg.exceptions:
        return _first_error(e) if isinstance(e, BaseExceptionGroup) else e
    return eg


@contextlib.asynccontextmanager
async def bring_up(
    config: Config,
    *,
    run_dir: Path,
    bus: BusConfig | None = None,
    actors: Sequence[ActorSpec] = (),
    embedded: EmbeddedServer | None = None,
    owner: bool | None = None,
    topology: Topology | None = None,
    handle_signals: bool = False,
    drain_timeout: float = 30.0,
    heartbeat_interval: float = 3.0,
    name: str = "soar",
) -> AsyncIterator[System]:
    """Bring up (or join) a system for the length of the block; see the module docstring.

    bus: the system to join; None starts an embedded server (`embedded`, default loopback on a
        free port) with its JetStream store under `run_dir` and records its URL in
        `<run_dir>/nats.url` for other commands on this machine.
    owner: whether this process decides the bus layout's settings (streams, queue consumers
        updated to `topology`); default: when it started the server. A joining worker only
        creates what is missing.
    """
    log = get_logger(actor=name)
    run_dir.mkdir(parents=True, exist_ok=True)
    topo = topology or Topology.from_settings(config.bus)
    classes = [(resolve_role(spec.role), spec) for spec in actors]  # unknown roles fail before anything starts
    server: NatsServer | None = None
    url_file = run_dir / URL_FILE
    try:
        if bus is None:
            emb = embedded or EmbeddedServer()
            if emb.host not in LOOPBACK and emb.config_file is None:
                log.warning(
                    "embedded nats-server listens beyond loopback without authentication; "
                    "use --server-config ops/nats/auth.conf on untrusted networks",
                    listen=f"{emb.host}:{emb.port}",
                )
            server = emb.server(run_dir)
            try:
                await anyio.to_thread.run_sync(server.start)
            except ServerError as e:
                raise ValueError(str(e)) from None
            url_file.write_text(server.url + "\n")
            log.info("embedded nats-server started", url=server.url, pid=server.proc.pid if server.proc else None)
            bus = bus_config(config, url=server.url)
            assert bus is not None
        owns = (server is not None) if owner is None else owner

        def on_bus_event(kind: str, detail: str) -> None:
            if kind == "error":
                log.debug("nats client error", detail=detail)
            else:
                log.warning(f"nats {kind}", server=detail)

        client_name = f"{name}-{'+'.join(s.role for s in actors) or 'client'}"
        conn = await Bus.connect(bus, name=client_name, on_event=on_bus_event)
        try:
            # The owner brings every queue to the configured settings; others create only what is
            # missing and never change settings under a running system (queue consumers are
            # ensured by each actor's inputs).
            await provision(conn, topo, update=owns, queues=None if owns else [])
            system = System(bus, conn, server, topo, config)
            system.runners = [
                ActorRunner(
                    cls,
                    conn,
                    config=config,
                    concurrency=spec.concurrency,
                    topology=topo,
                    run_dir=run_dir,
                    worker_id=spec.worker_id,
                    partition=spec.partition,
                    replay_from=spec.replay_from,
                    drain_timeout=drain_timeout,
                    heartbeat_interval=heartbeat_interval,
                )
                for cls, spec in classes
            ]
            try:
                async with anyio.create_task_group() as services:
                    services.start_soon(forward_logs, conn)
                    if server is not None:
                        services.start_soon(supervise, server, config.bus.server_restart_timeout_s, log)
                    if handle_signals:
                        services.start_soon(_watch_signals, system, log)
                    async with anyio.create_task_group() as running:
                        for r in system.runners:
                            await running.start(_run_actor, r, system)
                        if system.runners:
                            log.info("ready", actors=[r.worker_id for r in system.runners], nats=bus.redacted())
                        try:
                            yield system
                        finally:
                            system.stop()
                    services.cancel_scope.cancel()
            except BaseExceptionGroup as eg:
                # One error for the caller (e.g. a sandbox that failed to start), not a tree of groups.
                err = _first_error(eg)
                if not isinstance(err, anyio.get_cancelled_exc_class()):
                    log.error("stopped by an error", error=repr(err))
                raise err from None
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()
    finally:
        if server is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)
            with contextlib.suppress(OSError):
                if url_file.read_text().strip() == server.url:
                    url_file.unlink()
            log.info("embedded nats-server stopped")


async def _run_actor(
    runner: ActorRunner, system: System, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """One actor's life inside the system; the last one to stop marks the system stopped."""
    try:
        await runner.run(task_status=task_status)
    finally:
        system._finished += 1
        if system._finished == len(system.runners):
            system._stopped.set()
