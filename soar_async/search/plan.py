"""The arithmetic of a task's search that every actor must agree on: slots, request ids, program keys.

Budgets count completions; a request asks for `n` of them, so a phase has ceil(budget / n)
slots. Slot k of a phase has one request id, whoever sends it and however often, so a
resend after a crash is dropped by the queue's dedup window instead of spent twice.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from typing import Any

from soar_async.arc import Task, parse_task
from soar_async.config import SearchConfig
from soar_async.messages import Completions, SearchTask
from soar_async.prompts import extract_code
from soar_async.records import program_id

SAMPLE = "sample"
REFINE = "refine"
KINDS = (SAMPLE, REFINE)


def slots(budget: int, n: int) -> int:
    """Requests needed for `budget` completions at `n` per request."""
    return -(-budget // n) if budget > 0 else 0


def slot_size(budget: int, n: int, slot: int) -> int:
    """Completions asked of `slot`: `n`, except a smaller last one so the budget is exact."""
    return max(0, min(n, budget - slot * n))


def request_id(generation: int, kind: str, task_id: str, slot: int) -> str:
    return f"g{generation}.{kind[0]}.{task_id}.{slot}"


def search_task(
    task: Task,
    config: SearchConfig,
    *,
    generation: int = 0,
    samples: int | None = None,
    refinements: int | None = None,
    model_version: str = "",
) -> SearchTask:
    """The `SearchTask` that starts `task`'s search with the configured budgets."""
    return SearchTask(
        task_id=task.id,
        task=task.to_json(),
        generation=generation,
        samples=config.samples_per_task if samples is None else samples,
        refinements=config.refinements_per_task if refinements is None else refinements,
        n_sample=config.completions_per_sample_request,
        n_refine=config.completions_per_refine_request,
        stop_after_correct=config.stop_after_correct,
        requests_in_flight=config.requests_in_flight,
        model_version=model_version,
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """One task's search in one generation, as derived from its `SearchTask`."""

    task: Task
    generation: int
    samples: int
    refinements: int
    n_sample: int
    n_refine: int
    stop_after_correct: int
    window: int
    """Requests in flight per phase (`SearchTask.requests_in_flight`)."""
    model_version: str = ""
    """The version every request of this search names ("": the one being served)."""

    @classmethod
    def of(cls, msg: SearchTask) -> Plan:
        if min(msg.n_sample, msg.n_refine, msg.requests_in_flight) < 1 or min(msg.samples, msg.refinements) < 0:
            raise ValueError(
                f"search of {msg.task_id}: budgets must be >= 0 and completions per request >= 1 "
                f"(samples={msg.samples}, refinements={msg.refinements}, n={msg.n_sample}/{msg.n_refine}, "
                f"in flight={msg.requests_in_flight})"
            )
        return cls(
            task=parse_task(msg.task_id, msg.task),
            generation=msg.generation,
            samples=msg.samples,
            refinements=msg.refinements,
            n_sample=msg.n_sample,
            n_refine=msg.n_refine,
            stop_after_correct=msg.stop_after_correct,
            window=msg.requests_in_flight,
            model_version=msg.model_version,
        )

    def slots(self, kind: str) -> int:
        return slots(self.samples, self.n_sample) if kind == SAMPLE else slots(self.refinements, self.n_refine)

    def size(self, kind: str, slot: int) -> int:
        if kind == SAMPLE:
            return slot_size(self.samples, self.n_sample, slot)
        return slot_size(self.refinements, self.n_refine, slot)

    def request_id(self, kind: str, slot: int) -> str:
        return request_id(self.generation, kind, self.task.id, slot)


def norm_key(code: str) -> str:
    """Digest of the program's normalised form: what the compiler makes of it (instructions,
    constants, names of every code object, not the line table), so comments, spacing, blank
    lines and quotes do not count; code that does not compile is keyed by its text.

    The compiler rather than an AST dump because it is C: 0.04 ms a program against 0.13 ms,
    paid for every completion. Norms are digests of this interpreter's bytecode, so archives
    written under another Python version dedupe only identical texts against new programs."""
    try:
        co = compile(code, "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return hashlib.sha256(("raw:" + code).encode()).hexdigest()[:20]
    h = hashlib.sha256()
    _digest_code(co, h)
    return h.hexdigest()[:20]


def _digest_code(co: types.CodeType, h: Any) -> None:
    h.update(co.co_code)
    h.update(repr((co.co_name, co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars, co.co_flags)).encode())
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            _digest_code(c, h)
        else:
            h.update(b"\0" + _const_text(c).encode())


def _const_text(c: Any) -> str:
    """A constant's text, the same in every process (a frozenset's repr follows string hashing,
    which is randomised per process)."""
    if isinstance(c, frozenset):
        return "frozenset{" + ",".join(sorted(_const_text(x) for x in c)) + "}"
    if isinstance(c, tuple):
        return "(" + ",".join(_const_text(x) for x in c) + ")"
    return f"{type(c).__name__}:{c!r}"


def entries_of(task: Task, msg: Completions) -> list[dict[str, Any]]:
    """One `Proposals` entry per completion text: its program (None when it holds none) and keys."""
    out = []
    for i, text in enumerate(msg.texts):
        code = extract_code(text)
        out.append(
            {
                "program_id": None if code is None else program_id(task.id, code, task.digest),
                "norm": None if code is None else norm_key(code),
                "code": code,
                "tokens": int(msg.tokens[i]) if i < len(msg.tokens) else 0,
                "finish_reason": msg.finish_reasons[i] if i < len(msg.finish_reasons) else "",
            }
        )
    return out
