"""Finding the bus, and the runtime settings a command derives from the configuration.

A NATS URL comes from, in order: an explicit URL (`--nats`), the environment (SOAR_NATS_URL),
the config file's `[bus] nats_urls`, and finally the URL that a running `soar up` wrote to
`<run dir>/nats.url` - so that on one machine a second terminal needs no flags at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soar_async.bus.conn import BusConfig

URL_FILE = "nats.url"
"""Written into the run directory by `soar up` while its embedded server runs."""


def bus_config(
    cfg: Any,
    *,
    url: str | None = None,
    run_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BusConfig | None:
    """Connection settings from `url` > environment > config file > `<run dir>/nats.url`; None = none found.

    `overrides` are `BusConfig.from_url` keywords (user, password, token, creds, tls_ca, ...) that
    replace the config file's; empty values are ignored.
    """
    url = url or os.environ.get("SOAR_NATS_URL")
    b = cfg.bus if cfg is not None else None
    if not url and b is not None and b.nats_urls:
        url = ",".join(b.nats_urls)
    source = ""
    if not url and run_dir is not None and (run_dir / URL_FILE).is_file():
        url = (run_dir / URL_FILE).read_text().strip()
        source = f"{run_dir / URL_FILE}, written by `soar up`: is it still running?"
        if not _listening(url):
            # Left behind by a process that was killed (kill -9 leaves no chance to remove it):
            # nothing runs there, so the run directory has no system to join.
            (run_dir / URL_FILE).unlink(missing_ok=True)
            url, source = None, ""
    if not url:
        return None
    kw: dict[str, Any] = {}
    if b is not None:
        kw = {
            "user": b.user or None,
            "password": b.password or None,
            "token": b.token or None,
            "creds": b.creds_file or None,
            "nkey_seed": b.nkey_seed_file or None,
            "tls_ca": b.tls_ca or None,
            "tls_cert": b.tls_cert or None,
            "tls_key": b.tls_key or None,
            "connect_timeout": b.connect_timeout_s,
            "request_timeout": b.request_timeout_s,
        }
    for key, v in (overrides or {}).items():
        if v:
            kw[key] = v
    bc = BusConfig.from_url(url, **kw)
    bc.source = source
    return bc


def _listening(url: str) -> bool:
    """Whether something accepts connections at the first address of `url` (a quick local probe)."""
    import socket
    from urllib.parse import urlparse

    first = urlparse(url.split(",")[0].strip())
    if not first.hostname or not first.port:
        return True  # not ours to judge
    try:
        with socket.create_connection((first.hostname, first.port), timeout=1.0):
            return True
    except OSError:
        return False


def need_bus(
    cfg: Any, *, url: str | None = None, run_dir: Path, overrides: Mapping[str, Any] | None = None
) -> BusConfig:
    """`bus_config`, or a ValueError telling the user how to name a server."""
    bc = bus_config(cfg, url=url, run_dir=run_dir, overrides=overrides)
    if bc is None:
        raise ValueError(
            f"no NATS server given: pass --nats URL, set SOAR_NATS_URL, or start `soar up` "
            f"(which writes {run_dir / URL_FILE})"
        )
    return bc


def parse_role(spec: str) -> tuple[str, int | None]:
    """`executor`, `executor:4` (concurrency 4) or `module:Class[:N]`."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return spec, None
