"""`soar exec submit`: run program files on tasks through the executors of a running system."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from soar_async.arc import load_tasks
from soar_async.commands._common import add_bus_args, on_running_system
from soar_async.render import evaluated_line
from soar_async.runtime.client import exec_requests, submit_and_collect


def cmd_exec_submit(args: argparse.Namespace) -> int:
    tasks = load_tasks(args.task)
    codes = []
    for f in args.file:
        try:
            codes.append(Path(f).read_text())
        except OSError as e:
            raise ValueError(f"cannot read program file {f}: {e.strerror or e}") from None
    reqs = exec_requests(tasks, codes)

    def emit(ev: Any) -> None:
        if args.json:
            d = ev.to_dict()
            d.pop("t", None)
            print(json.dumps(d), flush=True)
        else:
            print(evaluated_line(ev), flush=True)

    got = on_running_system(
        args, "exec", lambda bus: submit_and_collect(bus, reqs, timeout=args.wait, on_result=emit)
    )
    for pid, reason in sorted(got.dead_lettered.items()):
        print(f"{pid}  dead-lettered: {reason}", file=sys.stderr)
    print(
        f"submitted {len(reqs)} execution request(s) for {len(tasks)} task(s)"
        + (f"; {len(got.results)} evaluated" if args.wait else "")
        + (f", {len(got.dead_lettered)} dead-lettered" if got.dead_lettered else ""),
        file=sys.stderr,
    )
    return 0 if not args.wait or len(got.results) == len(reqs) else 1


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("exec", help="execution requests (testing and demos)")
    exs = ex.add_subparsers(dest="exec_cmd", metavar="CMD")
    es = exs.add_parser("submit", help="run program files on tasks through the executors")
    add_bus_args(es)
    es.add_argument("--task", required=True, help="task selector (e.g. arc-agi-1:training#007bbfb7)")
    es.add_argument("--file", required=True, action="append", help="program file (repeatable)")
    es.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=120.0,
        default=None,
        help="wait up to this many seconds for the results and print them",
    )
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_exec_submit)
