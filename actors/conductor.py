"""Conductor: SOAR's generation loop, search -> relabel -> train -> hot-swap -> search again.

It holds no state of its own but a small record in key-value storage (`soar_state`, key
`conductor`): the generation, the phase it is in, the model version serving the search and
a line per finished generation. Every phase is idempotent and its end is written before the
next begins, so a conductor killed at any point, restarted, picks up in the right phase:

- search: publish the generation's `SearchTask`s (the archive keeps one plan per task and
  generation; the proposer and refiner start a phase once) and follow them until every task
  is done (`soar_async.search.run.follow_search`);
- dataset: ask each task's archive for its relabelled examples (built where the programs
  are, handed over through the blob store), add the seed examples, store the generation's
  dataset once under a fixed name;
- train: publish one `TrainRequest` (dedup by its id) and wait for the `ModelUpdated` of the
  next generation (the trainer resumes from its checkpoint if it was killed);
- swap: wait until every live LLM worker serves the new version (requests name the version
  anyway, so a late worker never answers with the old model), then the next search.

`daemon.generations` searches, each after the previous one's training; 0 runs until stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import anyio
import nats.errors
import nats.js.errors

from soar_async.arc import Task, load_tasks
from soar_async.bus.conn import Bus
from soar_async.bus.topology import (
    EVT_MODEL_UPDATED,
    EVT_TASK_SUBMITTED,
    KV_STATE,
    OBJ_BLOBS,
    STREAM_DLQ,
    STREAM_EVENTS,
    dead_letter_subject,
)
from soar_async.learn.dataset import DatasetStats, seed_examples
from soar_async.messages import ArchiveQuery, DecodeError, Message, ModelUpdated, TrainRequest
from soar_async.runtime.actor import Actor, TransientError
from soar_async.runtime.inputs import Input
from soar_async.runtime.registry import live_workers
from soar_async.search.common import ask_archive
from soar_async.search.run import follow_search

STATE_KEY = "conductor"
SEARCH, DATASET, TRAIN, SWAP, DONE = "search", "dataset", "train", "swap", "done"
PHASES = (SEARCH, DATASET, TRAIN, SWAP, DONE)


@dataclass
class ConductorState:
    """What the conductor has done: enough to continue after a restart, and what `soar status` shows."""

    tasks: list[str] = field(default_factory=list)
    generation: int = 0
    phase: str = SEARCH
    model_version: str = ""
    """The version the current generation's search names ("": what the workers serve, the base)."""
    dataset_ref: str = ""
    train_request: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per finished search: generation, model version, programs, score, dataset, training."""
    updated_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConductorState:
        d = json.loads(data)
        if d.get("phase") not in PHASES:
            raise ValueError(f"conductor state names an unknown phase {d.get('phase')!r}")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def entry(self, generation: int) -> dict[str, Any]:
        for h in self.history:
            if h.get("generation") == generation:
                return h
        h = {"generation": generation}
        self.history.append(h)
        return h


async def load_state(bus: Bus) -> ConductorState | None:
    kv = await bus.js.key_value(KV_STATE)
    try:
        with anyio.fail_after(bus.cfg.request_timeout):
            entry = await kv.get(STATE_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return ConductorState.decode(entry.value or b"{}")


async def save_state(bus: Bus, state: ConductorState) -> None:
    state.updated_at = time.time()
    kv = await bus.js.key_value(KV_STATE)
    with anyio.fail_after(bus.cfg.request_timeout):
        await kv.put(STATE_KEY, state.encode())


class Conductor(Actor[Message]):
    role: ClassVar[str] = "conductor"
    inputs: ClassVar[tuple[Input, ...]] = ()

    async def setup(self) -> None:
        self.state: ConductorState | None = None

    async def main(self) -> None:
        cfg = self.ctx.config
        bus = self.ctx.bus
        continual = cfg.daemon.mode == "continual"
        tasks = await anyio.to_thread.run_sync(load_tasks, cfg.run.tasks) if cfg.run.tasks else []
        state = await load_state(bus)
        if state is None:
            state = ConductorState(tasks=[t.id for t in tasks])
            await save_state(bus, state)
        elif continual:
            # The tasks submitted so far, then those named now (a restart may name more).
            known = {t.id: t for t in tasks}
            for t in await self._submitted():
                known.setdefault(t.id, t)
            missing = [tid for tid in state.tasks if tid not in known]
            if missing:
                raise ValueError(f"the conductor's tasks {', '.join(missing[:5])} are neither named nor submitted")
            tasks = [known[tid] for tid in state.tasks] + [t for t in tasks if t.id not in state.tasks]
            state.tasks = [t.id for t in tasks]
        elif state.tasks != [t.id for t in tasks]:
            raise ValueError(
                f"this run's conductor searches {len(state.tasks)} other tasks ({', '.join(state.tasks[:5])}...); "
                "start a new run (another --run-dir) for other tasks"
            )
        self.state = state
        self.ctx.log.info("conductor running", generation=state.generation, phase=state.phase, tasks=len(tasks))
        while state.phase != DONE:
            if state.phase == SEARCH and continual:
                await self._search_continual(state, tasks)
            elif state.phase == SEARCH:
                await self._search(state, tasks)
            elif state.phase == DATASET:
                await self._dataset(state, tasks)
            elif state.phase == TRAIN:
                await self._train(state)
            elif state.phase == SWAP:
                await self._swap(state)
            await save_state(bus, state)
        self.ctx.log.info("conductor done", generations=state.generation + 1)

    def _last_generation(self, generation: int) -> bool:
        wanted = self.ctx.config.daemon.generations
        return wanted > 0 and generation + 1 >= wanted

    async def _search(self, state: ConductorState, tasks: list[Task]) -> None:
        gen = state.generation
        self.ctx.log.info("generation search", generation=gen, model_version=state.model_version or "base")
        outcome = await follow_search(
            self.ctx.bus, tasks, config=self.ctx.config, generation=gen, model_version=state.model_version
        )
        self._searched(state, tasks, outcome)
        state.phase = DONE if self._last_generation(gen) else DATASET

    async def _search_continual(self, state: ConductorState, tasks: list[Task]) -> None:
        """Search every task submitted so far with the current model; a task submitted meanwhile
        joins this generation at once. Once all are done and `daemon.train_after_programs` new
        programs have arrived, on to training; until then, wait for more tasks."""
        gen = state.generation
        bus = self.ctx.bus
        sub = await bus.nc.subscribe(f"{EVT_TASK_SUBMITTED}.>")
        try:
            for t in await self._submitted():  # submitted while no conductor listened
                if t.id not in state.tasks:
                    tasks.append(t)
                    state.tasks.append(t.id)
            await save_state(bus, state)
            while True:
                arrived: list[Task] = []
                enough = False
                async with anyio.create_task_group() as tg:

                    async def listen(scope: anyio.CancelScope = tg.cancel_scope, arrived: list[Task] = arrived) -> None:
                        async for m in sub.messages:
                            t = _submitted_task(m.data)
                            if t is not None and t.id not in state.tasks:
                                arrived.append(t)
                                scope.cancel()  # search again, with it
                                return

                    tg.start_soon(listen)
                    if tasks:
                        self.ctx.log.info("generation search", generation=gen, tasks=len(tasks), continual=True)
                        outcome = await follow_search(
                            bus, tasks, config=self.ctx.config, generation=gen, model_version=state.model_version
                        )
                        self._searched(state, tasks, outcome)
                        await save_state(bus, state)
                        new = state.entry(gen).get("programs", 0)
                        enough = new >= self.ctx.config.daemon.train_after_programs
                        if enough:
                            tg.cancel_scope.cancel()
                        else:
                            self.ctx.log.info("waiting for tasks", generation=gen, new_programs=new)
                for t in arrived:
                    self.ctx.log.info("task submitted", task_id=t.id, generation=gen)
                    tasks.append(t)
                    state.tasks.append(t.id)
                await save_state(bus, state)
                if enough and not arrived:
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
        state.phase = DONE if self._last_generation(gen) else DATASET

    async def _submitted(self) -> list[Task]:
        """Every task submitted to this system (the latest submission of each), oldest first."""
        bus = self.ctx.bus
        try:
            with anyio.fail_after(bus.cfg.request_timeout * 3):
                info = await bus.js.stream_info(STREAM_EVENTS, subjects_filter=f"{EVT_TASK_SUBMITTED}.>")
                out = []
                for subj in sorted(info.state.subjects or {}):
                    raw = await bus.js.get_last_msg(STREAM_EVENTS, subj)
                    t = _submitted_task(raw.data or b"")
                    if t is not None:
                        out.append((raw.seq, t))
        except nats.js.errors.NotFoundError:
            return []
        return [t for _, t in sorted(out, key=lambda x: x[0])]

    def _searched(self, state: ConductorState, tasks: list[Task], outcome: Any) -> None:
        gen = state.generation
        h = state.entry(gen)
        earlier = sum(x.get("programs", 0) for x in state.history if x.get("generation", 0) < gen)
        h.update(
            model_version=state.model_version or "base",
            tasks=len(tasks),
            programs=sum(st.programs for st in outcome.status.values()) - earlier,  # this generation's new ones
            tokens=sum(st.tokens for st in outcome.status.values()),
            right_on_train=sum(st.generation_correct > 0 for st in outcome.status.values()),
            solved=sum(s == 1.0 for s in outcome.scores.values()),
            score=sum(outcome.scores.values()) / len(tasks) if len(outcome.scores) == len(tasks) else None,
            search_s=round(outcome.seconds, 1),
        )
        self.ctx.log.info("generation searched", **h)

    async def _dataset(self, state: ConductorState, tasks: list[Task]) -> None:
        cfg = self.ctx.config
        gen = state.generation
        name = f"dataset/g{gen}.jsonl"
        test_time = True if cfg.daemon.mode == "test-time" else None
        stats = DatasetStats()
        lines: list[bytes] = []
        objects = await self.ctx.bus.js.object_store(OBJ_BLOBS)
        for t in tasks:
            got = await _retrying(
                lambda t=t: ask_archive(
                    self.ctx.bus,
                    ArchiveQuery(task_id=t.id, what="dataset", generation=gen, params={"test_time": test_time}),
                    timeout=120,
                )
            )
            stats.add(DatasetStats.from_dict(got["stats"]))
            blob = await objects.get(got["ref"])
            lines.extend(line for line in (blob.data or b"").splitlines(keepends=True) if line.strip())
        if cfg.daemon.seed_programs:
            seeds, seed_stats = await anyio.to_thread.run_sync(
                lambda: seed_examples(
                    cfg.daemon.seed_programs, [t.id for t in tasks], per_task=cfg.daemon.seed_examples_per_task
                )
            )
            stats.seed_examples = seed_stats.seed_examples
            lines.extend((json.dumps(e) + "\n").encode() for e in seeds)
        if not lines:
            raise ValueError(
                f"generation {gen}: no training example (no program passed the reuse filters and no seeds); "
                "set daemon.seed_programs (e.g. baseline:arc-agi-1:training[:30]) or search longer"
            )
        with anyio.fail_after(self.ctx.bus.cfg.request_timeout * 6):
            await objects.put(name, b"".join(lines))
        state.dataset_ref = name
        state.entry(gen)["dataset"] = stats.to_dict()
        self.ctx.log.info("generation dataset", generation=gen, ref=name, **stats.to_dict())
        state.phase = TRAIN

    async def _train(self, state: ConductorState) -> None:
        gen = state.generation
        request_id = state.train_request or f"train-g{gen}-{int(time.time())}"
        if not state.train_request:
            state.train_request = request_id
            await save_state(self.ctx.bus, state)  # the id is fixed before the request exists
        got = await self._published_update(gen + 1)
        if got is None:
            req = TrainRequest(request_id=request_id, dataset_ref=state.dataset_ref, generation=gen)
            await self.ctx.publish(req)
            self.ctx.log.info("training requested", generation=gen, request_id=request_id)
            got = await self._wait_update(state, gen + 1)
        state.entry(gen)["train"] = {"version": got.version, **got.train}
        state.model_version = got.version
        state.train_request = ""
        state.phase = SWAP

    async def _published_update(self, generation: int) -> ModelUpdated | None:
        """The last announced version, if it is the one for `generation` (a restart after training)."""
        try:
            with anyio.fail_after(self.ctx.bus.cfg.request_timeout):
                raw = await self.ctx.bus.js.get_last_msg(STREAM_EVENTS, EVT_MODEL_UPDATED)
            mu = ModelUpdated.decode(raw.data or b"")
        except (nats.js.errors.NotFoundError, DecodeError):
            return None
        return mu if mu.generation == generation else None

    async def _wait_update(self, state: ConductorState, generation: int) -> ModelUpdated:
        """The `ModelUpdated` of `generation`; a training the trainers gave up on (its request in
        their dead letters) fails the conductor rather than leave it waiting forever, with the
        phase set back so that the next start trains anew on a fresh request."""
        bus = self.ctx.bus
        updates = await bus.nc.subscribe(EVT_MODEL_UPDATED)
        dead = await bus.nc.subscribe(dead_letter_subject("trainer"))
        try:
            got = await self._published_update(generation)  # announced before we listened
            if got is not None:
                return got
            result: list[ModelUpdated] = []
            failure: list[str] = []
            async with anyio.create_task_group() as tg:

                async def on_update() -> None:
                    async for m in updates.messages:
                        try:
                            mu = ModelUpdated.decode(m.data)
                        except DecodeError:
                            continue
                        if mu.generation == generation:
                            result.append(mu)
                            tg.cancel_scope.cancel()
                            return

                async def on_dead_letter() -> None:
                    last = await _last_dead_training(bus)
                    msgs = [last] if last is not None else []
                    async for m in _chain(msgs, dead.messages):
                        req = _train_request(m.data)
                        if req is not None and req.request_id == state.train_request:
                            failure.append((m.headers or {}).get("Soar-Reason", "no reason given").split(" --- ")[0])
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(on_update)
                tg.start_soon(on_dead_letter)
            if result:
                return result[0]
            state.train_request, state.phase = "", DATASET
            await save_state(bus, state)
            raise ValueError(
                f"generation {generation - 1}: the trainer gave up on training ({failure[0] if failure else ''}); "
                "see `soar logs --actor trainer`; the next start of the daemon builds the data and trains again"
            )
        finally:
            with anyio.CancelScope(shield=True):
                await updates.unsubscribe()
                await dead.unsubscribe()

    async def _swap(self, state: ConductorState) -> None:
        """Wait (bounded) until every live LLM worker serves the new version."""
        version = state.model_version
        with anyio.move_on_after(self.ctx.config.daemon.swap_timeout_s) as scope:
            while True:
                llms = [hb for hb in await live_workers(self.ctx.bus) if hb.role == "llm"]
                if llms and all(hb.info.get("model_version") == version for hb in llms):
                    break
                await anyio.sleep(1.0)
        if scope.cancelled_caught:
            self.ctx.log.warning("not every LLM worker took up the new version in time", version=version)
        self.ctx.log.info("model swapped", version=version, generation=state.generation + 1)
        state.generation += 1
        state.phase = SEARCH

    def status(self) -> dict[str, Any]:
        st = getattr(self, "state", None)
        if st is None:
            return {}
        return {"generation": st.generation, "phase": st.phase, "model_version": st.model_version or "base"}


def _train_request(data: bytes) -> TrainRequest | None:
    try:
        return TrainRequest.decode(data)
    except DecodeError:
        return None


async def _last_dead_training(bus: Bus) -> Any:
    """The trainers' last dead letter (a failure while no conductor listened), if any."""
    try:
        with anyio.fail_after(bus.cfg.request_timeout):
            return await bus.js.get_last_msg(STREAM_DLQ, dead_letter_subject("trainer"))
    except nats.js.errors.NotFoundError:
        return None


async def _chain(first: list[Any], rest: Any) -> Any:
    for m in first:
        yield m
    async for m in rest:
        yield m


def _submitted_task(data: bytes) -> Task | None:
    """The task a `TaskSubmitted` carries inline; None (logged by nobody: a bad submission is
    refused by `soar submit` before it is sent) when it cannot be read."""
    from soar_async.arc import parse_task
    from soar_async.messages import TaskSubmitted

    try:
        msg = TaskSubmitted.decode(data)
        return parse_task(msg.task_id, msg.task) if msg.task is not None else None
    except (DecodeError, ValueError, KeyError, TypeError):
        return None


async def _retrying(fn: Any, attempts: int = 30) -> Any:
    """An archive question during a restart of the archive: ask again for a while."""
    for i in range(attempts):
        try:
            return await fn()
        except (TransientError, nats.errors.Error):
            if i == attempts - 1:
                raise
            await anyio.sleep(2.0)
    raise AssertionError("unreachable")
