"""`soar sandbox build` and `soar sandbox run --task ... --file ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from soar_async.arc import Grid, load_tasks


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


def cmd_build(args: argparse.Namespace) -> int:
    from soar_async.sandbox.build import ensure_built

    print(ensure_built(progress=True))
    if args.fuel:
        print(ensure_built(progress=True, fuel=True))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from soar_async.cli import CliError
    from soar_async.sandbox import Limits, execute

    tasks = load_tasks(args.task)
    if len(tasks) != 1:
        raise CliError(f"--task {args.task!r} selects {len(tasks)} tasks; give exactly one")
    task = tasks[0]
    try:
        code = args.file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{args.file}: not UTF-8 text ({e.reason})") from None
    pairs = [("train", i, p) for i, p in enumerate(task.train)] + [("test", i, p) for i, p in enumerate(task.test)]
    res = execute(code, [p.input for _, _, p in pairs], Limits(wall_s=args.wall, memory_mb=args.memory_mb))
    report: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for (split, _, pair), r in zip(pairs, res.results, strict=True):
        correct = None if pair.output is None else (r.error is None and r.output == pair.output)
        report[split].append(
            {
                "ok": r.error is None,
                "correct": correct,
                "error": None if r.error is None else str(r.error),
                "detail": r.detail,
                "output": r.output,
            }
        )
    if args.json:
        # exactly the documented keys per input: ok, correct, error, output
        out = {
            split: [{k: e[k] for k in ("ok", "correct", "error", "output")} for e in entries]
            for split, entries in report.items()
        }
        json.dump(out, sys.stdout)
        print()
        return 0
    from rich.console import Console

    from soar_async.render import side_by_side

    console = Console(highlight=False)
    print(f"task {task.id}: {len(task.train)} train + {len(task.test)} test inputs, {res.duration_s * 1e3:.1f} ms")
    expected = {"train": [p.output for p in task.train], "test": [p.output for p in task.test]}
    for split, entries in report.items():
        for i, e in enumerate(entries):
            verdict = {True: "correct", False: "wrong", None: "answer unknown"}[e["correct"]]
            if e["error"]:
                print(f"{split}[{i}]: {e['error']}: {e['detail'] or ''}  ({verdict})")
                continue
            grid: Grid = e["output"]
            print(f"{split}[{i}]: {len(grid)}x{len(grid[0])} output ({verdict})")
            want = expected[split][i]
            shown = [("output", grid)] + ([("expected", want)] if e["correct"] is False and want else [])
            for line in side_by_side(shown):
                console.print(line)
    if res.stdout:
        print("stdout (captured, truncated):")
        print(res.stdout.rstrip("\n"))
    return 0
