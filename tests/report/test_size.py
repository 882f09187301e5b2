"""A large run's report stays small: what it embeds per task does not grow with the task's programs.

A synthetic archive is written straight into SQLite (no sandbox, no bus): the 25 ARC-AGI-1
evaluation tasks with the most grid cells, each twice (under two ids), once with 200 and
once with 2,000 programs, in two generations. The programs look like a real search's where
the report reads them: the best ones have realistic code and long refinement chains; the
bulk carry small records (the report never parses them; only `soar results`' vote does).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from soar_async.arc import Task, load_tasks, parse_task
from soar_async.messages import SearchTask
from soar_async.records import ProgramRecord
from soar_async.report.build import MAX_LINEAGE, TOP_PROGRAMS, build_report
from soar_async.report.html import render_html
from soar_async.search.store import ArchiveStore, _record_json
from tests.report.helpers import Dom

pytestmark = pytest.mark.slow

TASKS = 25
MANY, FEW = 2000, 200
CHAIN = 20
"""Refinement steps behind each task's best program (more than the report shows)."""
LIMIT_400_TASKS = 20e6

BODY = """import numpy as np
from collections import Counter

def transform(grid):
    # Find the most common colour and the objects drawn on it, then move every object
    # towards the border it is closest to, keeping its colour and shape.
    a = np.array(grid)
    background = Counter(a.flatten().tolist()).most_common(1)[0][0]
    out = np.full_like(a, background)
    seen = np.zeros(a.shape, dtype=bool)
    for r in range(a.shape[0]):
        for c in range(a.shape[1]):
            if a[r, c] == background or seen[r, c]:
                continue
            stack, cells = [(r, c)], []
            seen[r, c] = True
            while stack:
                y, x = stack.pop()
                cells.append((y, x))
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < a.shape[0] and 0 <= nx < a.shape[1] and not seen[ny, nx] and a[ny, nx] == a[r, c]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            top = min(y for y, _ in cells)
            for y, x in cells:
                out[y - top, x] = a[y, x]
    return out.tolist()  # variant {i}
"""
"""A typical model-written program: about 1,300 characters."""


def largest_tasks(n: int) -> list[Task]:
    tasks = load_tasks("arc-agi-1:evaluation")
    size = lambda t: sum(len(g) * len(g[0]) for p in (*t.train, *t.test) for g in (p.input, p.output) if g)  # noqa: E731
    return sorted(tasks, key=size, reverse=True)[:n]


def fill(store: ArchiveStore, task: Task, n_programs: int, rng: random.Random, t0: float) -> None:
    """A task searched in generations 0 and 1: `n_programs` programs, one completion each."""
    for gen in (0, 1):
        store.add_search(SearchTask(task_id=task.id, task=task.to_json(), generation=gen, samples=n_programs))
    n_train, n_test = len(task.train), len(task.test)
    truth = [p.output for p in task.test]
    programs, completions, parent = [], [], None
    for i in range(n_programs):
        best = i >= n_programs - CHAIN - 5  # the last ones: the best, with a chain of parents
        h = min(1.0, (i - (n_programs - CHAIN - 5)) / CHAIN) if best else rng.choice((0.0, 0.0, 0.25, 0.5))
        right = [k < round(h * n_train) for k in range(n_train)]
        code = BODY.replace("{i}", str(i)) if best else f"def transform(grid):\n    return grid[::-1]  # {i}\n"
        test_out = truth if h == 1.0 else [[[i % 10] * (i % 7 + 1)] for _ in range(n_test)]
        rec = ProgramRecord(
            task_id=task.id, task_digest=task.digest, code=code,
            train_outputs=[None] * n_train, test_outputs=test_out,
            train_errors=[None if ok else "exception" for ok in right], test_errors=[None] * n_test,
            train_correct=right, test_correct=[o == t for o, t in zip(test_out, truth, strict=True)],
            parent_id=parent if best else None, origin="refine" if best and parent else "sample",
            model_version="v1" if i % 2 else "base", generation=i % 2,
        )  # fmt: skip
        if best:
            parent = rec.id
        norm = f"n{i}"
        programs.append(
            (
                rec.id, task.id, task.digest, norm, code, _record_json(rec), n_train, sum(right), h,
                int(rec.all_train_correct), int(rec.raised_any), rec.test_accuracy, rec.parent_id, rec.origin,
                rec.model_version, rec.generation, 0.01, t0 + i * 0.05,
            )
        )  # fmt: skip
        completions.append((task.id, i % 2, "sample", 0, i, rec.id, norm, code, 100, "stop"))
    db = store.db
    db.execute("BEGIN")
    db.executemany("INSERT INTO programs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", programs)
    db.executemany("INSERT INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)", completions)
    for gen, version in ((0, "base"), (1, "v1")):
        db.execute(
            "INSERT INTO slots VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (task.id, gen, "sample", 0, f"{task.id}-{gen}", 0, None, None, version, 1000, 100 * n_programs // 2,
             t0, ""),
        )  # fmt: skip
    db.execute("COMMIT")


def test_the_report_of_a_large_run_stays_small(tmp_path: Path) -> None:
    t_start = time.perf_counter()
    rng = random.Random(0)
    run = tmp_path / "run"
    with ArchiveStore(run / "archive.sqlite") as store:
        for base in largest_tasks(TASKS):
            for suffix, n in (("many", MANY), ("few", FEW)):
                task = parse_task(f"{base.id}-{suffix}", base.to_json())
                fill(store, task, n, rng, t0=1e9)
    t_filled = time.perf_counter()

    rep = build_report(run)
    text = render_html(rep)
    t_built = time.perf_counter()
    size = len(text.encode())
    n_tasks = 2 * TASKS
    assert rep.results.tasks == n_tasks and rep.results.programs == TASKS * (MANY + FEW)

    sections = {s.attrs["data-task-id"]: s for s in Dom(text).root.find_all("section", cls="task")}
    assert len(sections) == n_tasks
    section_bytes: dict[str, int] = {}
    for tid in sections:
        start = text.index(f'<section class="task" id="task-{tid}"')
        section_bytes[tid] = len(text[start : text.index("</section>", start)].encode())
    for s in sections.values():
        # Only the top programs and the last steps of the best one's lineage are embedded.
        assert len(s.find_all("details", cls="program")) == TOP_PROGRAMS
        (lineage,) = s.find_all("ol", cls="lineage")
        assert len(lineage.find_all("li")) == MAX_LINEAGE + 1
        assert f"{CHAIN - MAX_LINEAGE} earlier step(s) not shown" in s.text()
    # Ten times the programs, about the same bytes (the attempts drawn may differ: another vote).
    for base in largest_tasks(TASKS):
        many, few = section_bytes[f"{base.id}-many"], section_bytes[f"{base.id}-few"]
        assert abs(many - few) < 0.1 * few, (base.id, many, few)
    per_task = size / n_tasks  # the summary's share included: an overestimate per task
    estimate_400 = 400 * per_task
    print(
        f"\nreport: {size / 1e6:.2f} MB for {n_tasks} tasks, {TASKS * (MANY + FEW)} programs; "
        f"{per_task / 1e3:.1f} kB per task (largest section {max(section_bytes.values()) / 1e3:.1f} kB); "
        f"400 tasks ~ {estimate_400 / 1e6:.1f} MB; filled in {t_filled - t_start:.1f} s, "
        f"built in {t_built - t_filled:.1f} s"
    )
    assert max(section_bytes.values()) < 50e3
    assert estimate_400 < LIMIT_400_TASKS
    # The archive's records were not all parsed to rank the programs: the report needs no more than
    # `soar results`' own pass over them (and the per-generation one), so it builds in seconds.
    assert t_built - t_filled < 20
    json.dumps(rep.results.to_dict())  # the summary numbers stay plain data
