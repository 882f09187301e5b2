"""`soar exec submit`: run program files on tasks through the executors of a running system."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from soar_async.arc import load_tasks
from soar_async.commands._common import add_bus_args, on_running_system
from soar_async.commands.sandbox import read_program
from soar_async.render import ProgressLine, evaluated_line
from soar_async.runtime.client import Collected, Progress, exec_requests, register_tasks, submit_and_collect
from soar_async.runtime.system import System


def cmd_exec_submit(args: argparse.Namespace) -> int:
    # The user's own mistakes (selector, files) are reported before any server is looked for.
    tasks = load_tasks(args.task)
    codes = [read_program(f) for f in args.file]
    reqs = exec_requests(tasks, codes)

    def emit(ev: Any) -> None:
        if args.json:
            d = ev.to_dict()
            d.pop("t", None)
            print(json.dumps(d), flush=True)
        else:
            print(evaluated_line(ev), flush=True)

    show = ProgressLine(sys.stderr)

    def progress(p: Progress) -> None:
        show.update(f"{p.done}/{p.total} evaluated after {p.elapsed:.0f} s; waiting for {p.waiting_for}")

    async def submit(system: System) -> Collected:
        await register_tasks(system.bus, tasks)  # the archive judges and keeps them too
        return await submit_and_collect(
            system.bus,
            reqs,
            timeout=args.wait,
            on_result=emit,
            on_progress=progress,
            outage_timeout=system.config.bus.outage_timeout_s,
        )

    try:
        got = on_running_system(args, "exec", submit)
    finally:
        show.close()
    for pid, reason in sorted(got.dead_lettered.items()):
        print(f"{pid}  dead-lettered: {reason}", file=sys.stderr)
    print(
        f"submitted {len(reqs)} execution request(s) for {len(tasks)} task(s)"
        + (f"; {len(got.results)} evaluated" if args.wait is not None else "")
        + (f", {len(got.dead_lettered)} dead-lettered" if got.dead_lettered else ""),
        file=sys.stderr,
    )
    if args.wait is None:
        return 0
    if len(got.results) + len(got.dead_lettered) < len(reqs):
        print(
            f"soar exec submit: timed out after {args.wait:g} s with {len(got.results)} of {len(reqs)} "
            "result(s); the requests stay queued for the executors",
            file=sys.stderr,
        )
    return 0 if len(got.results) == len(reqs) else 1


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
