"""`soar bench ...`: benchmarks that compare against a baseline in the same run and print ratios."""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES = ["soar_async.bench.sandbox", "soar_async.bench.bus"]
"""Each exposes `register(subparsers)` adding one `soar bench NAME` command."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark against its baseline and print ratios")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bench_sub)
