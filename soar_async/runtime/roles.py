"""Which actor class plays which role: `soar worker --role NAME` and `soar up` look here.

A role is a name in ROLES or a `module:Class` path (for actors outside this package).
"""

from __future__ import annotations

import importlib
from typing import Any

from soar_async.runtime.actor import Actor

ROLES: dict[str, str] = {
    "executor": "actors.executor:Executor",
    "llm": "actors.llm:LLMWorker",
    "proposer": "actors.proposer:Proposer",
    "refiner": "actors.refiner:Refiner",
    "archive": "actors.archive:Archive",
    "trainer": "actors.trainer:Trainer",
    "conductor": "actors.conductor:Conductor",
}
"""Role name -> `module:Class`."""

SEARCH_ACTORS: list[tuple[str, int | None]] = [("proposer", None), ("refiner", None), ("archive", None)]
"""The search's own actors: light, one of each per machine (or per partition)."""

UP_ACTORS: list[tuple[str, int | None]] = [("executor", None), *SEARCH_ACTORS]
"""The actors `soar up` starts on one machine, with their concurrency (None: the role's default).
The LLM worker is not among them (it loads a model: `soar up --role llm` or `soar worker
--role llm` on a GPU machine); `soar up --role R[:N]` overrides the list."""


def resolve_role(name: str) -> type[Actor[Any]]:
    target = ROLES.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown role {name!r}; known roles: {', '.join(sorted(ROLES))} (or module:Class)")
    mod_name, _, cls_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"role {name!r}: cannot import {mod_name} ({e})") from None
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ValueError(f"role {name!r}: {target} is not an Actor subclass")
    return cls
