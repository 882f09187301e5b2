"""Trying the model on one task: the sampling prompt through the configured engine, each
completion's program extracted and run on the task's inputs in the sandbox.

What `soar generate` shows, and the quickest way to see whether a model (or a new version
of it) writes programs at all before a run spends hours on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from soar_async.arc import Task
from soar_async.config import Config
from soar_async.llm import Generation, Sampling, open_engine
from soar_async.prompts import extract_code, sampling_messages
from soar_async.sandbox import Limits, execute
from soar_async.scoring import correctness


@dataclass(frozen=True, slots=True)
class Tried:
    """One completion and how its program did on the train pairs."""

    text: str
    code: str | None
    """The extracted program, or None when the completion holds none."""
    train_correct: list[bool]
    errors: list[str | None]
    """Per train input: None or the sandbox's error kind."""
    tokens: int
    finish_reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "code": self.code,
            "train_correct": self.train_correct,
            "errors": self.errors,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
        }


async def try_model(
    task: Task, config: Config, *, n: int, max_tokens: int | None = None
) -> tuple[Generation, list[Tried]]:
    """Sample `n` completions for `task` with SOAR's sampling settings and run their programs."""
    search = config.search
    sampling = Sampling(
        temperature=search.temperature,
        min_p=search.min_p,
        max_tokens=max_tokens or search.max_tokens_sample,
    )
    engine = await open_engine(config.model)
    try:
        gen = await engine.generate(sampling_messages(task), n, sampling)
    finally:
        await engine.aclose()
    limits = Limits.from_settings(config.sandbox)
    inputs = [p.input for p in task.train]
    truth = [p.output for p in task.train]
    tried = []
    for c in gen.completions:
        code = extract_code(c.text)
        if code is None:
            tried.append(
                Tried(c.text, None, [False] * len(inputs), ["no_program"] * len(inputs), c.tokens, c.finish_reason)
            )
            continue
        res = await anyio.to_thread.run_sync(execute, code, inputs, limits)
        outs = [r.output for r in res.results]
        right = [bool(x) for x in correctness(truth, outs)]
        errs = [None if r.error is None else str(r.error) for r in res.results]
        tried.append(Tried(c.text, code, right, errs, c.tokens, c.finish_reason))
    return gen, tried
