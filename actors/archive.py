"""Archive: every program and every completion of its tasks, materialised into SQLite.

A durable, partitioned reader of `SearchTask`, `Proposals` and `Evaluated` (one consumer,
so a task's plan is stored before its programs), writing `archive*.sqlite` in the run
directory (`soar_async.search.store`). Every write is keyed, so a redelivered event changes
nothing. After each event it works out where the task stands and publishes a `TaskStatus`
when that changed in a way someone waits for (slots resolved, programs right, done).

It also reads the executors' dead letters: a program they gave up on (a machine fault) is
recorded as crashed on every input, so that its task does not wait for it forever.

It answers questions on `soar.q.archive.<shard>.<task>`: "status", "arms" (for REX),
"record", "records", "vote" and "dataset" (the task's relabelled training examples, built
here where the programs are, and handed over through the blob store).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

from soar_async.bus.topology import (
    EVT_EVALUATED,
    EVT_PROPOSALS,
    EVT_SEARCH,
    QUERY_ARCHIVE,
    STREAM_DLQ,
    dead_letter_subject,
    partition,
)
from soar_async.messages import (
    ArchiveAnswer,
    ArchiveQuery,
    DecodeError,
    Evaluated,
    EvaluatedBatch,
    ExecBatch,
    ExecRequest,
    Message,
    Proposals,
    SearchTask,
    TaskStatus,
)
from soar_async.runtime.actor import Actor, ActorContext, PermanentError, TransientError
from soar_async.runtime.client import publish_task_status
from soar_async.runtime.inputs import Events, Input, task_events
from soar_async.sandbox.types import ErrorKind
from soar_async.search.store import ArchiveStore, UnknownTask, store_name

_WATCHED = (
    "state",
    "correct",
    "sample_resolved",
    "refine_resolved",
    "sampling_settled",
    "generation",
)
"""Status fields whose change is published at once; other counters at most every second."""


class Archive(Actor[Message]):
    role: ClassVar[str] = "archive"
    inputs: ClassVar[tuple[Input, ...]] = (
        task_events(EVT_SEARCH, EVT_PROPOSALS, EVT_EVALUATED, max_deliver=20, ack_wait=15.0),
        # Execution requests the executors gave up on (a machine fault, not a failing
        # program): recorded as crashed, so that their task is not left waiting for them.
        Events(
            (dead_letter_subject("executor"),),
            None,  # ExecRequest or ExecBatch
            name="archive-dead-letters",
            stream=STREAM_DLQ,
            every_partition=True,
        ),
    )
    serves: ClassVar[str | None] = QUERY_ARCHIVE
    default_concurrency: ClassVar[int] = 16

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.store: ArchiveStore | None = None
        self._published: dict[str, tuple[tuple[Any, ...], tuple[Any, ...], float]] = {}
        self._status_locks: collections.defaultdict[str, anyio.Lock] = collections.defaultdict(anyio.Lock)

    async def setup(self) -> None:
        path = (self.ctx.run_dir or Path(".")) / store_name(self.ctx.partition)
        self.store = ArchiveStore(path)
        self.ctx.log.info("archive open", path=str(path), tasks=len(self.store.task_ids()))

    async def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    async def handle(self, msg: Message) -> None:
        store = self.store
        assert store is not None
        try:
            if isinstance(msg, SearchTask):
                try:
                    store.add_search(msg)
                except ValueError as e:
                    raise PermanentError(str(e)) from None
            elif isinstance(msg, Proposals):
                store.add_proposals(msg)
            elif isinstance(msg, Evaluated | EvaluatedBatch):
                try:
                    store.add_evaluated_many([msg] if isinstance(msg, Evaluated) else msg.items())
                except DecodeError as e:
                    raise PermanentError(e.reason) from None
                except ValueError as e:  # an event that contradicts its task: never storable
                    raise PermanentError(str(e)) from None
            elif isinstance(msg, ExecRequest | ExecBatch):
                if not self._settle_dead_letters(msg):
                    return
            else:
                return
            # Worked out and published under the task's lock: handlers run concurrently, and
            # each publish awaits the bus twice (key-value put, event), so without it a status
            # worked out earlier could go out after a later one, and a follower would see a
            # done task go back to running (and wait for it forever).
            async with self._status_locks[msg.task_id]:
                await self._maybe_publish(store.status(msg.task_id))
        except UnknownTask as e:
            # Its SearchTask may still be on the way (another partition count, a replay):
            # retried with backoff, dead-lettered with this reason if it never comes.
            raise TransientError(str(e)) from None

    def _settle_dead_letters(self, msg: ExecRequest | ExecBatch) -> bool:
        """Record the programs the executors gave up on as crashed on every input; False when
        they are not this partition's, or their task was never searched here."""
        assert self.store is not None
        part = self.ctx.partition
        if part is not None and partition(msg.task_id, part[1]) != part[0]:
            return False
        try:
            task = self.store.task(msg.task_id, msg.task_digest or None)
            requests = [msg] if isinstance(msg, ExecRequest) else msg.requests()
        except UnknownTask:
            return False
        except DecodeError as e:
            raise PermanentError(e.reason) from None
        n_in, n_train = len(task.train) + len(task.test), len(task.train)
        crashed = [
            Evaluated(
                program_id=req.program_id,
                task_id=req.task_id,
                code=req.code,
                outputs=[None] * n_in,
                errors=[ErrorKind.CRASH.value] * n_in,
                details=["given up on by the executors (dead-lettered)"] * n_in,
                train_correct=[False] * n_train,
                parent_id=req.parent_id,
                generation=req.generation,
                origin=req.origin,
                model_version=req.model_version,
                task_digest=req.task_digest,
                norm=req.norm,
            )
            for req in requests
        ]
        if added := self.store.add_evaluated_many(crashed):
            self.ctx.log.warning(
                "programs dead-lettered by the executors, recorded as crashed",
                programs=added,
                program_ids=",".join(r.program_id for r in requests),
            )
        return True

    async def _maybe_publish(self, st: TaskStatus) -> None:
        assert self.store is not None
        key = tuple(getattr(st, f) for f in _WATCHED)
        counts = (st.programs, st.pending, st.arms, st.tokens, st.best_fitness)
        last = self._published.get(st.task_id)
        now = time.monotonic()
        if last is not None and last[0] == key and (last[1] == counts or now - last[2] < 1.0):
            return
        self._published[st.task_id] = (key, counts, now)
        if st.state == "done" and (last is None or last[0][0] != "done"):
            self.store.mark_done(st.task_id, st.generation)
            self.ctx.log.info(
                "task done", programs=st.programs, correct=st.correct, best=round(st.best_fitness, 3), tokens=st.tokens
            )
        await publish_task_status(self.ctx.bus, [st])

    async def _dataset(self, store: ArchiveStore, query: ArchiveQuery) -> dict[str, Any]:
        """Relabel the task's programs (generations up to the query's) into chat examples,
        write them as JSONL to the blob store and say where, with what went in."""
        import json

        from soar_async.bus.topology import OBJ_BLOBS
        from soar_async.learn.dataset import task_examples

        train, p = self.ctx.config.train, query.params
        task = store.task(query.task_id)
        examples, stats = task_examples(
            task,
            store.records(query.task_id),
            sampling_per_task=int(p.get("sampling", train.sampling_examples_per_task)),
            refinement_per_task=int(p.get("refinement", train.refinement_examples_per_task)),
            up_to_generation=query.generation,
            test_time=p.get("test_time"),
            seed=int(p.get("seed", 0)),
        )
        name = str(p.get("name") or f"dataset/g{query.generation}/{query.task_id}.jsonl")
        blob = "".join(json.dumps(e) + "\n" for e in examples).encode()
        with anyio.fail_after(self.ctx.bus.cfg.request_timeout * 6):
            objects = await self.ctx.bus.js.object_store(OBJ_BLOBS)
            await objects.put(name, blob)
        return {"ref": name, "stats": stats.to_dict()}

    async def answer(self, query: Message) -> Message:
        store = self.store
        if store is None:
            return ArchiveAnswer(task_id="", what="", error="archive not open")
        if not isinstance(query, ArchiveQuery):
            return ArchiveAnswer(task_id="", what="", error=f"not an archive query: {type(query).__name__}")
        tid = query.task_id
        try:
            result: Any
            if query.what == "status":
                result = store.status(tid, query.generation).to_dict()
            elif query.what == "arms":
                gen = query.generation if query.generation is not None else store.latest_generation(tid) or 0
                asked = store.refinements_asked(tid, gen)
                result = {
                    "arms": [
                        {"program_id": a.program_id, "fitness": a.fitness, "island": a.island} for a in store.arms(tid)
                    ],
                    "asked": [[p, i, n] for (p, i), n in asked.items()],
                    "asked_any": bool(store.resolved_slots(tid, gen, "refine")),
                }
            elif query.what == "record":
                rec = store.record(query.program_id or "")
                if rec is None:
                    return ArchiveAnswer(task_id=tid, what=query.what, error=f"no program {query.program_id}")
                result = rec.to_dict()
            elif query.what == "records":
                result = [r.to_dict() for r in store.records(tid)]
            elif query.what == "dataset":
                result = await self._dataset(store, query)
            elif query.what == "vote":
                c, attempts = self.ctx.config.vote.c, self.ctx.config.vote.attempts
                result = store.attempts(tid, c=c, n_attempts=attempts)
            else:
                return ArchiveAnswer(task_id=tid, what=query.what, error=f"unknown query {query.what!r}")
        except UnknownTask as e:
            return ArchiveAnswer(task_id=tid, what=query.what, error=str(e))
        return ArchiveAnswer(task_id=tid, what=query.what, result=result)
