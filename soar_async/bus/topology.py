"""Subjects, streams, consumers and buckets: the whole bus layout, declared once.

Provisioning is idempotent: every process calls `provision()` at start; what exists is left
alone (so a worker joining from another machine cannot change queue settings under a
running system), what is missing is created. `update=True` (used by `soar up` and by the
test fixtures) also brings existing streams and consumers to the declared settings.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from soar_async.bus.conn import Bus, BusError
from soar_async.retry import retry

if TYPE_CHECKING:
    from soar_async.config import BusSettings

# Subjects -------------------------------------------------------------------------------
PREFIX = "soar"
WORK_EXEC = "soar.work.exec"
"""Execution requests (ExecRequest): a work queue, one consumer group `executor`."""
WORK_GEN = "soar.work.gen"
"""Generation requests (GenRequest) for LLM actors."""
WORK_TRAIN = "soar.work.train"
"""Training requests (TrainRequest) for the trainer."""
EVT_TASK_SUBMITTED = "soar.evt.task.submitted"
EVT_COMPLETIONS = "soar.evt.completions"
EVT_EVALUATED = "soar.evt.evaluated"
EVT_TASK_STATUS = "soar.evt.task.status"
EVT_MODEL_UPDATED = "soar.evt.model.updated"
EVT_SEARCH = "soar.evt.search"
"""`SearchTask`: a task's search starts (sharded like Evaluated)."""
EVT_PROPOSALS = "soar.evt.proposals"
"""`Proposals`: the programs one generation request yielded, or its slot skipped (sharded)."""
QUERY_ARCHIVE = "soar.q.archive"
"""Core NATS request/reply: `soar.q.archive.<shard>.<task>` reaches the archive owning the task."""
DEAD_LETTER = "soar.dlq"
"""`soar.dlq.<role>`: payloads that would not decode, validate or succeed; original bytes kept."""
LOG = "soar.log"
"""`soar.log.<actor>`: progress and log events, so `soar logs -f` works from any machine."""


EVALUATED_ALL = f"{EVT_EVALUATED}.>"
"""Every Evaluated event (one subject per task below it)."""


def subject_token(name: str) -> str:
    """A task id as one subject token: ARC ids pass unchanged, other characters become '_'.

    Work and results are published per task (`soar.work.exec.<task>`, `soar.evt.evaluated.<task>`)
    so that the server counts them per task for free: `soar status` reads queue depth and
    evaluated programs per task from stream info, no consumer needed.
    """
    tok = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64]
    return tok or "_"


def exec_subject(task_id: str) -> str:
    return f"{WORK_EXEC}.{subject_token(task_id)}"


SHARDS = 64
"""Evaluated events are spread over this many subject shards by task:
`soar.evt.evaluated.<shard>.<task>`. A partitioned reader (archive partition i of N) filters
on the shards s with s % N == i. The publisher never needs to know N, and N can be chosen
per deployment (up to SHARDS) without republishing anything."""


def shard(task_id: str) -> int:
    """The task's shard: crc32 of its subject token (stable across processes, unlike hash())."""
    return zlib.crc32(subject_token(task_id).encode()) % SHARDS


def partition(task_id: str, n: int) -> int:
    """Which of `n` partitions owns the task (DESIGN 2b); agrees with `partition_filters`."""
    return shard(task_id) % max(1, n)


def partition_filters(prefix: str, index: int, count: int) -> list[str]:
    """Subject filters below a sharded `prefix` for partition `index` of `count`."""
    return [f"{prefix}.{s}.>" for s in range(SHARDS) if s % count == index]


def gen_subject(task_id: str) -> str:
    return f"{WORK_GEN}.{subject_token(task_id)}"


def sharded(prefix: str, task_id: str) -> str:
    """`<prefix>.<shard>.<task>`: a per-task subject that partitioned readers can filter on."""
    return f"{prefix}.{shard(task_id)}.{subject_token(task_id)}"


def completions_subject(task_id: str) -> str:
    return sharded(EVT_COMPLETIONS, task_id)


def evaluated_subject(task_id: str) -> str:
    return sharded(EVT_EVALUATED, task_id)


def evaluated_filter(task_id: str) -> str:
    """Every Evaluated event of one task (whatever its shard)."""
    return f"{EVT_EVALUATED}.*.{subject_token(task_id)}"


def task_status_subject(task_id: str) -> str:
    """Where a task's status changes are published, so a reader can follow just its own tasks
    (sharded, so that a partitioned actor follows the tasks it owns)."""
    return sharded(EVT_TASK_STATUS, task_id)


def task_token_of(subject: str) -> str:
    """The task token of a per-task subject (`soar.work.exec.<task>`, `soar.evt.evaluated.<shard>.<task>`)."""
    return subject.rsplit(".", 1)[-1]


def dead_letter_subject(role: str) -> str:
    return f"{DEAD_LETTER}.{role}"


def log_subject(actor: str) -> str:
    return f"{LOG}.{actor}"


# Streams --------------------------------------------------------------------------------
STREAM_EXEC = "SOAR_EXEC"
STREAM_GEN = "SOAR_GEN"
STREAM_TRAIN = "SOAR_TRAIN"
STREAM_EVENTS = "SOAR_EVENTS"
STREAM_DLQ = "SOAR_DLQ"
STREAM_LOGS = "SOAR_LOGS"

KV_WORKERS = "soar_workers"
"""Worker registry: key `<role>.<worker id>` -> Heartbeat; entries expire (TTL) when a worker dies."""
KV_TASKS = "soar_tasks"
"""Task state: key = task id -> TaskStatus."""
KV_STATE = "soar_state"
"""The conductor's resume state and other small shared settings."""
OBJ_BLOBS = "soar_blobs"
"""Large payloads (task inputs, datasets) that travel by reference."""
OBJ_ADAPTERS = "soar_adapters"
"""LoRA adapters, one object per model version."""

DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A durable work queue: its stream, subject and the one consumer group that pulls from it."""

    stream: str
    subject: str
    durable: str
    ack_wait: float = 30.0
    max_deliver: int = 5
    max_ack_pending: int = 10_000


QUEUES: dict[str, QueueSpec] = {
    "exec": QueueSpec(STREAM_EXEC, WORK_EXEC, "executor"),
    "gen": QueueSpec(STREAM_GEN, WORK_GEN, "llm", ack_wait=30.0),  # long generations stay in progress
    # Training takes minutes to hours, kept "in progress" by the trainer's keepalive; the short
    # wait is how soon a killed trainer's request goes to the next one (which resumes it).
    "train": QueueSpec(STREAM_TRAIN, WORK_TRAIN, "trainer", ack_wait=30.0, max_deliver=3),
}


@dataclass(slots=True)
class Topology:
    """Everything to provision, with the knobs deployments and tests change.

    replicas: 1 on one machine, 3 on a 3-node cluster (every stream and bucket).
    ack_wait / max_deliver: overrides for every queue's consumer (tests use short ones so a
    killed worker's jobs come back within seconds).
    duplicate_window: how long the server remembers Nats-Msg-Id values; redelivered work
    published within it is stored once.
    """

    replicas: int = 1
    ack_wait: float | None = None
    max_deliver: int | None = None
    duplicate_window: float = 600.0
    worker_ttl: float = 15.0
    log_max_age: float = DAY
    log_max_bytes: int = 256 * 1024 * 1024
    event_max_age: float = 30 * DAY
    queues: dict[str, QueueSpec] = field(default_factory=lambda: dict(QUEUES))

    @classmethod
    def from_settings(cls, bus: BusSettings) -> Topology:
        """The configured layout: `[bus] ack_wait_s` and `max_deliver` tune the execution queue
        (its jobs take seconds); the generation and training queues keep their own (see QUEUES)."""
        topo = cls(replicas=bus.replicas)
        topo.queues["exec"] = replace(topo.queues["exec"], ack_wait=bus.ack_wait_s, max_deliver=bus.max_deliver)
        return topo

    def queue(self, name: str) -> QueueSpec:
        q = self.queues[name]
        return replace(
            q,
            ack_wait=self.ack_wait if self.ack_wait is not None else q.ack_wait,
            max_deliver=self.max_deliver if self.max_deliver is not None else q.max_deliver,
        )

    def _stream(self, name: str, subjects: list[str], description: str, **kw: Any) -> StreamConfig:
        """File storage and this topology's replicas, shared by every stream."""
        kw.setdefault("retention", RetentionPolicy.LIMITS)
        return StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            description=description,
            **kw,
        )

    def streams(self) -> list[StreamConfig]:
        dedup = {"duplicate_window": self.duplicate_window}
        out = [
            self._stream(
                q.stream,
                [q.subject, f"{q.subject}.>"],
                f"work queue {q.subject}",
                retention=RetentionPolicy.WORK_QUEUE,
                **dedup,
            )
            for q in self.queues.values()
        ]
        out += [
            self._stream(
                STREAM_EVENTS,
                ["soar.evt.>"],
                "facts: evaluated programs, completions, task status, model versions",
                max_age=self.event_max_age,
                **dedup,
            ),
            self._stream(
                STREAM_DLQ,
                [f"{DEAD_LETTER}.>"],
                "dead letters: original bytes plus reason headers",
                max_age=7 * DAY,
            ),
            self._stream(
                STREAM_LOGS,
                [f"{LOG}.>"],
                "structured log and progress events of every process",
                max_age=self.log_max_age,
                max_bytes=self.log_max_bytes,
                discard=DiscardPolicy.OLD,
            ),
        ]
        return out

    def consumer(self, name: str) -> tuple[str, ConsumerConfig]:
        q = self.queue(name)
        return q.stream, ConsumerConfig(
            name=q.durable,
            durable_name=q.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=q.ack_wait,
            max_deliver=q.max_deliver,
            max_ack_pending=q.max_ack_pending,
            max_waiting=512,
            num_replicas=self.replicas,
        )

    def kv(self) -> list[KeyValueConfig]:
        r = self.replicas
        return [
            KeyValueConfig(
                bucket=KV_WORKERS,
                history=1,
                ttl=self.worker_ttl,
                replicas=r,
                description="live workers (heartbeats expire)",
            ),
            KeyValueConfig(bucket=KV_TASKS, history=1, replicas=r, description="task state"),
            KeyValueConfig(bucket=KV_STATE, history=5, replicas=r, description="conductor state"),
        ]

    def objects(self) -> list[ObjectStoreConfig]:
        r = self.replicas
        return [
            ObjectStoreConfig(bucket=OBJ_BLOBS, replicas=r, description="large payloads by reference"),
            ObjectStoreConfig(bucket=OBJ_ADAPTERS, replicas=r, description="LoRA adapters"),
        ]


def _not_ready(e: BaseException) -> bool:
    """JetStream not answering yet (starting, electing a leader): worth asking again."""
    if isinstance(e, nats.js.errors.APIError) and not isinstance(e, nats.js.errors.ServiceUnavailableError):
        return e.code in (500, 503)
    return isinstance(
        e,
        nats.errors.TimeoutError
        | nats.errors.OutboundBufferLimitError  # disconnected: nothing is buffered for later
        | nats.js.errors.ServiceUnavailableError
        | nats.errors.NoRespondersError
        | nats.js.errors.NoStreamResponseError
        | TimeoutError,
    )


async def _retrying(what: str, fn: Callable[[], Awaitable[None]], timeout: float) -> None:
    await retry(fn, what=f"provisioning {what}", retry_if=_not_ready, timeout=timeout, cap=1.0, error=BusError)


async def provision(
    bus: Bus,
    topo: Topology | None = None,
    *,
    update: bool = False,
    queues: list[str] | None = None,
    timeout: float = 60.0,
) -> Topology:
    """Create missing streams, consumers, KV and object buckets; with `update`, reconcile settings."""
    topo = topo or Topology()
    js = bus.js
    for sc in topo.streams():

        async def ensure_stream(sc: StreamConfig = sc) -> None:
            try:
                await js.stream_info(sc.name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(sc)
                except nats.js.errors.BadRequestError as e:
                    if "already in use" not in str(e):
                        raise
                return
            if update:
                try:
                    await js.update_stream(sc)
                except nats.js.errors.BadRequestError:
                    pass  # a non-updatable field (e.g. replicas on a single server); keep the existing one

        await _retrying(f"stream {sc.name}", ensure_stream, timeout)

    for qname in queues if queues is not None else list(topo.queues):
        stream, cc = topo.consumer(qname)

        async def ensure_consumer(stream: str = stream, cc: ConsumerConfig = cc) -> None:
            try:
                await js.consumer_info(stream, cc.durable_name or "")
                if not update:
                    return
            except nats.js.errors.NotFoundError:
                pass
            await js.add_consumer(stream, cc)

        await _retrying(f"consumer {cc.durable_name}", ensure_consumer, timeout)

    for kc in topo.kv():

        async def ensure_kv(kc: KeyValueConfig = kc) -> None:
            try:
                await js.key_value(kc.bucket)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
                await js.create_key_value(kc)

        await _retrying(f"bucket {kc.bucket}", ensure_kv, timeout)

    for oc in topo.objects():

        async def ensure_obj(oc: ObjectStoreConfig = oc) -> None:
            try:
                await js.object_store(oc.bucket)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
                await js.create_object_store(oc.bucket, oc)

        await _retrying(f"object store {oc.bucket}", ensure_obj, timeout)
    return topo
