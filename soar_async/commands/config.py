"""`soar config show|check`: see the configuration a process would run with."""

from __future__ import annotations

import argparse

from soar_async import config


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags every command that reads configuration accepts."""
    p.add_argument("--config", metavar="FILE", help="TOML file layered over the defaults")
    p.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
        help="override one key (repeatable), e.g. --set search.min_p=0.1",
    )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None), overrides=getattr(args, "overrides", []))


def cmd_show(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_toml(), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print defaults + file + environment + --set, as TOML")
    add_config_args(show)
    show.set_defaults(func=cmd_show)
