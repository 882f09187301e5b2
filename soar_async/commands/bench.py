"""`soar bench sandbox|bus|llm|pipeline`: a benchmark against its baseline, with ratios (code in soar_async.bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_bench_sandbox(args: argparse.Namespace) -> int:
    from soar_async.bench.sandbox import bench, format_table
    from soar_async.sandbox.pool import available_cores

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workers = args.workers or available_cores()
    quiet = args.json

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    report = bench(args.n, workers, not args.no_heavy, say)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_table(report))
    return 0


def cmd_bench_bus(args: argparse.Namespace) -> int:
    import anyio

    from soar_async.bench.bus import render, run_bench
    from soar_async.logs import configure_logging

    if args.heavy >= args.programs:
        raise ValueError("--heavy must be smaller than --programs")
    configure_logging(process="bench", console=False)  # the actor's own events would clutter the table

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    res = anyio.run(run_bench, args.programs, args.rounds, args.heavy, progress)
    print(json.dumps(res, indent=2) if args.json else render(res))
    return 0


def cmd_bench_llm(args: argparse.Namespace) -> int:
    from soar_async.bench.llm import render, run_bench, stdout_to_stderr
    from soar_async.commands._common import config_from_args
    from soar_async.logs import configure_logging

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = config_from_args(args)
    configure_logging(process="bench", console=False)  # the actor's own events would clutter the table

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    with stdout_to_stderr():  # vLLM logs to stdout; stdout carries only the result
        res = run_bench(cfg, model=args.model, prompts=args.prompts, n=args.n, max_tokens=args.max_tokens,
                        tasks=args.tasks, max_prompt_tokens=args.max_prompt_tokens,
                        backends=[b.strip() for b in args.backends.split(",") if b.strip()],
                        progress=progress)  # fmt: skip
    print(json.dumps(res, indent=2) if args.json else render(res))
    return 0


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    import anyio

    from soar_async.bench.pipeline import render, run_bench
    from soar_async.logs import configure_logging

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        executors = [int(x) for x in args.executors.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--executors takes comma-separated worker counts, got {args.executors!r}") from None
    configure_logging(process="bench", console=False)  # the actors' own events would clutter the table

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    res = anyio.run(
        lambda: run_bench(
            tasks=args.tasks,
            programs_per_task=args.programs_per_task,
            executors=executors,
            n=args.completions_per_request,
            exec_batch=args.exec_batch,
            rounds=args.rounds,
            progress=progress,
        )
    )
    print(json.dumps(res, indent=2) if args.json else render(res))
    return 0


def cmd_bench_learning(args: argparse.Namespace) -> int:
    import anyio

    from soar_async import config
    from soar_async.bench.learning import (
        DEFAULT_CONFIG,
        LearningSettings,
        check_overrides,
        render,
        run_learning_bench,
    )
    from soar_async.bench.llm import stdout_to_stderr
    from soar_async.logs import configure_logging

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    check_overrides(args.overrides)
    config_file = args.config or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    cfg = config.load(config_file, overrides=args.overrides)
    settings = LearningSettings(
        tasks=args.tasks,
        samples=args.samples,
        refinements=args.refinements,
        temperature=args.temperature,
        min_p=args.min_p,
        max_tokens=args.max_tokens,
        seed_tasks=args.seed_tasks,
        seed_examples_per_task=args.seed_examples_per_task,
        generations=args.generations,
        repeats=args.repeats,
        learning_rate=args.learning_rate,
    )
    run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.run.dir) / "bench-learning"
    # The file gets every event; the console only errors (a failed training, a dead engine).
    configure_logging(run_dir=run_dir, process="bench-learning", console_level="error")

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    with stdout_to_stderr():  # vLLM logs to stdout; stdout carries only the result
        res = anyio.run(lambda: run_learning_bench(cfg, settings, run_dir, config_file=config_file, progress=progress))
    print(json.dumps(res, indent=1) if args.json else render(res))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark against its baseline and print ratios")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")

    s = bench_sub.add_parser("sandbox", help="sandbox vs native exec vs one-subprocess-per-program")
    s.add_argument("--json", action="store_true", help="print results as JSON")
    s.add_argument("--n", type=int, default=None, help="light programs to run (default: corpus)")
    s.add_argument("--workers", type=int, default=None, help="pool workers (default: cores)")
    s.add_argument("--no-heavy", action="store_true", help="skip the heavy corpus")
    s.set_defaults(func=cmd_bench_sandbox)

    b = bench_sub.add_parser(
        "bus", help="bus throughput and per-hop latency: core NATS vs JetStream, overhead vs sandbox"
    )
    b.add_argument("--json", action="store_true", help="print results as JSON")
    b.add_argument("--programs", type=int, default=50, help="programs in the task batch (default 50)")
    b.add_argument("--rounds", type=int, default=4, help="times the batch goes through each path")
    b.add_argument("--heavy", type=int, default=5, help="how many of the programs are heavy (default 5)")
    b.set_defaults(func=cmd_bench_bus)

    from soar_async.bench.llm import DEFAULT_TASKS, MAX_PROMPT_TOKENS
    from soar_async.commands._common import add_config_args

    m = bench_sub.add_parser(
        "llm", help="generation tokens/s: our LLM actor over NATS vs vllm.LLM.generate on one batch"
    )
    m.add_argument("--json", action="store_true", help="print results as JSON")
    m.add_argument("--model", metavar="DIR", default=None,
                   help="HF model folder or GGUF file (default: model.path, else SmolLM2-135M-Instruct)")  # fmt: skip
    m.add_argument("--prompts", type=int, default=16, help="ARC sampling prompts (default 16)")
    m.add_argument("--n", type=int, default=4, help="completions per prompt (default 4)")
    m.add_argument("--max-tokens", type=int, default=256, help="max new tokens per completion (default 256)")
    m.add_argument("--tasks", default=DEFAULT_TASKS, help=f"task selector for the prompts (default {DEFAULT_TASKS})")
    m.add_argument("--max-prompt-tokens", type=int, default=MAX_PROMPT_TOKENS,
                   help=f"skip tasks with longer prompts (default {MAX_PROMPT_TOKENS})")  # fmt: skip
    m.add_argument("--backends", default="vllm",
                   help="the actor path on these engines, comma-separated: vllm (always), transformers, openai "
                        "(against a vllm serve it starts on loopback); default vllm")  # fmt: skip
    add_config_args(m)
    m.set_defaults(func=cmd_bench_llm)

    from soar_async.bench.pipeline import DEFAULT_N, DEFAULT_PROGRAMS, DEFAULT_TASKS

    pl = bench_sub.add_parser(
        "pipeline", help="programs/s through proposer -> executor -> archive (LLM test double) vs the sandbox pool"
    )
    pl.add_argument("--json", action="store_true", help="print results as JSON")
    pl.add_argument("--tasks", type=int, default=DEFAULT_TASKS,
                    help=f"ARC-AGI-1 training tasks (default {DEFAULT_TASKS})")  # fmt: skip
    pl.add_argument("--programs-per-task", type=int, default=DEFAULT_PROGRAMS,
                    help=f"distinct programs sampled per task (default {DEFAULT_PROGRAMS})")  # fmt: skip
    pl.add_argument("--executors", default="1,2", help="executor (sandbox) worker counts to compare (default 1,2)")
    pl.add_argument("--completions-per-request", type=int, default=DEFAULT_N,
                    help=f"completions per sampling request (default {DEFAULT_N})")  # fmt: skip
    pl.add_argument("--exec-batch", type=int, default=None,
                    help="programs per execution message (default search.exec_batch; 1: one per program)")  # fmt: skip
    pl.add_argument("--rounds", type=int, default=1, help="measurements per side, median reported (default 1)")
    pl.set_defaults(func=cmd_bench_pipeline)

    from soar_async.bench import learning as lb

    lr = bench_sub.add_parser(
        "learning",
        help="does the loop make the model better? generations 0..G-1 of the daemon against a seed-trained control",
        description="Runs the learning loop (soar daemon) on a fixed set of measured tasks: generation 0 with the "
        "base model, then trained generations (relabelled programs through the reuse filters plus baseline seed "
        "programs of other tasks, LoRA from the base model, hot-swap, search); and a control: a LoRA trained on "
        "seed-style data of other tasks alone, with about as many training tokens as the last generation's, "
        "searched once. Prints usable share, mean train accuracy, programs right on train, tasks solved, why "
        "completions were not usable, tokens/s and training time per generation and for the control, and a "
        "verdict. The same command on the same --run-dir continues a stopped run (or only prints a finished one).",
    )
    lr.add_argument("--json", action="store_true", help="print one JSON object (generations, control, verdict)")
    lr.add_argument("--tasks", default=lb.DEFAULT_TASKS,
                    help=f"N (the N {lb.POOL} tasks with the shortest sampling prompts) or a task selector "
                    f"(default {lb.DEFAULT_TASKS})")  # fmt: skip
    lr.add_argument("--samples", type=int, default=lb.DEFAULT_SAMPLES,
                    help=f"samples per task per search (default {lb.DEFAULT_SAMPLES})")  # fmt: skip
    lr.add_argument("--refinements", type=int, default=0, help="refinements per task per search (default 0)")
    lr.add_argument("--temperature", type=float, default=lb.DEFAULT_TEMPERATURE, help="default 1.0")
    lr.add_argument("--min-p", type=float, default=lb.DEFAULT_MIN_P, help="default 0.05")
    lr.add_argument("--max-tokens", type=int, default=lb.DEFAULT_MAX_TOKENS,
                    help=f"new tokens per sample (default {lb.DEFAULT_MAX_TOKENS})")  # fmt: skip
    lr.add_argument("--seed-tasks", default=lb.DEFAULT_SEED_TASKS,
                    help="N (the next N tasks by prompt length after the measured ones) or a selector; never a "
                    f"measured task (default {lb.DEFAULT_SEED_TASKS})")  # fmt: skip
    lr.add_argument("--seed-examples-per-task", type=int, default=lb.DEFAULT_SEED_EXAMPLES,
                    help=f"baseline examples per seed task (default {lb.DEFAULT_SEED_EXAMPLES})")  # fmt: skip
    lr.add_argument("--generations", type=int, default=lb.DEFAULT_GENERATIONS,
                    help=f"searches of the loop, generation 0 included (default {lb.DEFAULT_GENERATIONS})")  # fmt: skip
    lr.add_argument("--repeats", type=int, default=1,
                    help="searches of each model in all, for the spread (default 1: no spread); may be "
                         "raised on a finished --run-dir, which then only adds the searches")  # fmt: skip
    lr.add_argument("--learning-rate", type=float, default=None, help="default: train.learning_rate of the config")
    lr.add_argument("--run-dir", help="default: <run.dir>/bench-learning")
    add_config_args(lr)
    lr.set_defaults(func=cmd_bench_learning)
