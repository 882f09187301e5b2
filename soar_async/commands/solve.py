"""`soar solve`: one search pass over tasks through the whole pipeline, submission and score out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from soar_async.arc import load_tasks
from soar_async.bus.conn import BusError
from soar_async.commands._common import add_config_args, bus_from_args, config_from_args
from soar_async.logs import get_logger
from soar_async.render import ProgressLine
from soar_async.runtime.client import Progress

SOURCES = ("baseline",)


def cmd_solve(args: argparse.Namespace) -> int:
    from soar_async.logs import configure_logging
    from soar_async.solve import solve

    cfg = config_from_args(args)
    tasks = load_tasks(args.tasks or cfg.run.tasks)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run.path
    # A running `soar up` in the same run directory is used rather than a second server on its store.
    bus = bus_from_args(args, cfg, run_dir=run_dir)
    configure_logging(run_dir=run_dir, process="solve", console_level="warning")
    show = ProgressLine(sys.stderr, quiet=args.quiet)
    log = get_logger(actor="solve")

    def progress(p: Progress) -> None:
        log.info("progress", done=p.done, total=p.total, dead_lettered=p.dead_lettered, waiting_for=p.waiting_for)
        show.update(
            f"{p.done}/{p.total} programs evaluated"
            + (f", {p.dead_lettered} dead-lettered" if p.dead_lettered else "")
            + f" after {p.elapsed:.0f} s; waiting for {p.waiting_for}"
        )

    print(
        f"soar solve: {len(tasks)} task(s), program source {args.programs}, "
        f"{'NATS ' + bus.redacted() if bus else 'embedded NATS'}, run dir {run_dir}",
        file=sys.stderr,
    )
    try:
        report = anyio.run(
            lambda: solve(
                tasks,
                run_dir=run_dir,
                config=cfg,
                bus=bus,
                executors=args.executors,
                timeout=args.timeout,
                on_progress=progress,
            )
        )
    except BusError as e:
        raise ValueError(str(e)) from None
    finally:
        show.close()
    rate = report.evaluated / report.seconds if report.seconds else 0.0
    stored = f" ({report.already_stored} answered by stored results)" if report.already_stored else ""
    print(f"evaluated {report.evaluated}/{report.programs} programs in {report.seconds:.1f} s ({rate:.0f}/s){stored}")
    if report.dead_lettered:
        n = len(report.dead_lettered)
        print(f"soar solve: {n} program(s) dead-lettered, never evaluated (see soar.dlq.executor)", file=sys.stderr)
    if report.evaluated + len(report.dead_lettered) < report.programs:
        print(
            f"soar solve: {report.programs - report.evaluated - len(report.dead_lettered)} program(s) "
            f"not evaluated within --timeout "
            f"{args.timeout:g} s; their requests stay queued for the executors (the vote used what came back)",
            file=sys.stderr,
        )
    print(f"submission: {report.submission_path}")
    if report.score is not None:
        print(f"score: {report.score * 100:.2f}% of {report.tasks} tasks ({len(report.solved)} fully solved)")
    return 0 if report.evaluated == report.programs else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve",
        help="run one search pass over tasks and write a submission",
        description="Send every candidate program of a source through the executors (embedded NATS unless "
        "--nats), vote two attempts per test input, write <run dir>/submission.json and print the score.",
    )
    p.add_argument("--tasks", help="task selector (default: run.tasks from the config)")
    p.add_argument("--programs", choices=SOURCES, default="baseline", help="where candidate programs come from")
    p.add_argument("--nats", help="use this NATS system (its executors) instead of the embedded one")
    p.add_argument("--run-dir", help="default: runs/<run.name>")
    p.add_argument("--executors", type=int, help="executor concurrency for the embedded system")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for all results")
    p.add_argument("--quiet", action="store_true")
    add_config_args(p)
    p.set_defaults(func=cmd_solve)
