"""The LLM worker over a real nats-server with a real engine (transformers, the tiny test
model): requests in, completions out, a new model version taken up while running, and a
worker killed mid-request losing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from waiting import wait_for

from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.server import NatsServer
from soar_async.bus.topology import EVT_COMPLETIONS, KV_WORKERS, STREAM_EVENTS, Topology
from soar_async.config import Config, ModelConfig
from soar_async.llm.adapters import publish_adapter
from soar_async.messages import Completions, GenRequest, Heartbeat, ModelUpdated
from soar_async.runtime.system import ActorSpec, bring_up

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHAT = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def transform(grid):"}]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    yield srv
    srv.stop()


def config(tiny: Path, concurrency: int = 4) -> Config:
    return Config(model=ModelConfig(engine="transformers", path=str(tiny), max_concurrent_requests=concurrency))


def gen_requests(n: int, prefix: str, max_tokens: int = 24, version: str | None = None) -> list[GenRequest]:
    return [
        GenRequest(request_id=f"{prefix}{i:03d}", task_id="t1", messages=CHAT, n=2, max_tokens=max_tokens,
                   temperature=1.0, min_p=0.05, model_version=version)
        for i in range(n)
    ]  # fmt: skip


async def publish(bus: Bus, msgs: list) -> None:  # type: ignore[type-arg]
    for m in msgs:
        await bus.js_publish(m.subject(), m.encode(), msg_id=m.dedup_id())


async def completions(bus: Bus) -> list[Completions]:
    from nats.js.api import ConsumerConfig, DeliverPolicy

    info = await bus.js.stream_info(STREAM_EVENTS, subjects_filter=f"{EVT_COMPLETIONS}.>")
    total = sum((info.state.subjects or {}).values())
    if not total:
        return []
    sub = await bus.js.subscribe(
        f"{EVT_COMPLETIONS}.>", ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    out = [Completions.decode((await sub.next_msg(timeout=10)).data) for _ in range(total)]
    await sub.unsubscribe()
    return out


def lora_adapter(tiny: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights: enough to make a different model version."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    return out


def test_requests_in_completions_out_and_a_new_version_taken_up(
    server: NatsServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    async def main() -> None:
        async with bring_up(
            config(tiny_model_dir), run_dir=tmp_path / "run", bus=BusConfig.from_url(server.url),
            actors=[ActorSpec("llm")], owner=True, heartbeat_interval=0.5,
        ) as system:  # fmt: skip
            bus, worker = system.bus, system.runners[0]
            assert worker.concurrency == 4  # model.max_concurrent_requests
            first = gen_requests(10, "a")
            await publish(bus, first)
            await wait_for(lambda: worker.counters.ok >= 10, 180, "ten completions")
            got = {c.request_id: c for c in await completions(bus)}
            assert sorted(got) == [r.request_id for r in first]
            for c in got.values():
                assert len(c.texts) == 2 and len(c.tokens) == 2 and c.model_version == "base"
                assert all(r in ("stop", "length") for r in c.finish_reasons) and c.completion_tokens > 0
            assert worker.peak_in_flight > 1, "requests were not kept in the engine together"

            # A new version through the object store, announced to every LLM worker.
            ref = await publish_adapter(bus, "v1", lora_adapter(tiny_model_dir, tmp_path / "adapter"))
            announce = ModelUpdated(version="v1", adapter_ref=ref)
            await publish(bus, [announce])
            await wait_for(lambda: worker.actor.status()["model_version"] == "v1", 120, "version v1 taken up")
            later = gen_requests(4, "b")
            await publish(bus, later)
            await wait_for(lambda: worker.counters.ok >= 15, 180, "completions after the update")  # 14 + the update
            by_id = {c.request_id: c for c in await completions(bus)}
            assert {by_id[r.request_id].model_version for r in later} == {"v1"}

            # The heartbeat tells `soar status` which version this worker serves.
            kv = await bus.js.key_value(KV_WORKERS)

            async def beat() -> Heartbeat | None:
                hb = Heartbeat.decode((await kv.get(f"llm.{worker.worker_id}")).value or b"")
                return hb if hb.info.get("model_version") == "v1" else None

            hb = await wait_for(beat, 30, "a heartbeat naming v1")
            assert hb.info["tokens_per_s"] > 0 and "requests_in_engine" in hb.info

    anyio.run(main)


def test_worker_killed_mid_request_loses_nothing(server: NatsServer, tiny_model_dir: Path, tmp_path: Path) -> None:
    topo = Topology(ack_wait=5.0, max_deliver=5)
    reqs = gen_requests(16, "k", max_tokens=160)

    def start_worker(i: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("SOAR_NATS_URL", None)
        return subprocess.Popen(
            [sys.executable, "-m", "soar_async.cli", "worker", "--role", "llm", "--nats", server.url,
             "--run-dir", str(tmp_path / f"w{i}"), "--heartbeat", "0.5",
             "--set", "model.engine=transformers", "--set", f"model.path={tiny_model_dir}",
             "--set", "model.max_concurrent_requests=4"],
            stdout=open(tmp_path / f"w{i}.out", "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip

    async def main() -> None:
        async with bring_up(Config(), run_dir=tmp_path / "run", bus=BusConfig.from_url(server.url),
                            owner=True, topology=topo) as system:  # fmt: skip
            bus = system.bus
            await publish(bus, reqs)
            a = start_worker(0)
            try:

                async def busy() -> bool:
                    ci = await bus.js.consumer_info("SOAR_GEN", "llm")
                    return ci.num_ack_pending >= 2

                await wait_for(busy, 180, "worker A holding requests")
                a.send_signal(signal.SIGKILL)
                a.wait(10)
                b = start_worker(1)
                try:

                    async def all_done() -> bool:
                        return len({c.request_id for c in await completions(bus)}) == len(reqs)

                    await wait_for(all_done, 300, "every request answered after the kill")
                finally:
                    b.send_signal(signal.SIGTERM)
                    b.wait(60)
            finally:
                if a.poll() is None:
                    a.kill()
            got = await completions(bus)
            assert sorted(Counter(c.request_id for c in got).values()) == [1] * len(reqs)  # stored once each
            ci = await bus.js.consumer_info("SOAR_GEN", "llm")
            assert ci.delivered.consumer_seq > len(reqs), "the killed worker's requests were not redelivered"

    anyio.run(main)


def test_a_dead_engine_is_restarted_and_no_request_is_lost(server: NatsServer, tmp_path: Path) -> None:
    """The scripted test double stands in for vLLM here: it serves 3 requests, then dies as vLLM's
    engine does when its process is killed. The worker starts a new engine (which also dies
    after 3) and every request is answered."""
    script = tmp_path / "dying.json"
    script.write_text(json.dumps({"default": ["```python\ndef transform(g):\n    return g\n```"], "die_after": 3}))
    cfg = Config(model=ModelConfig(engine="double", path=str(script), max_concurrent_requests=2))

    async def main() -> None:
        async with bring_up(
            cfg, run_dir=tmp_path / "run", bus=BusConfig.from_url(server.url),
            actors=[ActorSpec("llm")], owner=True, heartbeat_interval=0.5,
        ) as system:  # fmt: skip
            bus, worker = system.bus, system.runners[0]
            reqs = gen_requests(10, "d")
            await publish(bus, reqs)
            await wait_for(lambda: worker.counters.ok >= 10, 120, "ten completions")
            got = {c.request_id: c for c in await completions(bus)}
            assert sorted(got) == [r.request_id for r in reqs]
            assert all(len(c.texts) == 2 for c in got.values())
            assert worker.counters.failed >= 3  # at least three deaths, each handed its request back
            assert worker.counters.dead_lettered == 0

    anyio.run(main)
