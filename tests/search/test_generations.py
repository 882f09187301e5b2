"""Per-generation statistics (`soar_async.search.generations`) on an archive filled by hand.

Two tasks, two generations with their own model versions, plus imported programs (generation
-1). Every number asserted was worked out by hand from the programs written below: which of
them are usable (valid grids everywhere, no reuse filter failed), their train accuracy, and
what each generation's own vote answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soar_async.arc import Task, load_tasks
from soar_async.cli import main
from soar_async.messages import Proposals, SearchTask
from soar_async.records import evaluate_native
from soar_async.search.generations import generation_stats, task_stats
from soar_async.search.plan import norm_key
from soar_async.search.store import ArchiveStore

IDENTITY = "def transform(grid):\n    return grid\n"
CRASH = "def transform(grid):\n    raise ValueError('no idea')\n"
FLIPUD = "import numpy as np\n\ndef transform(grid):\n    return np.flipud(np.array(grid)).tolist()\n"
ROT180 = "import numpy as np\n\ndef transform(grid):\n    return np.rot90(np.array(grid), 2).tolist()\n"
FLIPLR = "import numpy as np\n\ndef transform(grid):\n    return np.fliplr(np.array(grid)).tolist()\n"
FLIPLR_LONG_LINE = FLIPLR.replace("    return", f"    note = '{'x' * 210}'\n    return")
"""Right on every train pair, yet fails the hard-coding filter (a line over 200 characters)."""

A, B = "3c9b0459", "67a3c6ac"  # rotate 180, mirror left-right


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {t.id: t for t in load_tasks(f"arc-agi-1:training#{A},{B}")}


def write_generation(
    store: ArchiveStore, task: Task, generation: int, version: str, texts: list[str | None], tokens: int
) -> None:
    """One search generation of `task` with one sampling slot whose completions are `texts`
    (None: no code), each distinct program evaluated (natively: trusted code) and stored."""
    store.add_search(
        SearchTask(task_id=task.id, task=task.to_json(), generation=generation, samples=len(texts), n_sample=8)
    )
    entries = []
    for code in texts:
        if code is None:
            entries.append({"program_id": None, "norm": None, "code": None, "tokens": 5, "finish_reason": "stop"})
            continue
        rec = evaluate_native(task, code, generation=generation, model_version=version)
        store.add_record(rec)  # a second text of a stored norm is ignored, as the archive does
        entries.append(
            {"program_id": rec.id, "norm": norm_key(code), "code": code, "tokens": 5, "finish_reason": "stop"}
        )
    store.add_proposals(
        Proposals(
            task_id=task.id,
            kind="sample",
            slot=0,
            generation=generation,
            request_id=f"{task.id}-{generation}",
            entries=entries,
            model_version=version,
            completion_tokens=tokens,
        )
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tasks: dict[str, Task]) -> Path:
    run_dir = tmp_path_factory.mktemp("generations")
    with ArchiveStore(run_dir / "archive.sqlite") as store:
        # Generation 0 ("base"): nothing right. A: the identity twice (identity-like: not usable),
        # a crash (no valid grid: not usable), prose. B: flipud (usable, h 0), prose.
        write_generation(store, tasks[A], 0, "base", [IDENTITY, IDENTITY, CRASH, None], tokens=40)
        write_generation(store, tasks[B], 0, "base", [FLIPUD, None], tokens=20)
        # Generation 1 ("v1"): A: rot180 twice (usable, h 1), the identity again (written in
        # generation 0). B: fliplr (usable, h 1), fliplr with a long line (h 1, not usable), prose.
        write_generation(store, tasks[A], 1, "v1", [ROT180, ROT180, IDENTITY], tokens=30)
        write_generation(store, tasks[B], 1, "v1", [FLIPLR, FLIPLR_LONG_LINE, None], tokens=33)
        # Imported into B (no completions): the identity (not usable) and rot180 (usable, h 0).
        for code in (IDENTITY, ROT180):
            store.add_record(evaluate_native(tasks[B], code, generation=-1))
    return run_dir


def test_each_generation_counts_its_own_completions_and_votes(run: Path) -> None:
    stats = {g.generation: g for g in generation_stats(run)}
    assert sorted(stats) == [-1, 0, 1]
    imp, g0, g1 = stats[-1], stats[0], stats[1]
    assert (imp.label, g0.label, g1.label) == ("import", "0", "1")
    assert (imp.model_version, g0.model_version, g1.model_version) == ("", "base", "v1")

    assert (g0.tasks, g0.completions, g0.without_program, g0.tokens) == (2, 6, 2, 60)
    assert (g0.programs, g0.new_programs) == (3, 3)  # identity, crash (A); flipud (B)
    assert g0.usable == 1 and g0.usable_share == pytest.approx(1 / 6)
    assert g0.mean_train_accuracy == 0.0
    assert (g0.right_on_train, g0.tasks_right_on_train) == (0, 0)
    assert (g0.scored, g0.solved, g0.score) == (2, 0, 0.0)

    assert (g1.tasks, g1.completions, g1.without_program, g1.tokens) == (2, 6, 1, 63)
    # rot180 and the identity (A; the identity is generation 0's), fliplr and its long-line text (B).
    assert (g1.programs, g1.new_programs) == (4, 3)
    assert g1.usable == 3 and g1.usable_share == 0.5  # rot180 twice, fliplr
    # The long-line fliplr is right on train but not usable: it counts 0, not 1 (else 4/6).
    assert g1.mean_train_accuracy == 0.5
    assert (g1.right_on_train, g1.tasks_right_on_train) == (3, 2)
    assert (g1.scored, g1.solved, g1.score) == (2, 2, 1.0)

    assert (imp.tasks, imp.completions, imp.programs, imp.tokens) == (1, 0, 2, 0)
    assert imp.usable == 1 and imp.usable_share == 0.5 and imp.mean_train_accuracy == 0.0
    assert (imp.scored, imp.score) == (1, 0.0)  # B's imports alone: the identity and rot180, both wrong


def test_per_task_stats_split_each_generation_by_task(run: Path) -> None:
    per = task_stats(run)
    assert sorted(per) == [(-1, ""), (0, "base"), (1, "v1")]
    assert sorted(per[(1, "v1")]) == [A, B] and sorted(per[(-1, "")]) == [B]
    a1, b1 = per[(1, "v1")][A], per[(1, "v1")][B]
    assert (a1.tasks, a1.completions, a1.usable, a1.usable_share) == (1, 3, 2, pytest.approx(2 / 3))
    assert (b1.tasks, b1.completions, b1.usable, b1.usable_share) == (1, 3, 1, pytest.approx(1 / 3))
    assert (a1.solved, b1.solved) == (1, 1)
    # The tasks add up to the generation's numbers.
    for g in generation_stats(run):
        tasks = per[(g.generation, g.model_version)].values()
        for key in ("tasks", "completions", "usable", "programs", "right_on_train", "tokens", "solved"):
            assert sum(getattr(t, key) for t in tasks) == getattr(g, key), (g.generation, key)
    with ArchiveStore.open_readonly(run / "archive.sqlite") as store:
        assert task_stats([store]) == per


def test_stats_from_open_stores_equal_those_from_the_run_dir(run: Path) -> None:
    with ArchiveStore.open_readonly(run / "archive.sqlite") as store:
        assert generation_stats([store]) == generation_stats(run)


def test_results_shows_the_generations(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--run", str(run), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    # The whole run's vote solves both tasks; generation 0's alone solves none.
    assert got["score"] == 1.0
    gens = {g["generation"]: g for g in got["generations"]}
    assert sorted(gens) == [-1, 0, 1]
    for g in gens.values():
        assert {"generation", "model_version", "programs", "usable_share", "mean_train_accuracy", "score"} <= set(g)
    assert gens[0]["score"] == 0.0 and gens[1]["score"] == 1.0 and gens[1]["usable_share"] == 0.5

    assert main(["results", "--run", str(run)]) == 0
    table = capsys.readouterr().out
    assert "per generation" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.split()[:1] in (["0"], ["1"])}
    rows.update({w[0]: w for w in (line.split() for line in table.splitlines()) if w[:1] == ["import"]})
    assert rows["0"][1] == "base" and rows["0"][-1] == "0.00"
    assert rows["1"][1] == "v1" and rows["1"][5] == "0.50" and rows["1"][-1] == "1.00"
    assert rows["import"][1] == "-"


def test_one_generation_prints_no_generation_table(
    tmp_path: Path, tasks: dict[str, Task], capsys: pytest.CaptureFixture[str]
) -> None:
    with ArchiveStore(tmp_path / "archive.sqlite") as store:
        write_generation(store, tasks[A], 0, "base", [ROT180, None], tokens=10)
    assert main(["results", "--run", str(tmp_path)]) == 0
    assert "per generation" not in capsys.readouterr().out
    assert main(["results", "--run", str(tmp_path), "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)["generations"]
    assert only["generation"] == 0 and only["usable_share"] == 0.5 and only["score"] == 1.0
