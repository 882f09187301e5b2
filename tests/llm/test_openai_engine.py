"""The OpenAI-compatible backend: its error paths without a server (the round trip against a
real `vllm serve` is in test_openai_vllm_serve.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from soar_async.bus.server import free_port
from soar_async.config import ModelConfig
from soar_async.llm import EngineError, Sampling, open_engine

ROOT = Path(__file__).resolve().parents[2]


def test_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"

    async def main() -> None:
        engine = await open_engine(ModelConfig(engine="openai", base_url=url, name="m"))
        try:
            with pytest.raises(EngineError, match=f"cannot reach the model server at {re.escape(url)}"):
                await engine.generate([{"role": "user", "content": "hi"}], 2, Sampling(max_tokens=8))
        finally:
            await engine.aclose()
        with pytest.raises(EngineError, match="cannot reach the model server"):
            await open_engine(ModelConfig(engine="openai", base_url=url))  # asks the server for its model

    anyio.run(main)


def test_missing_settings_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOAR_TEST_NO_SUCH_KEY", raising=False)

    async def main() -> None:
        with pytest.raises(EngineError, match=r"model\.base_url"):
            await open_engine(ModelConfig(engine="openai"))
        with pytest.raises(EngineError, match="SOAR_TEST_NO_SUCH_KEY"):
            await open_engine(ModelConfig(engine="openai", base_url="http://x/v1", api_key_env="SOAR_TEST_NO_SUCH_KEY"))

    anyio.run(main)


def test_soar_generate_against_nothing_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = subprocess.run(
        [sys.executable, "-m", "soar_async.cli", "generate", "--task", "3c9b0459", "--n", "2",
         "--set", "model.engine=openai", "--set", f"model.base_url={url}", "--set", "model.name=m"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(f"soar: error: cannot reach the model server at {url}")
    assert "Traceback" not in r.stderr
