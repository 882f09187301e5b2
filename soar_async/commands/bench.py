"""`soar bench sandbox|bus`: run a benchmark against its baseline and print ratios (code in soar_async.bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys


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
