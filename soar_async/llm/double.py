"""A test double for the LLM: answers from a script instead of a model.

For tests that need programs known to be right (and wrong, crashing, code-less ones among
them) and for `soar bench pipeline`, which measures everything but the model. It is never
a default: it runs only when `model.engine = "double"` and `model.path` names a script.

Script (JSON): {"rules": [{"contains": TEXT, "kind": "sample"|"refine"|"any",
"texts": [completion, ...]}, ...], "default": [completion, ...], "log": PATH, "delay_s": S}.
A request's prompt (all message contents joined) is matched against the rules in order; a
rule applies when TEXT is in the prompt and its kind matches (a refinement prompt is one
that shows a program, i.e. holds "def transform("). The n completions are taken in turn
from the rule's texts, cycling, continuing where the last request for that rule stopped.
With "log", every prompt is appended to that file as one JSON line {"kind", "messages",
"version"}, so a test can read what the search asked. Token counts are whitespace words.
With "die_after": N, the engine serves N requests and then behaves as a dead engine (every
call raises EngineDead), as vLLM does when its engine process is killed. A rule with
"trained": true applies only to requests served by an updated model (not the base one), with
"trained": false only to the base model's, so a test can tell the generations' programs apart.
`update` takes a version only from a directory holding a PEFT adapter (adapter_config.json
and weights), as a real engine would.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from soar_async.llm.engine import (
    BASE_VERSION,
    ChatMessage,
    Completion,
    EngineDead,
    EngineError,
    Generation,
    Sampling,
)


def prompt_kind(messages: Sequence[ChatMessage]) -> str:
    return "refine" if any("def transform(" in m["content"] for m in messages if m["role"] == "user") else "sample"


class ScriptedEngine:
    """Test double: completions from a script (see the module doc), instantly or after `delay_s`."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.rules = list(script.get("rules", []))
        for r in self.rules:
            if not isinstance(r.get("contains"), str) or not r.get("texts"):
                raise EngineError(f"double engine script: each rule needs 'contains' and 'texts', got {r!r}")
        self.default = list(script.get("default", ["I cannot solve this."]))
        self.log_path = Path(script["log"]) if script.get("log") else None
        self.delay_s = float(script.get("delay_s", 0.0))
        self.die_after = script.get("die_after")
        self.served = 0
        self._turns = [itertools.count() for _ in range(len(self.rules) + 1)]
        self._lock = threading.Lock()
        self._version = BASE_VERSION

    @classmethod
    async def start(cls, path: str) -> ScriptedEngine:
        if not path:
            raise EngineError("model.engine = 'double' needs model.path = a JSON script (see soar_async/llm/double.py)")
        try:
            script = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise EngineError(f"double engine script {path}: {e}") from None
        return cls(script)

    @property
    def version(self) -> str:
        return self._version

    def _choose(self, messages: Sequence[ChatMessage], version: str) -> tuple[int, list[str]]:
        prompt = "\n".join(m["content"] for m in messages)
        kind = prompt_kind(messages)
        trained = version != BASE_VERSION
        for i, r in enumerate(self.rules):
            if r.get("trained", trained) != trained:
                continue
            if r["contains"] in prompt and r.get("kind", "any") in ("any", kind):
                return i, list(r["texts"])
        return len(self.rules), self.default

    async def generate(
        self, messages: Sequence[ChatMessage], n: int, sampling: Sampling, *, version: str | None = None
    ) -> Generation:
        used = version or self._version
        if self.die_after is not None:
            if self.served >= int(self.die_after):
                raise EngineDead("the test double's engine is dead (die_after)")
            self.served += 1
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        i, texts = self._choose(messages, used)
        with self._lock:
            picks = [texts[next(self._turns[i]) % len(texts)] for _ in range(n)]
            if self.log_path is not None:
                with self.log_path.open("a") as f:
                    f.write(json.dumps({"kind": prompt_kind(messages), "messages": list(messages), "version": used}))
                    f.write("\n")
        comps = tuple(Completion(t, max(1, len(t.split())), "stop") for t in picks)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return Generation(comps, prompt_tokens=prompt_tokens, version=used)

    async def update(self, version: str, adapter_dir: Path) -> None:
        has_weights = any(adapter_dir.glob("adapter_model.*"))
        if not (adapter_dir / "adapter_config.json").is_file() or not has_weights:
            raise EngineError(f"double engine: {adapter_dir} holds no PEFT adapter (adapter_config.json + weights)")
        self._version = version

    async def aclose(self) -> None:
        return None
