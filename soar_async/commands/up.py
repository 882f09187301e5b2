"""`soar up` (everything on this machine, embedded NATS unless --nats) and `soar worker` (join as one worker)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from soar_async.bus.conn import BusError
from soar_async.bus.topology import Topology
from soar_async.commands._common import (
    add_bus_args,
    bus_from_args,
    config_from_args,
    need_bus_from_args,
    run_dir_of,
)
from soar_async.config import Config
from soar_async.logs import configure_logging
from soar_async.runtime.discovery import parse_role
from soar_async.runtime.system import ActorSpec, EmbeddedServer, System, bring_up


def _topology(cfg: Config, args: argparse.Namespace) -> Topology:
    """The configured layout, with the command line's --replicas / --ack-wait on top."""
    topo = Topology.from_settings(cfg.bus)
    if getattr(args, "replicas", None):
        topo.replicas = args.replicas
    if getattr(args, "ack_wait", None):
        topo.ack_wait = args.ack_wait
    return topo


def _partition(text: str | None) -> tuple[int, int] | None:
    """`I/N` (partition I of N, counted from 0) for partitioned roles."""
    if not text:
        return None
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--partition {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def cmd_up(args: argparse.Namespace) -> int:
    from soar_async.runtime.roles import UP_ACTORS

    cfg = config_from_args(args)
    run_dir = run_dir_of(args, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(
        process="up",
        worker_id=f"up-{socket.gethostname()}-{os.getpid()}",
        run_dir=run_dir,
        level=args.log_level or cfg.run.log_level,
    )
    roles = [parse_role(r) for r in args.role] if args.role else list(UP_ACTORS)
    if args.concurrency:
        roles = [(r, n or args.concurrency) for r, n in roles]
    # `up` joins the system named by --nats, the environment or the config; never the URL file
    # in its own run directory (that would be its own, stale, server).
    bus = bus_from_args(args, cfg)
    host, _, port = (args.listen or "127.0.0.1:").rpartition(":")
    embedded = EmbeddedServer(
        host=host or "127.0.0.1",
        port=int(port) if port else None,
        config_file=Path(args.server_config) if args.server_config else None,
    )

    def banner(system: System) -> None:
        if not args.quiet:
            actors = ", ".join(f"{r}:{n or 'auto'}" for r, n in roles)
            print(
                f"soar up: NATS at {system.url}  run dir {run_dir}  actors {actors}  (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )

    return _serve_until_signalled(
        cfg,
        run_dir=run_dir,
        bus=bus,
        actors=[ActorSpec(r, n) for r, n in roles],
        embedded=embedded,
        owner=True,
        topology=_topology(cfg, args),
        drain_timeout=args.drain_timeout,
        name="up",
        on_ready=banner,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from soar_async.runtime.actor import make_worker_id

    cfg = config_from_args(args)
    run_dir = run_dir_of(args, cfg)
    role, n = parse_role(args.role)
    short = role.rpartition(":")[2].lower() if ":" in role else role
    spec = ActorSpec(
        role,
        concurrency=args.concurrency or n,
        worker_id=make_worker_id(short),
        partition=_partition(args.partition),
        replay_from=args.replay_from,
    )
    bc = need_bus_from_args(args, cfg, run_dir)
    configure_logging(
        process=f"worker-{short}", worker_id=spec.worker_id or "", run_dir=run_dir,
        level=args.log_level or cfg.run.log_level,
    )  # fmt: skip

    return _serve_until_signalled(
        cfg,
        run_dir=run_dir,
        bus=bc,
        actors=[spec],
        owner=False,
        topology=_topology(cfg, args),
        drain_timeout=args.drain_timeout,
        heartbeat_interval=args.heartbeat,
        name="worker",
    )


def _serve_until_signalled(cfg: Config, *, on_ready: Callable[[System], None] | None = None, **kw: Any) -> int:
    """Bring the actors up and keep them until SIGINT/SIGTERM (drain) or a second one (hand back)."""

    async def main() -> int:
        async with bring_up(cfg, handle_signals=True, **kw) as system:
            if on_ready is not None:
                on_ready(system)
            await system.wait()
        return 0

    try:
        return anyio.run(main)
    except BusError as e:
        raise ValueError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on this machine (embedded NATS unless --nats)")
    add_bus_args(p)
    p.add_argument(
        "--role", action="append", metavar="ROLE[:N]", help="actors to start (repeatable; default: the built-in list)"
    )
    p.add_argument("--concurrency", type=int, help="concurrency for each started actor")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="embedded server address (default 127.0.0.1 on a free port; 0.0.0.0:4222 to let "
        "other machines attach workers)",
    )
    p.add_argument(
        "--server-config",
        metavar="FILE",
        help="config file for the embedded server (e.g. ops/nats/auth.conf); clients then need credentials",
    )
    p.add_argument("--replicas", type=int, help="JetStream replicas for streams and buckets (cluster: 3)")
    p.add_argument("--ack-wait", type=float, help="seconds before an unacked job is redelivered")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="join a running system as one worker of a role")
    add_bus_args(w)
    w.add_argument("--role", required=True, help="executor, ... or module:Class")
    w.add_argument("--concurrency", type=int, help="jobs in flight at once (default: the role's default)")
    w.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight work may take to finish after SIGTERM before it is handed back",
    )
    w.add_argument("--heartbeat", type=float, default=3.0, help="heartbeat interval, seconds")
    w.add_argument(
        "--partition",
        metavar="I/N",
        help="own partition I of N of the tasks (partitioned roles such as the archive), e.g. 0/4",
    )
    w.add_argument(
        "--replay-from",
        type=int,
        metavar="SEQ",
        help="re-read the role's event inputs from this stream sequence (its position is reset)",
    )
    w.add_argument("--replicas", type=int, help=argparse.SUPPRESS)
    w.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    w.set_defaults(func=cmd_worker)
