"""`soar model init-tiny DIR` and `soar model prepare`: model directories for the LLM engines."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_init_tiny(args: argparse.Namespace) -> int:
    from soar_async.llm.tiny import write_tiny_model

    print(write_tiny_model(Path(args.dir), seed=args.seed))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from soar_async.cli import CliError
    from soar_async.llm.engine import EngineError
    from soar_async.llm.models import resolve_model_path

    try:
        print(resolve_model_path(args.path))
    except EngineError as e:  # a missing model is an expected failure: one line, no traceback
        raise CliError(str(e)) from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="prepare model weights for the LLM engines (local files only)")
    msub = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    t = msub.add_parser("init-tiny", help="write a tiny random-weight Qwen2 chat model (seconds; for tests and demos)")
    t.add_argument("dir", metavar="DIR", help="folder to write the model into (created)")
    t.add_argument("--seed", type=int, default=0, help="weight seed (same seed, same model)")
    t.set_defaults(func=cmd_init_tiny)

    r = msub.add_parser(
        "prepare",
        help="convert the default model (SmolLM2-135M-Instruct) or a GGUF file into the cache once; prints its folder",
    )
    r.add_argument("path", nargs="?", default="", help="a GGUF file or model folder (default: the default model)")
    r.set_defaults(func=cmd_prepare)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
