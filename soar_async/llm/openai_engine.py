"""A remote OpenAI-compatible server (`vllm serve`, SGLang) as an engine.

`/v1/chat/completions` with `n`; `min_p` travels as an extra body field, which vLLM and
SGLang read. The server batches; we keep at most `model.max_concurrent_requests` requests open
against it, retry 429 and 5xx answers with backoff, and turn an unreachable server into one
error line. Cancelling a caller closes its HTTP request, and the server aborts the generation.

Token counts: the API reports completion tokens per request, not per choice, so we also ask
for each choice's token ids (`return_token_ids`, a vLLM extra field that other servers ignore)
and count them; a server that sends none gets the request's total shared out over its choices.
Greedy requests (temperature 0) ask for one completion and repeat it n times: vLLM refuses
n > 1 when greedy, and the n completions would be the same anyway.

Model versions: `update` asks the server to load the adapter as a LoRA module under the
version's name (vLLM's `/v1/load_lora_adapter`, enabled on the server with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; the adapter path must be readable by the server);
requests then name that version as their model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from soar_async.config import ModelConfig
from soar_async.llm.engine import BASE_VERSION, ChatMessage, Completion, EngineError, Generation, Sampling
from soar_async.retry import retry

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
REFUSED_STATUS = {400, 413, 422}
"""The request itself is at fault (a prompt longer than the model's context, a setting out of
range): a ValueError, as the other engines raise, which the LLM actor answers with an error
instead of retrying. Other answers (404 for an unknown model name, 401...) are EngineErrors."""


class _Retryable(Exception):
    """A 429/5xx answer or a dropped connection: worth asking again after a pause."""


class OpenAIEngine:
    """Chat completions from a server; see the module docstring."""

    def __init__(self, cfg: ModelConfig, client: httpx.AsyncClient, served: str) -> None:
        self.cfg = cfg
        self.client = client
        self.served = served
        self._version = BASE_VERSION
        self._models = {BASE_VERSION: served}
        self._slots = anyio.Semaphore(cfg.max_concurrent_requests)

    @classmethod
    async def start(cls, cfg: ModelConfig) -> OpenAIEngine:
        if not cfg.base_url:
            raise EngineError(
                "model.engine = openai needs model.base_url, e.g. --set model.base_url=http://host:8000/v1"
            )
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise EngineError(f"model.api_key_env names {cfg.api_key_env}, which is not set in the environment")
            headers["Authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=cfg.max_concurrent_requests + 4),
        )
        try:
            served = cfg.name or await cls._first_model(client, cfg.base_url)
        except BaseException:
            await client.aclose()
            raise
        return cls(cfg, client, served)

    @staticmethod
    async def _first_model(client: httpx.AsyncClient, url: str) -> str:
        """The served model when `model.name` is not set: the first one the server lists."""
        try:
            r = await client.get("/models")
        except httpx.TransportError as e:
            raise EngineError(f"cannot reach the model server at {url}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise EngineError(f"model server at {url} answered {r.status_code} to GET /models: {r.text[:200]}")
        data = r.json().get("data") or []
        if not data:
            raise EngineError(f"model server at {url} serves no model")
        return str(data[0]["id"])

    @property
    def version(self) -> str:
        return self._version

    async def generate(
        self, messages: Sequence[ChatMessage], n: int, sampling: Sampling, *, version: str | None = None
    ) -> Generation:
        use = version or self._version
        if use not in self._models:
            raise EngineError(f"model version {use!r} is not loaded on the server")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        greedy = sampling.temperature == 0
        body: dict[str, Any] = {
            "model": self._models[use],
            "messages": list(messages),
            "n": 1 if greedy else n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "min_p": sampling.min_p,
            "return_token_ids": True,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        t0 = time.perf_counter()
        async with self._slots:
            data = await retry(
                lambda: self._post("/chat/completions", body),
                what=f"chat completion from {self.cfg.base_url}",
                retry_if=lambda e: isinstance(e, _Retryable),
                timeout=300.0,
                base=0.5,
                cap=10.0,
                error=EngineError,
            )
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        completions = tuple(
            Completion(
                text=(c.get("message") or {}).get("content") or "",
                tokens=tokens,
                finish_reason=str(c.get("finish_reason") or "stop"),
            )
            for c, tokens in zip(choices, _token_counts(choices, int(usage.get("completion_tokens") or 0)), strict=True)
        )
        if greedy:
            completions = completions[:1] * n
        return Generation(completions, int(usage.get("prompt_tokens") or 0), use, time.perf_counter() - t0)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await self.client.post(path, json=body)
        except httpx.ConnectError as e:
            raise EngineError(f"cannot reach the model server at {self.cfg.base_url}: {e}") from None
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        if r.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
        if r.status_code in REFUSED_STATUS:
            raise ValueError(f"the model server refused the request ({r.status_code}): {r.text[:300]}")
        if r.status_code != 200:
            raise EngineError(f"model server at {self.cfg.base_url} answered {r.status_code} to {path}: {r.text[:300]}")
        return dict(r.json())

    async def update(self, version: str, adapter_dir: Path) -> None:
        """Load the adapter on the server as LoRA module `version`; new requests use it.

        Names are immutable: a version this engine knows only becomes current again, and one
        the server already serves (loaded by another worker sharing the server, which vLLM
        refuses to load twice) is taken as it is."""
        if version == BASE_VERSION:
            raise ValueError(f"{BASE_VERSION!r} names the model's own weights, not an adapter")
        if version not in self._models:
            try:
                r = await self.client.post(
                    "/load_lora_adapter", json={"lora_name": version, "lora_path": str(adapter_dir)}
                )
                # Refused because another client of this server loaded it already: take it.
                loaded = r.status_code == 200 or version in await self._served_models()
            except httpx.TransportError as e:
                raise EngineError(f"cannot reach the model server at {self.cfg.base_url}: {e}") from None
            if not loaded:
                raise EngineError(
                    f"the model server would not load adapter {version!r} ({r.status_code}: {r.text[:200]}); "
                    "vLLM needs --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
                )
            self._models[version] = version
        self._version = version

    async def _served_models(self) -> set[str]:
        """The model names the server lists now (base models and loaded adapters)."""
        r = await self.client.get("/models")
        try:
            return {str(m.get("id")) for m in r.json().get("data") or []} if r.status_code == 200 else set()
        except (ValueError, AttributeError):  # not the JSON of a model list
            return set()

    async def aclose(self) -> None:
        await self.client.aclose()


def _token_counts(choices: list[dict[str, Any]], total: int) -> list[int]:
    """Tokens of each choice: its `token_ids` where the server sent them (vLLM), else the
    request's `total` shared out (the first choices take the remainder, so the sum is right)."""
    ids = [c.get("token_ids") for c in choices]
    if choices and all(isinstance(t, list) for t in ids):
        return [len(t) for t in ids]
    q, r = divmod(total, max(1, len(choices)))
    return [q + (1 if i < r else 0) for i in range(len(choices))]
