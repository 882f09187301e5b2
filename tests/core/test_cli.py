"""The `soar` console script as a user runs it: real subprocesses, exit codes and output."""

from __future__ import annotations

import shutil
import subprocess
import sys

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
