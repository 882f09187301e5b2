"""`soar logs`: tail the structured logs of the whole system, from any machine that reaches the bus."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from soar_async.commands._common import add_bus_args, on_running_system
from soar_async.logs import format_event
from soar_async.runtime.logtail import stream_logs


def cmd_logs(args: argparse.Namespace) -> int:
    def emit(ev: dict[str, Any]) -> None:
        print(json.dumps(ev, default=str) if args.json else format_event(ev), flush=True)

    def following() -> None:
        print("soar logs: following new events (Ctrl-C to stop)", file=sys.stderr, flush=True)

    try:
        on_running_system(
            args,
            "logs",
            lambda system: stream_logs(
                system.bus,
                follow=args.follow,
                actor=args.actor,
                task=args.task,
                level=args.level,
                last=args.lines,
                emit=emit,
                on_following=following,
            ),
        )
    except KeyboardInterrupt:
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
