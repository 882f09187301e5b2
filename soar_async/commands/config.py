"""`soar config show|check`: see the configuration a process would run with."""

from __future__ import annotations

import argparse

from soar_async.commands._common import add_config_args, config_from_args


def cmd_show(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_toml(), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print defaults + file + environment + --set, as TOML")
    add_config_args(show)
    show.set_defaults(func=cmd_show)
