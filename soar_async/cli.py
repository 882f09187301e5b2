"""The `soar` command line: one argparse tree, each command group registered by its own module.

Every command handler takes the parsed namespace and returns an exit code. Expected failures
(bad selector, malformed file, unreachable server) raise `CliError` or one of the library's
`ValueError` subclasses and become a one-line message with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from soar_async import __version__

COMMAND_MODULES = [
    "soar_async.commands.tasks",
    "soar_async.commands.config",
    "soar_async.commands.solve",
    "soar_async.commands.bench",
    "soar_async.commands.up",
    "soar_async.commands.status",
    "soar_async.commands.logs",
    "soar_async.commands.exec",
    "soar_async.commands.sandbox",
    "soar_async.commands.model",
    "soar_async.commands.generate",
    "soar_async.commands.results",
    "soar_async.commands.report",
    "soar_async.commands.archive",
    "soar_async.commands.daemon",
]
"""Modules exposing `register(subparsers)`; each adds its commands and sets `func` on them. A command
module parses, calls library code and prints; the library never imports `soar_async.commands`."""


class CliError(Exception):
    """An expected failure shown to the user as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soar",
        description="SOAR on ARC-AGI as a message-driven actor system: sample, run, refine, learn.",
    )
    parser.add_argument("--version", action="version", version=f"soar-async {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # vLLM logs every engine detail into our console, and warns about CPU-build facts (no
    # Triton, eager mode) on every start; its errors still show (VLLM_LOGGING_LEVEL=INFO
    # brings the rest back).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, ValueError, OSError) as e:
        print(f"soar: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Through the package's own module, so `python -m soar_async.cli` catches the same
    # CliError class the command modules raise (not a second copy living in __main__).
    from soar_async.cli import main as package_main

    sys.exit(package_main())
