"""`soar logs`: tail the structured logs of the whole system, from any machine that reaches the bus."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import anyio

from soar_async.commands._common import add_bus_args, on_running_system
from soar_async.logs import format_event
from soar_async.runtime.logtail import stream_logs


def cmd_logs(args: argparse.Namespace) -> int:
    def emit(ev: dict[str, Any]) -> None:
        print(json.dumps(ev, default=str) if args.json else format_event(ev), flush=True)

    def following() -> None:
        print("soar logs: following new events (Ctrl-C to stop)", file=sys.stderr, flush=True)

    async def tail(system: Any) -> None:
        # Ctrl-C and SIGTERM cancel our own scope: the follower unwinds through its bounded
        # cleanups and exits 0. (Left to asyncio, a SIGINT cancels the main task natively, and a
        # follower in CI once kept running 30 s after it.)
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await stream_logs(
                system.bus,
                follow=args.follow,
                actor=args.actor,
                task=args.task,
                level=args.level,
                last=args.lines,
                emit=emit,
                on_following=following,
            )
            tg.cancel_scope.cancel()

    try:
        on_running_system(args, "logs", tail)
    except KeyboardInterrupt:  # before the signal receiver is in place
        return 0
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lg = sub.add_parser("logs", help="tail the structured logs of the whole system")
    add_bus_args(lg)
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--actor", help="only this actor (role)")
    lg.add_argument("--task", help="only events about this task id")
    lg.add_argument("--level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    lg.add_argument("-n", "--lines", type=int, default=50, help="how many past events to show first")
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=cmd_logs)
