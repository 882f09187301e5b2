"""`soar report`: one self-contained HTML file showing a run (grids, programs, lineage, curves)."""

from __future__ import annotations

import argparse
from pathlib import Path

from soar_async.commands._common import add_config_args, config_from_args, run_dir_of


def cmd_report(args: argparse.Namespace) -> int:
    from soar_async.report.build import build_report
    from soar_async.report.html import write_report

    cfg = config_from_args(args)
    run_dir = run_dir_of(args, cfg)
    out = Path(args.out) if args.out else run_dir / "report.html"
    rep = build_report(run_dir, c=cfg.vote.c, n_attempts=cfg.vote.attempts)
    size = write_report(rep, out)
    res = rep.results
    score = "n/a" if res.score is None else f"{res.score * 100:.2f}%"
    print(
        f"wrote {out} ({size / 1e6:.2f} MB): {res.tasks} task(s), {len(res.solved)} solved, score {score}, "
        f"{res.programs} programs; open it in a browser (file://{out.resolve()})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run (grids, programs, lineage, curves)",
        description="Read a run's archive (read-only; the run may be live) and write one HTML file that opens "
        "in any browser, offline: the summary (score, tasks, programs, tokens, wall time, programs/s, per "
        "generation and model version, charts), then per task its grids, the two attempts beside the truth, "
        "the best programs with their train accuracy and vote weight, and the lineage of the best one. A filter "
        "box shows solved, unsolved or tasks by id; open it filtered with #filter=solved or #q=ID.",
    )
    p.add_argument("--run", "--run-dir", dest="run_dir", metavar="DIR", help="run directory (default: runs/<run.name>)")
    p.add_argument("--out", metavar="FILE.html", help="where to write the report (default: DIR/report.html)")
    add_config_args(p)
    p.set_defaults(func=cmd_report)
