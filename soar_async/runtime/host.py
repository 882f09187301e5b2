"""One process hosting one or more actors: connect, provision, run, drain on signals, close.

`soar up` and `soar worker` both end here. The first SIGINT/SIGTERM drains every actor (no
new work, in-flight work finishes or is handed back); a second one cancels what is left
(handlers nak their messages on the way out, so nothing is lost either way).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.topology import Topology, provision
from soar_async.logs import event_to_log_message, forwarder, get_logger
from soar_async.runtime.actor import ActorRunner
from soar_async.runtime.roles import resolve_role


@dataclass(slots=True)
class ActorSpec:
    role: str
    concurrency: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    worker_id: str | None = None


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


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        return e
    return eg


async def serve(
    cfg: BusConfig,
    specs: Sequence[ActorSpec],
    *,
    run_dir: Path | None = None,
    topology: Topology | None = None,
    update_topology: bool = False,
    drain_timeout: float = 30.0,
    heartbeat_interval: float = 3.0,
    handle_signals: bool = True,
    stop: anyio.Event | None = None,
    on_ready: Callable[[list[ActorRunner]], None] | None = None,
) -> int:
    """Run the actors until a signal (or `stop`) and a clean drain; returns an exit code."""
    log = get_logger(actor="host")
    topo = topology or Topology()

    try:
        return await _serve(
            cfg,
            specs,
            run_dir=run_dir,
            topo=topo,
            update_topology=update_topology,
            drain_timeout=drain_timeout,
            heartbeat_interval=heartbeat_interval,
            handle_signals=handle_signals,
            stop=stop,
            on_ready=on_ready,
            log=log,
        )
    except BaseExceptionGroup as eg:
        # One line for the CLI (e.g. a sandbox that failed to start), not a tree of task groups.
        err = _first_error(eg)
        log.error("stopped by an error", error=repr(err))
        raise err from None


async def _serve(
    cfg: BusConfig,
    specs: Sequence[ActorSpec],
    *,
    run_dir: Path | None,
    topo: Topology,
    update_topology: bool,
    drain_timeout: float,
    heartbeat_interval: float,
    handle_signals: bool,
    stop: anyio.Event | None,
    on_ready: Callable[[list[ActorRunner]], None] | None,
    log: Any,
) -> int:
    def on_bus_event(kind: str, detail: str) -> None:
        if kind == "error":
            log.debug("nats client error", detail=detail)
        else:
            log.warning(f"nats {kind}", server=detail)

    classes = [(resolve_role(s.role), s) for s in specs]
    bus = await Bus.connect(cfg, name=f"soar-{'+'.join(s.role for s in specs)}", on_event=on_bus_event)
    try:
        # `soar up` owns the layout: every queue, current settings. A joining worker only makes
        # sure its own queue exists and never changes settings under a running system.
        queues = None if update_topology else sorted({c.queue for c, _ in classes})
        await provision(bus, topo, update=update_topology, queues=queues)
        runners = [
            ActorRunner(
                cls,
                bus,
                concurrency=spec.concurrency,
                topology=topo,
                run_dir=run_dir,
                drain_timeout=drain_timeout,
                heartbeat_interval=heartbeat_interval,
                options=spec.options,
                worker_id=spec.worker_id,
            )
            for cls, spec in classes
        ]
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_logs, bus)
            signals_seen = 0

            def stop_all() -> None:
                for r in runners:
                    r.request_stop()

            if handle_signals:

                async def watch_signals() -> None:
                    nonlocal signals_seen
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                        async for s in sigs:
                            signals_seen += 1
                            if signals_seen == 1:
                                log.info("signal received: draining", signal=signal.Signals(s).name)
                                stop_all()
                            else:
                                log.warning("second signal: handing back in-flight work now")
                                runners_scope.cancel()

                tg.start_soon(watch_signals)
            if stop is not None:

                async def watch_stop() -> None:
                    assert stop is not None
                    await stop.wait()
                    stop_all()

                tg.start_soon(watch_stop)

            async with anyio.create_task_group() as actors:
                runners_scope = actors.cancel_scope
                for r in runners:
                    await actors.start(r.run)
                log.info("ready", actors=[r.worker_id for r in runners], nats=cfg.redacted())
                if on_ready is not None:
                    on_ready(runners)
            tg.cancel_scope.cancel()
        return 0
    finally:
        with anyio.CancelScope(shield=True):
            await bus.close()
