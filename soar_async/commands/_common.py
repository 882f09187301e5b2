"""Flags shared by several commands, and turning them into library arguments."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from soar_async import config
from soar_async.bus.conn import BusConfig, BusError
from soar_async.runtime.discovery import bus_config, need_bus

if TYPE_CHECKING:
    from soar_async.runtime.system import System

T = TypeVar("T")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags every command that reads configuration accepts."""
    p.add_argument("--config", metavar="FILE", help="TOML file layered over the defaults")
    p.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
        help="override one key (repeatable), e.g. --set search.min_p=0.1",
    )  # fmt: skip


def add_bus_args(p: argparse.ArgumentParser) -> None:
    """The flags of every command that talks to a running system: where it is, config, run dir, credentials."""
    p.add_argument("--nats", metavar="URL", help="NATS server URL(s), comma-separated (default: see `soar up`)")
    add_config_args(p)
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<name> from the config)")
    p.add_argument("--user", help="NATS user (or SOAR_NATS_USER)")
    p.add_argument("--password", help="NATS password (or SOAR_NATS_PASSWORD)")
    p.add_argument("--token", help="NATS token (or SOAR_NATS_TOKEN)")
    p.add_argument("--creds", metavar="FILE", help="NATS .creds file (JWT + nkey)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the server")


def config_from_args(args: argparse.Namespace) -> config.Config:
    """The project configuration: defaults < --config file < environment < --set."""
    return config.load(getattr(args, "config", None), overrides=getattr(args, "overrides", []))


def run_dir_of(args: argparse.Namespace, cfg: Any) -> Path:
    """`--run-dir`, else the configured run directory."""
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    if cfg is not None:
        return Path(cfg.run.path)
    return Path("runs") / "default"


def credentials_of(args: argparse.Namespace) -> dict[str, Any]:
    """The connection flags given on the command line, as `BusConfig.from_url` keywords."""
    return {k: getattr(args, k, None) for k in ("user", "password", "token", "creds", "tls_ca")}


def bus_from_args(args: argparse.Namespace, cfg: Any, *, run_dir: Path | None = None) -> BusConfig | None:
    """The bus the flags, environment, config or run directory name; None when none does."""
    return bus_config(cfg, url=getattr(args, "nats", None), run_dir=run_dir, overrides=credentials_of(args))


def need_bus_from_args(args: argparse.Namespace, cfg: Any, run_dir: Path) -> BusConfig:
    """`bus_from_args`, or the one-line error telling the user how to name a server."""
    return need_bus(cfg, url=getattr(args, "nats", None), run_dir=run_dir, overrides=credentials_of(args))


def on_running_system(args: argparse.Namespace, name: str, fn: Callable[[System], Awaitable[T]]) -> T:
    """Join the system the flags name (no actors of our own), run `fn(system)`, leave.

    The one bring-up every command shares; a bus that cannot be reached is a one-line error.
    """
    from soar_async.runtime.system import bring_up  # the library's heavier half, loaded when used

    cfg = config_from_args(args)
    run_dir = run_dir_of(args, cfg)
    bc = need_bus_from_args(args, cfg, run_dir)

    async def main() -> T:
        async with bring_up(cfg, run_dir=run_dir, bus=bc, name=name) as system:
            return await fn(system)

    try:
        return anyio.run(main)
    except BusError as e:
        raise ValueError(str(e)) from None
