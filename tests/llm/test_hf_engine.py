"""HFEngine, the transformers backend: batching, cancellation, sampling settings, adapter versions.

Mostly on the tiny random model (its text is noise, so tests check counts, versions and
determinism, and an adapter trained to answer "XYZZY" for text); one test on the default model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from soar_async.config import ModelConfig
from soar_async.llm.engine import BASE_VERSION, ChatMessage, EngineError, Generation, Sampling
from soar_async.llm.hf_engine import HFEngine
from soar_async.llm.models import resolve_model_path
from tests.llm.conftest import ADAPTER_ANSWER, ADAPTER_PROMPT

CHAT: list[ChatMessage] = [{"role": "user", "content": "Write a function transform(grid)."}]


def run_with_engine(model_dir: Path, body: Callable[[HFEngine], Awaitable[None]], **kw: object) -> None:
    """Start an engine on `model_dir` in a fresh event loop, run `body`, close it."""

    async def main() -> None:
        engine = await HFEngine.start(ModelConfig(engine="transformers", path=str(model_dir)), **kw)  # type: ignore[arg-type]
        try:
            await body(engine)
        finally:
            await engine.aclose()

    anyio.run(main)


def test_n_completions(tiny_model_dir: Path) -> None:
    async def body(engine: HFEngine) -> None:
        assert engine.version == BASE_VERSION and engine.device == "cpu"
        g = await engine.generate(CHAT, 3, Sampling(max_tokens=12))
        assert len(g.completions) == 3 and g.version == BASE_VERSION and g.prompt_tokens > 10
        for c in g.completions:
            assert 1 <= c.tokens <= 12
            assert c.finish_reason == ("length" if c.tokens == 12 else "stop")
        assert g.completion_tokens == sum(c.tokens for c in g.completions)
        assert g.seconds > 0 and g.extra["batch_sequences"] == 3

    run_with_engine(tiny_model_dir, body)


def test_concurrent_requests_share_batches(tiny_model_dir: Path) -> None:
    async def body(engine: HFEngine) -> None:
        results: dict[int, Generation] = {}

        async def one(i: int) -> None:
            results[i] = await engine.generate(CHAT, 2, Sampling(max_tokens=10, min_p=0.05))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
        assert sorted(results) == list(range(6))
        assert all(len(g.completions) == 2 for g in results.values())
        assert engine.batches == 1  # started in one tick, same settings: one generate call
        assert results[0].extra["batch_requests"] == 6

        # Different settings never share a call; a small cap splits a batch.
        engine.max_batch_sequences = 4
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
            tg.start_soon(engine.generate, CHAT, 1, Sampling(temperature=0, max_tokens=5))
        assert engine.batches == 1 + 3

    run_with_engine(tiny_model_dir, body)


def test_cancelled_requests_do_not_block_others(tiny_model_dir: Path) -> None:
    long = Sampling(temperature=0, max_tokens=300)  # runs to the end on the tiny model (seed 0)

    async def body(engine: HFEngine) -> None:
        done: list[Generation | None] = []

        async def keep(sampling: Sampling) -> None:
            done.append(await engine.generate(CHAT, 1, sampling))

        async def doomed(scope: anyio.CancelScope, sampling: Sampling) -> None:
            with scope:
                await engine.generate(CHAT, 1, sampling)
                done.append(None)  # never: cancelled callers get no result

        # The runner of a batch, and a request queued behind it, are both cancelled.
        running, queued = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed, running, long)  # runs alone: nothing else is queued yet
            await anyio.sleep(0.01)
            tg.start_soon(doomed, queued, long)  # queued behind it
            tg.start_soon(keep, Sampling(max_tokens=20))  # other settings: the batch after
            await anyio.sleep(0.01)
            queued.cancel()
            running.cancel()
        assert queued.cancelled_caught and running.cancelled_caught
        assert len(done) == 1 and done[0] is not None and not engine._queue
        assert engine.batches == 2  # the queued one was removed, never run

        # A member of the running batch (not its runner) is cancelled: it returns at once and
        # the batch goes on for the others.
        member = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep, long)  # the runner
            tg.start_soon(doomed, member, long)  # same tick, same settings: same batch
            await anyio.sleep(0.01)
            assert engine._running
            member.cancel()
            await anyio.sleep(0)
            assert engine._running  # still running when the cancelled member has returned
        assert member.cancelled_caught and len(done) == 2 and done[1] is not None
        assert done[1].extra["batch_requests"] == 2

    run_with_engine(tiny_model_dir, body)


def test_greedy_is_deterministic_and_sampling_varies(tiny_model_dir: Path) -> None:
    async def body(engine: HFEngine) -> None:
        greedy = Sampling(temperature=0, max_tokens=24)
        a = await engine.generate(CHAT, 2, greedy)
        b = await engine.generate(CHAT, 1, greedy)
        assert a.completions[0] == a.completions[1] == b.completions[0]
        sampled = await engine.generate(CHAT, 4, Sampling(temperature=1.0, min_p=0.05, max_tokens=24))
        assert len({c.text for c in sampled.completions}) > 1
        seeded = [await engine.generate(CHAT, 2, Sampling(max_tokens=16, seed=7)) for _ in range(2)]
        assert seeded[0].completions == seeded[1].completions
        # min_p = 1 keeps only the most likely token: sampling becomes greedy.
        only_top = await engine.generate(CHAT, 3, Sampling(temperature=1.0, min_p=1.0, max_tokens=24))
        assert all(c == a.completions[0] for c in only_top.completions)

    run_with_engine(tiny_model_dir, body)


def test_stop_strings_cut_the_text(tiny_model_dir: Path) -> None:
    async def body(engine: HFEngine) -> None:
        full = (await engine.generate(CHAT, 1, Sampling(temperature=0, max_tokens=40))).completions[0]
        assert len(full.text) > 12
        stop = full.text[8:12]
        cut = (await engine.generate(CHAT, 1, Sampling(temperature=0, max_tokens=40, stop=(stop,)))).completions[0]
        assert cut.finish_reason == "stop"
        assert cut.text == full.text[: full.text.index(stop)]
        assert cut.tokens < full.tokens

    run_with_engine(tiny_model_dir, body)


def test_errors_name_the_problem(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="never downloaded"):
        resolve_model_path(str(tmp_path / "Qwen" / "Qwen2-7B"))
    with pytest.raises(EngineError, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))
    (tmp_path / "x.gguf").write_text("not gguf")
    with pytest.raises(EngineError, match="not a GGUF file"):
        resolve_model_path(str(tmp_path / "x.gguf"))
    assert resolve_model_path(str(tiny_model_dir)) == tiny_model_dir

    async def body(engine: HFEngine) -> None:
        with pytest.raises(EngineError, match="unknown model version 'v9'"):
            await engine.generate(CHAT, 1, Sampling(max_tokens=2), version="v9")
        with pytest.raises(EngineError, match="no PEFT adapter"):
            await engine.update("v1", tmp_path)
        with pytest.raises(ValueError, match="does not fit"):
            await engine.generate([{"role": "user", "content": "0 " * 80}], 1, Sampling(max_tokens=2))
        g = await engine.generate(CHAT, 1, Sampling(max_tokens=100))  # capped by the model length
        assert g.prompt_tokens + g.completions[0].tokens <= 64

    async def main() -> None:
        cfg = ModelConfig(engine="transformers", path=str(tiny_model_dir), max_model_len=64)
        engine = await HFEngine.start(cfg)
        await body(engine)
        await engine.aclose()
        with pytest.raises(EngineError, match="closed"):
            await engine.generate(CHAT, 1, Sampling(max_tokens=2))

    anyio.run(main)


def test_conversion_runs_once_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads resolving one GGUF file: one converts, the other waits and reuses its folder."""
    import threading
    import time

    from soar_async.llm import models

    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> Path:
        calls.append(out)
        time.sleep(0.2)
        (out / "config.json").write_text("{}")
        (out / models.CONVERTED_MARKER).write_text("{}")
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    got: list[Path] = []
    threads = [
        threading.Thread(target=lambda: got.append(resolve_model_path(str(gguf), cache_dir=tmp_path / "cache")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got[0] == got[1] and (got[0] / "config.json").is_file()
    assert got[0].parent == tmp_path / "cache" / "models" and got[0].name.startswith("m-")
    assert [p.name for p in got[0].parent.iterdir() if p.is_dir()] == [got[0].name]  # no temp folder left
    gguf.write_bytes(b"GGUF" + bytes(101))  # another file: another key, converted again
    assert resolve_model_path(str(gguf), cache_dir=tmp_path / "cache") != got[0] and len(calls) == 2


@pytest.mark.slow
def test_update_switches_version_for_new_requests_only(tiny_model_dir: Path, tiny_adapter_dir: Path) -> None:
    greedy = Sampling(temperature=0, max_tokens=16)

    async def body(engine: HFEngine) -> None:
        before: list[Generation] = []

        async def early() -> None:
            before.append(await engine.generate(ADAPTER_PROMPT, 1, Sampling(temperature=0, max_tokens=300)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(early)
            await anyio.sleep(0.01)  # running (or queued) on the base model
            await engine.update("v1", tiny_adapter_dir)
            assert engine.version == "v1"
        assert before[0].version == BASE_VERSION
        assert ADAPTER_ANSWER not in before[0].completions[0].text

        after = await engine.generate(ADAPTER_PROMPT, 2, greedy)
        assert after.version == "v1"
        assert all(c.text == ADAPTER_ANSWER and c.finish_reason == "stop" for c in after.completions)

        base = await engine.generate(ADAPTER_PROMPT, 1, greedy, version=BASE_VERSION)
        assert base.version == BASE_VERSION and ADAPTER_ANSWER not in base.completions[0].text
        assert base.completions[0].text == before[0].completions[0].text[: len(base.completions[0].text)]

        await engine.update("v2", tiny_adapter_dir)  # a second adapter loads beside the first
        assert engine.versions == (BASE_VERSION, "v1", "v2")
        again = await engine.generate(ADAPTER_PROMPT, 1, greedy, version="v1")
        assert again.version == "v1" and again.completions[0].text == ADAPTER_ANSWER

    run_with_engine(tiny_model_dir, body)


@pytest.mark.slow
def test_default_model_answers(default_model: Path) -> None:
    async def body(engine: HFEngine) -> None:
        g = await engine.generate(
            [{"role": "user", "content": "What is the capital of France?"}], 1, Sampling(temperature=0, max_tokens=16)
        )
        text = g.completions[0].text
        assert g.version == BASE_VERSION and 1 <= g.completions[0].tokens <= 16
        assert text.strip() and "<|im" not in text

    run_with_engine(default_model, body)
