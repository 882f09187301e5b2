"""Subjects, shards and partitions: pure functions every publisher and reader must agree on."""

from __future__ import annotations

import subprocess
import sys

from soar_async.bus.topology import (
    EVT_EVALUATED,
    SHARDS,
    evaluated_filter,
    evaluated_subject,
    partition,
    partition_filters,
    shard,
    task_token_of,
)
from soar_async.messages import Evaluated, TaskStatus


def test_partitions_cover_every_shard_exactly_once() -> None:
    for count in (1, 2, 3, 4, 7, SHARDS):
        owned = [f for i in range(count) for f in partition_filters(EVT_EVALUATED, i, count)]
        assert sorted(owned) == sorted(f"{EVT_EVALUATED}.{s}.>" for s in range(SHARDS))


def test_a_tasks_partition_matches_the_filters_of_its_owner() -> None:
    for t in (f"{i:08x}" for i in range(200)):
        subj = evaluated_subject(t)
        part = partition(t, 3)
        owner = partition_filters(EVT_EVALUATED, part, 3)
        assert any(subj.startswith(f[:-1]) for f in owner)
        assert task_token_of(subj) == t
        assert evaluated_filter(t) == f"{EVT_EVALUATED}.*.{t}"


def test_shards_are_stable_across_processes() -> None:
    """Python's hash() is salted per process; the shard must not be."""
    ids = ["007bbfb7", "3c9b0459", "task with spaces", "a.b>c"]
    code = f"from soar_async.bus.topology import shard; print([shard(t) for t in {ids!r}])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str([shard(t) for t in ids])
    assert all(0 <= shard(t) < SHARDS for t in ids)


def test_tasks_spread_over_shards() -> None:
    used = {shard(f"{i:08x}") for i in range(2000)}
    assert len(used) == SHARDS


def test_messages_route_per_task() -> None:
    ev = Evaluated(program_id="p", task_id="3c9b0459", code="", outputs=[], errors=[])
    assert ev.subject() == evaluated_subject("3c9b0459")
    # Task status is sharded too, so that a partitioned actor (the refiner) follows its own tasks.
    status = TaskStatus(task_id="3c9b0459", state="done")
    assert status.subject() == f"soar.evt.task.status.{shard('3c9b0459')}.3c9b0459"
