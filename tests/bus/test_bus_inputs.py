"""The three input kinds of the runtime on a real nats-server: durable events (resume, replay,
partitions, dead letters) and broadcasts. Actors are brought up by the same `bring_up` that
`soar up` and `soar solve` use."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import helper_actors
from bushelpers import connect, dead_letters, topology, wait_for

from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.server import NatsServer
from soar_async.bus.topology import STREAM_EVENTS, evaluated_subject, partition
from soar_async.config import Config
from soar_async.messages import Evaluated, ModelUpdated
from soar_async.runtime.system import ActorSpec, bring_up

RECORDER = "helper_actors:Recorder"
WATCHER = "helper_actors:ModelWatcher"


def up(url: str, tmp: Path, *actors: ActorSpec, owner: bool = True):  # type: ignore[no-untyped-def]
    return bring_up(
        Config(),
        run_dir=tmp / "run",
        bus=BusConfig.from_url(url),
        actors=actors,
        owner=owner,
        topology=topology(),
        heartbeat_interval=0.5,
    )


async def publish_evaluated(bus: Bus, items: list[tuple[str, str]]) -> None:
    for task_id, pid in items:
        ev = Evaluated(program_id=pid, task_id=task_id, code="", outputs=[], errors=[])
        await bus.js_publish(ev.subject(), ev.encode(), msg_id=ev.dedup_id())


async def drained(bus: Bus, *consumers: str) -> bool:
    """Every event delivered and acked: nothing is left that could still arrive (twice or late)."""
    for name in consumers:
        ci = await bus.js.consumer_info(STREAM_EVENTS, name)
        if ci.num_pending or ci.num_ack_pending:
            return False
    return True


def seen_by(worker_id: str) -> list[str]:
    return [pid for w, pid in helper_actors.SEEN if w == worker_id]


def test_event_consumer_resumes_where_it_stopped_and_sees_nothing_twice(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    helper_actors.SEEN.clear()
    first = [("t1", f"slow{i:03d}") for i in range(40)]
    later = [("t2", f"new{i:03d}") for i in range(15)]

    async def main() -> None:
        bus = await connect(nats_server.url)
        async with up(nats_server.url, tmp_path) as system:  # provisions the layout
            pass
        await publish_evaluated(bus, first)
        async with up(nats_server.url, tmp_path, ActorSpec(RECORDER, concurrency=1)) as system:
            w1 = system.runners[0].worker_id
            await wait_for(lambda: len(seen_by(w1)) >= 10, 30, "ten events handled")
        # Stopped mid-stream (drained): the rest of `first` is still unread.
        assert 10 <= len(seen_by(w1)) < len(first)
        await publish_evaluated(bus, later)
        async with up(nats_server.url, tmp_path, ActorSpec(RECORDER, concurrency=1)) as system:
            w2 = system.runners[0].worker_id
            total = len(first) + len(later)
            await wait_for(lambda: len(helper_actors.SEEN) >= total, 60, "every event handled")
            await wait_for(lambda: drained(bus, "recorder"), 30, "every event acked")
        pids = [pid for _, pid in helper_actors.SEEN]
        assert Counter(pids).most_common(1)[0][1] == 1, "an event was handled twice"
        assert pids == [p for _, p in first + later], "not in stream order"
        assert seen_by(w2)[0] == first[len(seen_by(w1))][1], "the restart did not resume at the next event"
        await bus.close()

    anyio.run(main)


def test_event_consumer_replays_from_a_sequence(nats_server: NatsServer, tmp_path: Path) -> None:
    helper_actors.SEEN.clear()
    items = [("t1", f"p{i:03d}") for i in range(12)]

    async def main() -> None:
        bus = await connect(nats_server.url)
        async with up(nats_server.url, tmp_path):
            pass
        await publish_evaluated(bus, items)
        async with up(nats_server.url, tmp_path, ActorSpec(RECORDER)):
            await wait_for(lambda: len(helper_actors.SEEN) >= 12, 30, "first pass")
        info = await bus.js.stream_info(STREAM_EVENTS)
        helper_actors.SEEN.clear()
        # Replay the last 5 events: the consumer is recreated at that stream sequence.
        start = info.state.last_seq - 4
        async with up(nats_server.url, tmp_path, ActorSpec(RECORDER, replay_from=start)):
            await wait_for(lambda: len(helper_actors.SEEN) >= 5, 30, "the replay")
            await wait_for(lambda: drained(bus, "recorder"), 30, "every event acked")
        assert [pid for _, pid in helper_actors.SEEN] == [p for _, p in items[-5:]]
        await bus.close()

    anyio.run(main)


def test_two_partitions_split_the_tasks(nats_server: NatsServer, tmp_path: Path) -> None:
    helper_actors.SEEN.clear()
    tasks = [f"task{i:02d}" for i in range(30)]
    items = [(t, f"{t}-p{j}") for t in tasks for j in range(2)]

    async def main() -> None:
        bus = await connect(nats_server.url)
        specs = [ActorSpec(RECORDER, partition=(0, 2)), ActorSpec(RECORDER, partition=(1, 2))]
        async with up(nats_server.url, tmp_path, *specs) as system:
            await publish_evaluated(bus, items)
            await wait_for(lambda: len(helper_actors.SEEN) >= len(items), 60, "every event in some partition")
            await wait_for(lambda: drained(bus, "recorder-p0of2", "recorder-p1of2"), 30, "every event acked")
            owners = {r.worker_id: r.ctx.partition for r in system.runners}
            consumers = sorted(c.name for c in await bus.js.consumers_info(STREAM_EVENTS))
        assert {"recorder-p0of2", "recorder-p1of2"} <= set(consumers)
        by_task: dict[str, set[int]] = {}
        for worker, pid in helper_actors.SEEN:
            part = owners[worker]
            assert part is not None
            by_task.setdefault(pid.split("-")[0], set()).add(part[0])
        assert sorted(by_task) == tasks
        for t, parts in by_task.items():
            assert parts == {partition(t, 2)}, f"{t} seen by partitions {parts}"
        assert len(helper_actors.SEEN) == len(items)
        assert {p for parts in by_task.values() for p in parts} == {0, 1}, "one partition got nothing"
        # The shard lives in the subject, so the split needs no consumer to know the task list.
        assert evaluated_subject("task01").split(".")[3].isdigit()
        await bus.close()

    anyio.run(main)


def test_failing_event_is_dead_lettered_but_stays_for_other_readers(nats_server: NatsServer, tmp_path: Path) -> None:
    helper_actors.SEEN.clear()

    async def main() -> None:
        bus = await connect(nats_server.url)
        async with up(nats_server.url, tmp_path, ActorSpec(RECORDER)) as system:
            await publish_evaluated(bus, [("t1", "poison1"), ("t1", "fine1")])
            await wait_for(lambda: system.runners[0].counters.dead_lettered >= 1, 60, "the poison event dead-lettered")
            await wait_for(lambda: seen_by(system.runners[0].worker_id) == ["fine1"], 30, "the next event")
        dl = await dead_letters(bus, "recorder")
        assert len(dl) == 1 and "scripted failure" in dl[0].headers["Soar-Reason"]
        assert Evaluated.decode(dl[0].data).program_id == "poison1"
        # An event is a fact others read too: dead-lettering copies it, the stream keeps it.
        info = await bus.js.stream_info(STREAM_EVENTS, subjects_filter=evaluated_subject("t1"))
        assert info.state.messages == 2
        await bus.close()

    anyio.run(main)


def test_broadcast_reaches_every_worker(nats_server: NatsServer, tmp_path: Path) -> None:
    helper_actors.SEEN.clear()

    async def announce(bus: Bus, version: str) -> None:
        m = ModelUpdated(version=version)
        await bus.js_publish(m.subject(), m.encode(), msg_id=m.dedup_id())

    async def main() -> None:
        bus = await connect(nats_server.url)
        async with up(nats_server.url, tmp_path):
            pass
        await announce(bus, "v1")
        async with up(nats_server.url, tmp_path, ActorSpec(WATCHER), ActorSpec(WATCHER)) as system:
            a, b = (r.worker_id for r in system.runners)
            # Joining late, each worker first learns the current version.
            await wait_for(lambda: seen_by(a) == ["v1"] and seen_by(b) == ["v1"], 30, "v1 at both")
            await announce(bus, "v2")
            await announce(bus, "v3")
            await wait_for(lambda: seen_by(a) == seen_by(b) == ["v1", "v2", "v3"], 30, "v2 and v3 at both")
            async with up(nats_server.url, tmp_path, ActorSpec(WATCHER), owner=False) as late:
                c = late.runners[0].worker_id
                await wait_for(lambda: seen_by(c) == ["v3"], 30, "the latest version at a late joiner")
        await bus.close()

    anyio.run(main)
