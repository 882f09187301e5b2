"""One program run on every train and test input of one task, as data and as text (`soar sandbox run`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soar_async.arc import Grid, Task
from soar_async.sandbox.types import ExecResult, Limits

if TYPE_CHECKING:
    from rich.console import Console

JSON_KEYS = ("ok", "correct", "error", "output")
"""The documented keys of each input's entry in `soar sandbox run --json`."""


@dataclass
class TaskRun:
    """`entries[split][i]`: ok, correct (None when the answer is unknown), error, detail, output."""

    task: Task
    result: ExecResult
    entries: dict[str, list[dict[str, Any]]]

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """`{train: [...], test: [...]}` with exactly the documented keys per input."""
        return {split: [{k: e[k] for k in JSON_KEYS} for e in entries] for split, entries in self.entries.items()}


def run_on_task(code: str, task: Task, limits: Limits) -> TaskRun:
    """Run `code` on all of `task`'s train and test inputs in one sandbox instance and judge each output."""
    from soar_async.sandbox.runtime import execute

    pairs = [("train", i, p) for i, p in enumerate(task.train)] + [("test", i, p) for i, p in enumerate(task.test)]
    res = execute(code, [p.input for _, _, p in pairs], limits)
    entries: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for (split, _, pair), r in zip(pairs, res.results, strict=True):
        correct = None if pair.output is None else (r.error is None and r.output == pair.output)
        entries[split].append(
            {
                "ok": r.error is None,
                "correct": correct,
                "error": None if r.error is None else str(r.error),
                "detail": r.detail,
                "output": r.output,
            }
        )
    return TaskRun(task, res, entries)


def show_task_run(run: TaskRun, console: Console) -> None:
    """A summary line, then per input its verdict and output grid (next to the expected one when wrong)."""
    from soar_async.render import side_by_side

    task, res = run.task, run.result
    console.out(
        f"task {task.id}: {len(task.train)} train + {len(task.test)} test inputs, {res.duration_s * 1e3:.1f} ms"
    )
    expected = {"train": [p.output for p in task.train], "test": [p.output for p in task.test]}
    for split, entries in run.entries.items():
        for i, e in enumerate(entries):
            verdict = {True: "correct", False: "wrong", None: "answer unknown"}[e["correct"]]
            if e["error"]:
                console.out(f"{split}[{i}]: {e['error']}: {e['detail'] or ''}  ({verdict})")
                continue
            grid: Grid = e["output"]
            console.out(f"{split}[{i}]: {len(grid)}x{len(grid[0])} output ({verdict})")
            want = expected[split][i]
            shown = [("output", grid)] + ([("expected", want)] if e["correct"] is False and want else [])
            for line in side_by_side(shown):
                console.print(line)
    if res.stdout:
        console.out("stdout (captured, truncated):")
        console.out(res.stdout.rstrip("\n"))
