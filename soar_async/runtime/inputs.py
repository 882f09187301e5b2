"""What an actor listens to: three kinds of input, all served by one pull loop.

- `WorkQueue`: jobs that must be done once by someone (execution, generation, training
  requests). Every worker of the role pulls from one shared durable consumer on a
  work-queue stream; an acked job is gone.
- `Events`: facts that a role must see all of, once, in order of arrival, surviving
  restarts (the archive reading every `Evaluated`). A durable consumer on the events
  stream remembers the position; it can be replayed from any sequence, and split into
  partitions by task so that N workers each own a share of the tasks (DESIGN 2b).
- `Broadcast`: facts that every worker must see (each LLM worker must load each
  `ModelUpdated`). Each worker gets its own consumer, which the server deletes once the
  worker has been gone for a while; a late joiner starts from the latest fact.

Each kind only decides who shares the consumer and where it starts. `open()` resolves it
for one worker to a `Feed` (stream + consumer + delivery settings); fetching, acking,
retrying, dead-lettering and draining are the runner's, identical for all three.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal, Protocol

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from soar_async.bus.conn import Bus, BusError
from soar_async.bus.topology import SHARDS, STREAM_EVENTS, Topology, partition_filters, provision
from soar_async.messages import Message

Partition = tuple[int, int]
"""(index, count): this worker owns the tasks whose shard % count == index."""


@dataclass(frozen=True, slots=True)
class Feed:
    """One worker's pull consumer for one input, as the runner needs it.

    Attributes:
        stream: the JetStream stream the consumer reads.
        consumer: the consumer's name (durable for work queues and events, per worker for
            broadcasts).
        subject: what it reads, for log lines and dead-letter headers.
        message: the message class expected, or None to decode by the payload's type tag.
        ack_wait: seconds before an unacked delivery is redelivered.
        max_deliver: deliveries before the message is dead-lettered.
        remove_dead: whether a dead-lettered message is also deleted from its stream. Only
            for work queues: an event stays for its other readers.
    """

    stream: str
    consumer: str
    subject: str
    message: type[Message] | None
    ack_wait: float
    max_deliver: int
    remove_dead: bool


class Input(Protocol):
    """Anything that can give one worker a Feed."""

    async def open(
        self, bus: Bus, topology: Topology, *, role: str, worker_id: str, partition: Partition | None
    ) -> Feed: ...


@dataclass(frozen=True, slots=True)
class WorkQueue:
    """A work queue of the topology (`"exec"`, `"gen"`, `"train"`), shared by every worker of the role.

    Attributes:
        queue: the queue's name in `Topology.queues`.
        message: the job's message class, or None to decode by the payload's type tag (a
            queue that carries more than one kind of job).
    """

    queue: str
    message: type[Message] | None

    async def open(
        self, bus: Bus, topology: Topology, *, role: str, worker_id: str, partition: Partition | None
    ) -> Feed:
        if partition is not None:
            raise ValueError(f"{role}: work queue {self.queue!r} cannot be partitioned (any worker takes any job)")
        # A joining worker makes sure its queue exists, never changes settings under a running system.
        await provision(bus, topology, queues=[self.queue])
        q = topology.queue(self.queue)
        ack_wait, max_deliver = q.ack_wait, q.max_deliver
        try:
            ci = await bus.js.consumer_info(q.stream, q.durable)
            # Whoever provisioned the consumer decided its settings: use the real ones.
            ack_wait = float(ci.config.ack_wait or ack_wait)
            if ci.config.max_deliver and ci.config.max_deliver > 0:
                max_deliver = int(ci.config.max_deliver)
        except nats.js.errors.NotFoundError as e:
            raise BusError(f"consumer {q.durable} on {q.stream} vanished after provisioning") from e
        return Feed(q.stream, q.durable, q.subject, self.message, ack_wait, max_deliver, remove_dead=True)


@dataclass(frozen=True, slots=True)
class Events:
    """Every event on `subjects`, once, in stream order, from a durable position.

    Attributes:
        subjects: subject filters on the events stream (wildcards allowed).
        message: the event class, or None to accept any message type (decoded by its tag).
        name: consumer name; default: the role. A partitioned worker appends `-p<i>of<n>`.
        shard_prefix: for partitioning: the subject prefix (or prefixes, one per subject)
            below which events carry their task's shard (`soar.evt.evaluated`); a
            partitioned worker then filters on its shards instead of `subjects`.
        start: where a new consumer starts: "all" (replay everything stored) or "new".
        ack_wait: seconds before an unacked event is redelivered.
        max_deliver: deliveries before an event that keeps failing is dead-lettered (copied,
            not removed: other readers still see it).
        replay_from: recreate the consumer at this stream sequence (re-process from there).
        stream: the stream to read: the events stream, or the dead-letter stream for an actor
            that settles what the others gave up on (the archive).
        every_partition: for subjects that carry no shard (dead letters): every partition
            reads them all, and the actor keeps what belongs to its own tasks.
    """

    subjects: tuple[str, ...]
    message: type[Message] | None = None
    name: str = ""
    shard_prefix: str | tuple[str, ...] | None = None
    start: Literal["all", "new"] = "all"
    ack_wait: float = 30.0
    max_deliver: int = 5
    replay_from: int | None = None
    stream: str = STREAM_EVENTS
    every_partition: bool = False

    def consumer_name(self, role: str, partition: Partition | None) -> str:
        base = self.name or role
        return base if partition is None else f"{base}-p{partition[0]}of{partition[1]}"

    def filters(self, partition: Partition | None) -> list[str]:
        if partition is None or (self.shard_prefix is None and self.every_partition):
            return sorted(self.subjects)
        if self.shard_prefix is None:
            raise ValueError(f"events on {', '.join(self.subjects)} are not sharded by task: cannot partition")
        index, count = partition
        if not (1 <= count <= SHARDS and 0 <= index < count):
            raise ValueError(f"partition {index} of {count}: need 0 <= index < count <= {SHARDS}")
        prefixes = (self.shard_prefix,) if isinstance(self.shard_prefix, str) else self.shard_prefix
        return sorted(f for p in prefixes for f in partition_filters(p, index, count))

    async def open(
        self, bus: Bus, topology: Topology, *, role: str, worker_id: str, partition: Partition | None
    ) -> Feed:
        name = self.consumer_name(role, partition)
        filters = self.filters(partition)
        cc = ConsumerConfig(
            name=name,
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if self.start == "all" else DeliverPolicy.NEW,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=10_000,
            max_waiting=512,
            num_replicas=topology.replicas,
            **_filter_kw(filters),
        )
        if self.replay_from is not None:
            try:
                await bus.js.delete_consumer(self.stream, name)
            except nats.js.errors.NotFoundError:
                pass
            cc.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            cc.opt_start_seq = max(1, self.replay_from)
            await bus.js.add_consumer(self.stream, cc)
        else:
            try:
                ci = await bus.js.consumer_info(self.stream, name)
                one = ci.config.filter_subject
                have = sorted(ci.config.filter_subjects or ([one] if one else []))
                if have != filters:
                    # Same position, new filters (e.g. the partition count changed).
                    current = ci.config
                    current.filter_subject, current.filter_subjects = None, None
                    for k, v in _filter_kw(filters).items():
                        setattr(current, k, v)
                    await bus.js.add_consumer(self.stream, current)
            except nats.js.errors.NotFoundError:
                await bus.js.add_consumer(self.stream, cc)
        subject = ",".join(filters) if len(filters) <= 3 else f"{filters[0]},... ({len(filters)} filters)"
        return Feed(self.stream, name, subject, self.message, self.ack_wait, self.max_deliver, remove_dead=False)


def task_events(*prefixes: str, **kw: object) -> Events:
    """Every event below these sharded subject prefixes, on one consumer (so in stream order),
    partitionable by task: what the search's actors read."""
    return Events(tuple(f"{p}.>" for p in prefixes), None, shard_prefix=prefixes, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Every event on `subjects`, to every worker: a consumer of its own per worker.

    Attributes:
        subjects: subject filters on the events stream.
        message: the event class, or None to decode by the payload's tag.
        start: "last": the latest event of each subject first, then new ones (a late joiner
            learns the current model version); "new": only what comes after joining; "all".
        idle_timeout: seconds after which the server deletes the consumer of a worker that
            stopped pulling (died without cleaning up).
        ack_wait / max_deliver: as for `Events`.
    """

    subjects: tuple[str, ...]
    message: type[Message] | None = None
    start: Literal["last", "new", "all"] = "last"
    idle_timeout: float = 300.0
    ack_wait: float = 30.0
    max_deliver: int = 5

    async def open(
        self, bus: Bus, topology: Topology, *, role: str, worker_id: str, partition: Partition | None
    ) -> Feed:
        filters = sorted(self.subjects)
        tag = format(zlib.crc32(",".join(filters).encode()) & 0xFFFF, "04x")
        name = f"{worker_id}-bc{tag}"
        policy = {
            "last": DeliverPolicy.LAST_PER_SUBJECT,
            "new": DeliverPolicy.NEW,
            "all": DeliverPolicy.ALL,
        }[self.start]
        cc = ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=policy,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            inactive_threshold=self.idle_timeout,
            num_replicas=1,
            mem_storage=True,
            **_filter_kw(filters),
        )
        await bus.js.add_consumer(STREAM_EVENTS, cc)
        return Feed(STREAM_EVENTS, name, ",".join(filters), self.message, self.ack_wait, self.max_deliver, False)


def _filter_kw(filters: list[str]) -> dict[str, object]:
    """One filter as `filter_subject` (every server version), several as `filter_subjects` (2.10+)."""
    return {"filter_subject": filters[0]} if len(filters) == 1 else {"filter_subjects": filters}
