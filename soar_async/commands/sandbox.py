"""`soar sandbox build` and `soar sandbox run --task ... --file ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_build(args: argparse.Namespace) -> int:
    from soar_async.sandbox.build import ensure_built

    print(ensure_built(progress=True))
    if args.fuel:
        print(ensure_built(progress=True, fuel=True))
    return 0


def read_program(path: str | Path) -> str:
    """A program file's text, or a one-line error naming the file (unreadable, not UTF-8).

    Raises ValueError, which the command line turns into `soar: error: ...` and exit 1.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read program file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read program file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def cmd_run(args: argparse.Namespace) -> int:
    from soar_async.arc import one_task
    from soar_async.sandbox import Limits
    from soar_async.sandbox.report import run_on_task, show_task_run

    task = one_task(args.task, what="--task")
    code = read_program(args.file)
    run = run_on_task(code, task, Limits(wall_s=args.wall, memory_mb=args.memory_mb))
    if args.json:
        json.dump(run.to_json(), sys.stdout)
        print()
        return 0
    from rich.console import Console

    show_task_run(run, Console(highlight=False))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sandbox", help="run untrusted programs in the WebAssembly sandbox")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")

    b = ssub.add_parser("build", help="build and cache the guest snapshot (about two minutes, once)")
    b.add_argument("--fuel", action="store_true", help="also build the fuel-metered flavour")
    b.set_defaults(func=cmd_build)

    r = ssub.add_parser("run", help="run one program on a task's train and test inputs")
    r.add_argument("--task", required=True, help="task id or selector resolving to one task")
    r.add_argument("--file", required=True, type=Path, help="Python file defining transform(grid)")
    r.add_argument("--json", action="store_true", help="print one JSON object {train, test}")
    r.add_argument("--wall", type=float, default=None, help="wall-clock limit in seconds")
    r.add_argument("--memory-mb", type=int, default=512, help="guest memory limit (MiB)")
    r.set_defaults(func=cmd_run)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
