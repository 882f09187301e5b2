"""The one interface every LLM backend implements, and the values that cross it.

No bus here: an engine takes chat messages and sampling settings and returns completions;
the LLM actor (`actors/llm.py`) puts it on the bus, `soar generate` calls it directly.
Backends: `vllm_engine.py` (vLLM's AsyncLLM, in-process), `hf_engine.py` (transformers),
`openai_engine.py` (a remote OpenAI-compatible server).

Contract, for every backend:
- `generate` may be called many times concurrently; the engine batches what is in flight.
- Cancelling a caller (an anyio cancel scope) aborts its request inside the engine.
- A model version is a name: "base" or an adapter's immutable name. `generate` runs on the
  version current when it starts (or the one it names) and reports that version, even
  when `update` makes another one current while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict

BASE_VERSION = "base"
"""The version name of the model's own weights, before any adapter."""


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to sample one request (SOAR samples at temperature 1.0 with min_p 0.05).

    Attributes:
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus sampling mass (1.0: off).
        min_p: drop tokens whose probability is below min_p times the top token's (0: off).
        max_tokens: new tokens per completion at most.
        seed: per-request seed where the backend honours one (None: the engine's own).
        stop: strings that end a completion (not included in it).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p <= 1 or self.max_tokens < 1:
            raise ValueError(f"invalid sampling settings: {self}")


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled continuation."""

    text: str
    tokens: int
    """Tokens generated."""
    finish_reason: str
    """"stop" (end of sequence or a stop string), "length" (max_tokens reached), "abort"."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The n completions of one request, and which model version wrote them."""

    completions: tuple[Completion, ...]
    prompt_tokens: int
    version: str
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.completions)


class Engine(Protocol):
    """An LLM backend. Create with `soar_async.llm.open_engine(config.model)`; close with `aclose`."""

    @property
    def version(self) -> str:
        """The model version new requests use."""
        ...

    async def generate(
        self, messages: Sequence[ChatMessage], n: int, sampling: Sampling, *, version: str | None = None
    ) -> Generation:
        """n completions of the chat, on `version` (default: the current one)."""
        ...

    async def update(self, version: str, adapter_dir: Path) -> None:
        """Make `version` (a PEFT adapter directory) the current model, without stopping the
        engine: requests in flight finish on the version they started with."""
        ...

    async def aclose(self) -> None:
        """Release the model (GPU memory, worker processes)."""
        ...


class EngineError(RuntimeError):
    """The engine cannot serve (model missing, server unreachable); the message says what to do."""


class EngineDead(EngineError):
    """The engine died (its processes crashed or were killed): nothing more can run on it;
    whoever owns it must start a new one."""
