"""REX: which program to refine next, by Thompson sampling over programs (SOAR's refinement search).

Each program is an arm with fitness h (fraction of train pairs right) and N, the number of
times it has already been refined. To choose, draw theta ~ Beta(1 + C*h, 1 + C*(1-h) + N)
for every arm, C = 20, and refine the argmax; N of the chosen arm goes up by one (as the
paper describes; the reference code forgot to). Good programs are refined often, but each
refinement makes the next one less likely, so the search keeps exploring.

A task runs several independent islands (default 4). Sampled programs (roots) join every
island: each island is an independent REX run from the same initial population, like the
paper's independent restarts. A child joins only the island of the parent it came from.
Programs that raised (or produced an invalid output) on any input are not arms.

Randomness is reproducible and serialisable without storing a generator's internal state:
draw k of island i uses `numpy.random.default_rng([seed, i, k])`, so the state is just
the seed and a counter per island (plain ints, fit for msgpack and the conductor's KV).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REX_C = 20.0
"""SOAR's C: how sharply the Beta prior concentrates around h."""

N_ISLANDS = 4


def task_seed(task_id: str, seed: int = 0) -> int:
    """A 64-bit seed from a task id and a run seed, so tasks get unrelated random streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:8], "little")


@dataclass(slots=True)
class Arm:
    h: float
    n_refined: int = 0


@dataclass(slots=True)
class RexIsland:
    """One independent REX population.

    `add` offers a program; `select` draws and returns the program to refine (or None when
    the island has no arms), counting the refinement against it.
    """

    seed: int = 0
    index: int = 0
    c: float = REX_C
    arms: dict[str, Arm] = field(default_factory=dict)
    draws: int = 0
    """How many selections this island has made: the position in its random stream."""

    def add(self, program_id: str, h: float, *, raised: bool = False) -> bool:
        """Make `program_id` an arm with fitness `h` in [0, 1]; False (and no arm) if it raised.

        Adding an existing arm again keeps its refinement count and updates h.
        """
        if raised:
            return False
        if not 0.0 <= h <= 1.0:
            raise ValueError(f"fitness must be in [0, 1], got {h}")
        if program_id in self.arms:
            self.arms[program_id].h = h
        else:
            self.arms[program_id] = Arm(h)
        return True

    def __len__(self) -> int:
        return len(self.arms)

    def __contains__(self, program_id: object) -> bool:
        return program_id in self.arms

    def thetas(self) -> tuple[list[str], np.ndarray]:
        """One Thompson draw for every arm (advances the random stream)."""
        ids = list(self.arms)
        rng = np.random.default_rng([self.seed, self.index, self.draws])
        self.draws += 1
        h = np.array([self.arms[i].h for i in ids], dtype=np.float64)
        n = np.array([self.arms[i].n_refined for i in ids], dtype=np.float64)
        return ids, rng.beta(1.0 + self.c * h, 1.0 + self.c * (1.0 - h) + n)

    def select(self, *, count: bool = True) -> str | None:
        """The arm with the highest Thompson draw; its N grows by one unless `count` is False."""
        if not self.arms:
            return None
        ids, theta = self.thetas()
        chosen = ids[int(np.argmax(theta))]
        if count:
            self.arms[chosen].n_refined += 1
        return chosen

    def record_refinement(self, program_id: str, times: int = 1) -> None:
        """Count refinements made outside `select` (e.g. replayed from the archive)."""
        self.arms[program_id].n_refined += times

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "index": self.index,
            "c": self.c,
            "draws": self.draws,
            "arms": [[pid, a.h, a.n_refined] for pid, a in self.arms.items()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RexIsland:
        isl = cls(
            seed=int(d["seed"]), index=int(d["index"]), c=float(d.get("c", REX_C)), draws=int(d["draws"])
        )
        for pid, h, n in d["arms"]:
            isl.arms[str(pid)] = Arm(float(h), int(n))
        return isl


@dataclass(slots=True)
class RexForest:
    """All REX islands of one task."""

    task_id: str
    n_islands: int = N_ISLANDS
    seed: int = 0
    c: float = REX_C
    islands: list[RexIsland] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_islands < 1:
            raise ValueError("need at least one island")
        if not self.islands:
            base = task_seed(self.task_id, self.seed)
            self.islands = [RexIsland(seed=base, index=i, c=self.c) for i in range(self.n_islands)]
        elif len(self.islands) != self.n_islands:
            raise ValueError(f"{len(self.islands)} islands given, n_islands is {self.n_islands}")

    def add_root(self, program_id: str, h: float, *, raised: bool = False) -> bool:
        """A sampled program joins every island (False if it raised and joins none)."""
        return all([isl.add(program_id, h, raised=raised) for isl in self.islands])

    def add_child(self, island: int, program_id: str, h: float, *, raised: bool = False) -> bool:
        """A refined program joins the island its parent was selected from."""
        return self.islands[island].add(program_id, h, raised=raised)

    def select(self, island: int) -> str | None:
        return self.islands[island].select()

    def select_round(self) -> list[tuple[int, str]]:
        """One parent from each island that has arms: `[(island, program_id), ...]`."""
        out = []
        for i, isl in enumerate(self.islands):
            pid = isl.select()
            if pid is not None:
                out.append((i, pid))
        return out

    @property
    def n_arms(self) -> int:
        return len({pid for isl in self.islands for pid in isl.arms})

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "n_islands": self.n_islands,
            "seed": self.seed,
            "c": self.c,
            "islands": [isl.to_dict() for isl in self.islands],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RexForest:
        return cls(
            task_id=str(d["task_id"]),
            n_islands=int(d["n_islands"]),
            seed=int(d["seed"]),
            c=float(d.get("c", REX_C)),
            islands=[RexIsland.from_dict(x) for x in d["islands"]],
        )
