"""Helpers for the bus tests (servers, workers, reading streams); fixtures are in conftest.py.

A separate module with a unique name, so that `from bushelpers import ...` cannot pick up
another directory's conftest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

os.environ.setdefault("OMP_NUM_THREADS", "1")

from waiting import wait_for  # noqa: F401  # re-exported: the bus tests import it from here

from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.server import free_port
from soar_async.bus.topology import Topology, provision

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
HERE = Path(__file__).resolve().parent

TEST_TOPOLOGY = dict(ack_wait=4.0, max_deliver=4, duplicate_window=600.0, worker_ttl=6.0)
"""Short ack wait so a killed worker's jobs come back within seconds."""


def topology(**kw: Any) -> Topology:
    return Topology(**{**TEST_TOPOLOGY, **kw})


async def connect(url: str, **kw: Any) -> Bus:
    return await Bus.connect(BusConfig.from_url(url, **kw))


async def provisioned(url: str, topo: Topology | None = None, **kw: Any) -> Bus:
    bus = await connect(url, **kw)
    await provision(bus, topo or topology(), update=True)
    return bus


class Workers:
    """Start `soar worker` processes and make sure none outlives the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, url: str, role: str = "executor", concurrency: int = 1, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        e = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        }
        e.pop("SOAR_NATS_URL", None)
        n = len(self.procs)
        log = open(self.tmp / f"worker-{n}.out", "wb")
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "soar_async.cli",
                "worker",
                "--role",
                role,
                "--nats",
                url,
                "--concurrency",
                str(concurrency),
                "--run-dir",
                str(self.tmp / "run"),
                "--heartbeat",
                "0.5",
                "--drain-timeout",
                "30",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=e,
            cwd=ROOT,
        )
        self.procs.append(p)
        return p

    def output(self, p: subprocess.Popen[bytes]) -> str:
        i = self.procs.index(p)
        return (self.tmp / f"worker-{i}.out").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def cluster_ports(n: int = 3) -> list[tuple[int, int]]:
    return [(free_port(), free_port()) for _ in range(n)]


async def read_subject(bus: Bus, subject: str, stream: str) -> list[Any]:
    """Every message stored on `subject` in `stream`, in order (an ordered consumer from the start)."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    with anyio.fail_after(30):
        await bus.wait_connected()  # while the server is away, requests fail at once (nothing is buffered)
        info = await bus.js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    out: list[Any] = []
    if total == 0:
        return out
    sub = await bus.js.subscribe(
        subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    try:
        while len(out) < total:
            try:
                out.append(await sub.next_msg(timeout=5))
            except nats.errors.TimeoutError:
                break
    finally:
        await sub.unsubscribe()
    return out


async def evaluated(bus: Bus) -> list[Any]:
    """Every stored `Evaluated`, those of `EvaluatedBatch`es unpacked in order."""
    from soar_async.bus.topology import EVALUATED_ALL, STREAM_EVENTS
    from soar_async.messages import Evaluated, EvaluatedBatch, decode

    out: list[Any] = []
    for m in await read_subject(bus, EVALUATED_ALL, STREAM_EVENTS):
        ev = decode(m.data)
        assert isinstance(ev, Evaluated | EvaluatedBatch), type(ev)
        out.extend(ev.items() if isinstance(ev, EvaluatedBatch) else [ev])
    return out


async def dead_letters(bus: Bus, role: str = "executor") -> list[Any]:
    from soar_async.bus.topology import STREAM_DLQ, dead_letter_subject

    return await read_subject(bus, dead_letter_subject(role), STREAM_DLQ)


async def submit(bus: Bus, reqs: list[Any]) -> None:
    for r in reqs:
        await bus.js_publish(r.subject(), r.encode(), msg_id=r.dedup_id())


def requests(n: int, code: str = "ok", task_id: str = "t1", prefix: str = "p") -> list[Any]:
    from soar_async.messages import ExecRequest

    return [
        ExecRequest(
            program_id=f"{prefix}{i:04d}", task_id=task_id, code=code, inputs=[[[i % 10]]], train_outputs=[[[i % 10]]]
        )
        for i in range(n)
    ]


async def run_actor(url: str, actor_cls: type, body: Callable[..., Any], concurrency: int = 2, **kw: Any) -> Any:
    """Bring one actor up on the server at `url` (the same `bring_up` as `soar up`, with the
    test topology) while `body(bus, runner)` drives it; returns the runner once it has drained."""
    import tempfile

    from soar_async.config import Config
    from soar_async.runtime.system import ActorSpec, bring_up

    role = f"{actor_cls.__module__}:{actor_cls.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="soar-test-run-") as run_dir:
        async with bring_up(
            Config(),
            run_dir=Path(run_dir),
            bus=BusConfig.from_url(url),
            actors=[ActorSpec(role, concurrency)],
            owner=True,
            topology=topology(),
            heartbeat_interval=0.5,
            **kw,
        ) as system:
            await body(system.bus, system.runners[0])
    return system.runners[0]


def soar_env(**extra: str) -> dict[str, str]:
    """The environment of a `soar` subprocess in a test: one thread for torch, no stray bus URL."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("SOAR_NATS_URL", None)
    return env


def start_soar_up(run: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`soar up` in the background (one executor slot, 5 s ack wait), returned once it is ready.

    Its output goes to `<run>/../up.out`.
    """
    out = open(run.parent / "up.out", "wb")
    p = subprocess.Popen(
        [sys.executable, "-m", "soar_async.cli", "up", "--run-dir", str(run), "--concurrency", "1",
         "--ack-wait", "5", *extra],
        stdout=out, stderr=subprocess.STDOUT, env=env or soar_env(), cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run / "nats.url").is_file() or "ready" not in (run.parent / "up.out").read_text():
        assert p.poll() is None, (run.parent / "up.out").read_text()
        assert time.monotonic() < deadline, "soar up did not become ready"
        time.sleep(0.2)
    return p


def nats_children(p: subprocess.Popen[bytes]) -> list[Any]:
    """The nats-server processes started by `p` (psutil.Process objects)."""
    import psutil

    return [c for c in psutil.Process(p.pid).children(recursive=True) if "nats-server" in c.name()]
