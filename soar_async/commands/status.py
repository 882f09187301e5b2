"""`soar status`: live workers, queue depths, throughput, tasks."""

from __future__ import annotations

import argparse
import json

from soar_async.commands._common import add_bus_args, on_running_system
from soar_async.runtime.status import gather_status, render_status


def cmd_status(args: argparse.Namespace) -> int:
    st = on_running_system(args, "status", lambda system: gather_status(system.bus))
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        print(render_status(st), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="live workers, queue depths, throughput, tasks")
    add_bus_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
