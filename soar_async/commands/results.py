"""`soar results`: per-task and total results of a run, read from its archive (no bus needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soar_async.commands._common import add_config_args, config_from_args, run_dir_of


def cmd_results(args: argparse.Namespace) -> int:
    from soar_async.search.results import gather_results, render_results

    cfg = config_from_args(args)
    res = gather_results(
        run_dir_of(args, cfg),
        c=cfg.vote.c,
        n_attempts=cfg.vote.attempts,
        submission=Path(args.submission) if args.submission else None,
    )
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
    else:
        print(render_results(res), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results",
        help="per-task programs, attempts and score of a run, from its archive",
        description="Read a run's archive (read-only; the run may be live) and show, per task: programs, "
        "completions, completions without code, duplicates, best train accuracy, programs right on every train "
        "pair, whether each attempt is right on each test input (where the answer is known) and the score; then "
        "the totals. The attempts are the archive's vote (vote.c, vote.attempts), or a submission file's.",
    )
    p.add_argument("--run", "--run-dir", dest="run_dir", metavar="DIR", help="run directory (default: runs/<run.name>)")
    p.add_argument("--submission", metavar="FILE", help="score this submission file instead of the archive's vote")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_config_args(p)
    p.set_defaults(func=cmd_results)
