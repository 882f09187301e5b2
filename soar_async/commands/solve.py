"""`soar solve`: one search pass over tasks through the whole pipeline, submission and score out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from soar_async.arc import Task, load_tasks
from soar_async.bus.conn import BusConfig, BusError
from soar_async.commands._common import add_config_args, bus_from_args, config_from_args
from soar_async.config import Config
from soar_async.logs import get_logger
from soar_async.render import ProgressLine
from soar_async.runtime.client import Progress

SOURCES = ("llm", "baseline")
T = TypeVar("T")


def cmd_solve(args: argparse.Namespace) -> int:
    from soar_async.logs import configure_logging

    cfg = config_from_args(args)
    tasks = load_tasks(args.tasks or cfg.run.tasks)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run.path
    # A running `soar up` in the same run directory is used rather than a second server on its store.
    bus = bus_from_args(args, cfg, run_dir=run_dir)
    configure_logging(run_dir=run_dir, process="solve", console_level="warning")
    if args.programs == "llm":
        return _solve_llm(args, cfg, tasks, run_dir, bus)
    from soar_async.solve import solve

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
    report = _run_pass(
        lambda: solve(
            tasks,
            run_dir=run_dir,
            config=cfg,
            bus=bus,
            executors=args.executors,
            timeout=args.timeout,
            on_progress=progress,
        ),
        show,
    )
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


def _run_pass(main: Callable[[], Awaitable[T]], show: ProgressLine) -> T:
    """Run a pass to its end; a bus that cannot be reached is a one-line error; the progress
    line is closed whatever happens."""
    try:
        return anyio.run(main)
    except BusError as e:
        raise ValueError(str(e)) from None
    finally:
        show.close()


def _solve_llm(args: argparse.Namespace, cfg: Config, tasks: list[Task], run_dir: Path, bus: BusConfig | None) -> int:
    from soar_async.search.run import SearchProgress, search

    show = ProgressLine(sys.stderr, quiet=args.quiet)
    model = cfg.model.path or "the default model"
    budget = (
        f"{args.samples if args.samples is not None else cfg.search.samples_per_task} samples + "
        f"{args.refinements if args.refinements is not None else cfg.search.refinements_per_task} refinements per task"
    )
    print(
        f"soar solve: {len(tasks)} task(s), {budget}, LLM {cfg.model.engine} ({model}), "
        f"{'NATS ' + bus.redacted() if bus else 'embedded NATS'}, run dir {run_dir}"
        + (" (resuming)" if args.resume else ""),
        file=sys.stderr,
    )

    def progress(p: SearchProgress) -> None:
        show.update(
            f"{p.done}/{p.tasks} tasks done, {p.programs} programs ({p.programs_per_s:.1f}/s), "
            f"{p.tokens_per_s:.0f} tokens/s, {p.right_on_train} with a program right on train, "
            f"{p.solved} solved, {p.elapsed:.0f} s"
        )

    report = _run_pass(
        lambda: search(
            tasks,
            run_dir=run_dir,
            config=cfg,
            bus=bus,
            samples=args.samples,
            refinements=args.refinements,
            resume=args.resume,
            executors=args.executors,
            timeout=args.timeout,
            on_progress=progress,
        ),
        show,
    )
    print(render_search_table(report, tasks))
    print(f"submission: {report.submission_path}")
    if report.unfinished:
        print(
            f"soar solve: {len(report.unfinished)} task(s) still searching after --timeout {args.timeout:g} s; "
            f"`soar solve --resume --run-dir {run_dir}` continues them",
            file=sys.stderr,
        )
        return 1
    return 0


def render_search_table(report: Any, tasks: list[Task]) -> str:
    """The per-task table `soar solve` ends with, then the totals."""
    head = f"{'task':<10} {'programs':>8} {'right':>6} {'best h':>7} {'tokens':>9} {'score':>6}"
    lines = [head, "-" * len(head)]
    for t in tasks:
        row = report.per_task.get(t.id, {})
        score = row.get("score")
        lines.append(
            f"{t.id:<10} {row.get('programs', 0):>8} {row.get('right_on_train', 0):>6} "
            f"{row.get('best_train_accuracy', 0.0):>7.2f} {row.get('tokens', 0):>9} "
            f"{'-' if score is None else f'{score:.2f}':>6}"
        )
    lines.append("-" * len(head))
    if report.already_done:
        lines.append(f"{report.tasks} tasks, {report.programs} programs, {report.tokens} tokens (all done before)")
    else:
        rate = report.programs / report.seconds if report.seconds else 0.0
        lines.append(
            f"{report.tasks} tasks, {report.programs} programs ({rate:.1f}/s), {report.tokens} tokens "
            f"in {report.seconds:.0f} s"
        )
    if report.score is not None:
        lines.append(f"score: {report.score * 100:.2f}% ({len(report.solved)} of {report.tasks} tasks solved)")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve",
        help="run one search pass over tasks and write a submission",
        description="Search every task with the LLM (sample, run, refine with REX; embedded NATS and actors "
        "unless --nats), vote two attempts per test input, write <run dir>/submission.json and print a score "
        "table. --programs baseline sends the hand-written baseline programs instead.",
    )
    p.add_argument("--tasks", help="task selector (default: run.tasks from the config)")
    p.add_argument(
        "--programs",
        choices=SOURCES,
        default="llm",
        help="where programs come from: the LLM search (model.* settings) or the hand-written baseline",
    )
    p.add_argument("--samples", type=int, help="sampled programs per task (default: search.samples_per_task)")
    p.add_argument("--refinements", type=int, help="refined programs per task (default: search.refinements_per_task)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir where it stopped")
    p.add_argument("--nats", help="use this NATS system (its executors) instead of the embedded one")
    p.add_argument("--run-dir", help="default: runs/<run.name>")
    p.add_argument("--executors", type=int, help="executor concurrency for the embedded system")
    p.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds to wait for all results")
    p.add_argument("--quiet", action="store_true")
    add_config_args(p)
    p.set_defaults(func=cmd_solve)
