"""Refiner: REX over each task's programs, asking the LLM to repair the most promising ones.

It reads every `Evaluated` of its tasks: a program that ran without error on every input is
an arm (a sample joins every island, a refinement only its parent's island). As soon as a
task has arms, while its sampling may still be running, the refiner sends the first
`requests_in_flight` refinement requests, one island each in turn; each `Completions` that
comes back is turned into execution requests and a `Proposals` record, and sends the next
slot of its chain with a parent freshly chosen by Thompson sampling on that island, unless
the task has enough right programs (the rest of the chain is skipped). A task whose
sampling settled without a single arm skips all its refinement slots.

REX state lives in memory; after a restart it is rebuilt from the archive (arms, their
islands, and how often each was refined), so the search goes on where it was.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from soar_async.bus.topology import EVT_COMPLETIONS, EVT_EVALUATED, EVT_SEARCH, EVT_TASK_STATUS
from soar_async.messages import (
    ArchiveQuery,
    Completions,
    DecodeError,
    Evaluated,
    EvaluatedBatch,
    Message,
    SearchTask,
    TaskStatus,
)
from soar_async.prompts import refine_messages
from soar_async.records import ProgramRecord
from soar_async.rex import RexForest
from soar_async.runtime.actor import Actor, ActorContext, PermanentError
from soar_async.runtime.client import put_task_inputs
from soar_async.runtime.inputs import Input, task_events
from soar_async.search.common import (
    Plans,
    Proposing,
    ask_archive,
    begin,
    chain,
    claim_key,
    gen_request,
    should_stop,
    skipped,
    slot_of,
    started,
)
from soar_async.search.plan import REFINE, SAMPLE, Plan


@dataclass(slots=True)
class TaskRex:
    """One task's refinement state in one generation."""

    plan: Plan
    forest: RexForest
    records: dict[str, ProgramRecord] = field(default_factory=dict)
    """Records of arms seen in this process (parents' prompts need their outputs)."""
    island_of: dict[str, int] = field(default_factory=dict)
    """Children proposed by this process -> the island of the request that wrote them."""
    started: bool = False


class Refiner(Actor[Message]):
    role: ClassVar[str] = "refiner"
    inputs: ClassVar[tuple[Input, ...]] = (
        task_events(EVT_SEARCH, EVT_EVALUATED, EVT_COMPLETIONS, EVT_TASK_STATUS, ack_wait=15.0),
    )
    default_concurrency: ClassVar[int] = 8

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.plans = Plans(ctx.bus)
        self.proposing = Proposing()
        self.tasks: dict[tuple[str, int], TaskRex] = {}

    def _fresh(self, plan: Plan) -> TaskRex:
        s = self.ctx.config.search
        return TaskRex(plan, RexForest(plan.task.id, n_islands=s.rex_islands, seed=s.seed, c=s.rex_c))

    async def _state(self, plan: Plan) -> TaskRex:
        """This task's REX state, rebuilt from the archive when this process has none."""
        st = self.tasks.get((plan.task.id, plan.generation))
        return st if st is not None else await self._load(plan, None)

    async def _load(self, plan: Plan, st: TaskRex | None) -> TaskRex:
        """Add the archive's arms (with their islands and refinement counts) to `st` or a fresh state."""
        key = (plan.task.id, plan.generation)
        got = await ask_archive(
            self.ctx.bus, ArchiveQuery(task_id=plan.task.id, what="arms", generation=plan.generation)
        )
        if st is None:
            st = self.tasks.get(key) or self._fresh(plan)
        n = st.forest.n_islands
        for arm in got["arms"]:
            if any(arm["program_id"] in isl for isl in st.forest.islands):
                continue
            if arm["island"] is None:
                st.forest.add_root(arm["program_id"], arm["fitness"])
            else:
                st.forest.add_child(arm["island"] % n, arm["program_id"], arm["fitness"])
        if key not in self.tasks:  # counts only for a state rebuilt after a restart
            for parent, island, times in got["asked"]:
                isl = st.forest.islands[island % n]
                if parent in isl:
                    isl.record_refinement(parent, times)
            st.started = st.started or got["asked_any"]
        self.tasks[key] = st
        self.ctx.log.info("REX arms loaded from the archive", arms=st.forest.n_arms)
        return st

    async def handle(self, msg: Message) -> list[Any] | None:
        if isinstance(msg, SearchTask):
            plan = self.plans.add(msg)
            if plan.slots(REFINE):
                await put_task_inputs(self.ctx.bus, plan.task)  # the proposer stores them too: same name, same bytes
            self.tasks.setdefault((plan.task.id, plan.generation), self._fresh(plan))
            return None
        if isinstance(msg, Evaluated):
            return await self._on_evaluated([msg])
        if isinstance(msg, EvaluatedBatch):
            try:
                return await self._on_evaluated(msg.items())
            except DecodeError as e:
                raise PermanentError(e.reason) from None
        if isinstance(msg, Completions) and msg.kind == REFINE:
            return await self._on_completions(msg)
        if isinstance(msg, TaskStatus):
            return await self._on_status(msg)
        return None

    async def _on_evaluated(self, evs: list[Evaluated]) -> list[Any] | None:
        """New arms (programs of one task and generation: an event or a batch) join REX."""
        if not evs:
            return None
        plan = await self.plans.get(evs[0].task_id, evs[0].generation)
        if plan is None or plan.slots(REFINE) == 0:  # sent outside a search, or nothing to refine
            return None
        st = await self._state(plan)
        for ev in evs:
            rec = ProgramRecord.from_evaluated(plan.task, ev)
            if rec.raised_any:
                continue
            st.records[rec.id] = rec
            if rec.origin == SAMPLE or rec.parent_id is None:
                st.forest.add_root(rec.id, rec.train_accuracy)
            else:
                island = st.island_of.pop(rec.id, None)
                if island is None:  # proposed before a restart: any island is as good a guess
                    island = zlib.crc32(rec.id.encode()) % st.forest.n_islands
                st.forest.add_child(island, rec.id, rec.train_accuracy)
        await self._start(st)
        return None

    async def _start(self, st: TaskRex) -> None:
        """Send the first refinement requests of the task, once (claimed in the KV store)."""
        if st.started or st.forest.n_arms == 0:
            return
        st.started = True
        plan = st.plan
        key = claim_key(REFINE, plan)
        if not await begin(self.ctx.bus, key):
            return
        first = min(plan.window, plan.slots(REFINE))
        for slot in range(first):
            await self.ctx.publish(await self._request(st, slot))
        await started(self.ctx.bus, key)
        self.ctx.log.info("refinement started", slots=plan.slots(REFINE), arms=st.forest.n_arms)

    async def _on_completions(self, msg: Completions) -> list[Any] | None:
        plan = await self.plans.get(msg.task_id, msg.generation)
        if plan is None:
            self.ctx.log.warning("completions of no known search, ignored", generation=msg.generation)
            return None
        st = await self._state(plan)
        slot = slot_of(msg, plan)
        island = msg.meta.get("island")
        island = island if isinstance(island, int) else slot % st.forest.n_islands
        out = self.proposing.process(plan, msg, origin=REFINE, island=island, batch=self.ctx.config.search.exec_batch)
        for e in out[-1].entries:
            if e["program_id"] is not None:
                st.island_of.setdefault(e["program_id"], island)
        rest = chain(plan, REFINE, slot)
        if rest:
            if await should_stop(self.ctx.bus, plan):
                out += skipped(plan, REFINE, rest)
            else:
                out.append(await self._request(st, rest[0]))
        return out

    async def _on_status(self, status: TaskStatus) -> list[Any] | None:
        """Start or close refinement from what the archive knows.

        Arms the refiner never saw as `Evaluated` (programs imported into the archive, or
        arms of an earlier process) start it; a task whose sampling settled without a single
        arm cannot refine: its slots are resolved as skipped."""
        if status.refine_slots == 0:
            return None
        plan = await self.plans.get(status.task_id, status.generation)
        if plan is None:
            return None
        st = self.tasks.get((plan.task.id, plan.generation))
        if st is not None and st.started:
            return None
        if status.arms > 0:
            if st is None or st.forest.n_arms < status.arms:
                st = await self._load(plan, self.tasks.get((plan.task.id, plan.generation)))
            await self._start(st)
            return None
        if not status.sampling_settled:
            return None
        key = claim_key(REFINE, plan)
        if not await begin(self.ctx.bus, key):
            return None
        for p in skipped(plan, REFINE, range(plan.slots(REFINE))):
            await self.ctx.publish(p)
        await started(self.ctx.bus, key)
        self.ctx.log.info("nothing to refine: every sampled program failed", slots=plan.slots(REFINE))
        return None

    async def _request(self, st: TaskRex, slot: int) -> Any:
        """The refinement request of `slot`: a parent chosen by REX on the slot's island."""
        n = st.forest.n_islands
        island = slot % n
        parent = st.forest.select(island)
        if parent is None:  # this island has no arm yet (only children elsewhere): borrow one
            for other in range(n):
                parent = st.forest.select(other)
                if parent is not None:
                    island = other
                    break
        if parent is None:
            raise PermanentError(f"refinement slot {slot} of {st.plan.task.id} has no parent to refine")
        rec = st.records.get(parent)
        if rec is None:
            q = ArchiveQuery(task_id=st.plan.task.id, what="record", program_id=parent)
            rec = ProgramRecord.from_dict(await ask_archive(self.ctx.bus, q))
            st.records[parent] = rec
        messages = refine_messages(st.plan.task, rec)
        return gen_request(st.plan, REFINE, slot, messages, self.ctx.config.search, parent_id=parent, island=island)

    def ids(self, msg: Message) -> dict[str, Any]:
        return {k: getattr(msg, k) for k in ("task_id", "program_id", "request_id") if hasattr(msg, k)}
