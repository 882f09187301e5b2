"""Proposer: keeps each searched task's sampling requests in flight until its budget is spent.

On a task's `SearchTask` it sends the first `search.requests_in_flight` sampling requests;
each `Completions` that comes back is turned into execution requests (one per new program;
a completion without a program is recorded as such) and a `Proposals` record, and sends the
next slot of its chain, unless the task already has `stop_after_correct` programs right on
every train pair: then the rest of the chain is resolved as skipped. Nothing is kept that a
restart would lose: the slot numbers ride in the requests, the start is claimed once.
"""

from __future__ import annotations

from typing import Any, ClassVar

from soar_async.bus.topology import EVT_COMPLETIONS, EVT_SEARCH
from soar_async.messages import Completions, Message, SearchTask
from soar_async.prompts import sampling_messages
from soar_async.runtime.actor import Actor, ActorContext
from soar_async.runtime.client import put_task_inputs
from soar_async.runtime.inputs import Input, task_events
from soar_async.search.common import (
    Plans,
    Proposing,
    begin,
    chain,
    claim_key,
    gen_request,
    should_stop,
    skipped,
    slot_of,
    started,
)
from soar_async.search.plan import SAMPLE, Plan


class Proposer(Actor[Message]):
    role: ClassVar[str] = "proposer"
    inputs: ClassVar[tuple[Input, ...]] = (task_events(EVT_SEARCH, EVT_COMPLETIONS, ack_wait=15.0),)
    default_concurrency: ClassVar[int] = 8

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.plans = Plans(ctx.bus)
        self.proposing = Proposing()
        self._prompts: dict[tuple[str, str], list[dict[str, str]]] = {}

    def prompt(self, plan: Plan) -> list[dict[str, str]]:
        """The task's sampling prompt, rendered once (printing the grids costs ~13 ms a time)."""
        key = (plan.task.id, plan.task.digest)
        if key not in self._prompts:
            self._prompts[key] = sampling_messages(plan.task)  # type: ignore[assignment]
        return self._prompts[key]

    async def handle(self, msg: Message) -> list[Any] | None:
        search = self.ctx.config.search
        if isinstance(msg, SearchTask):
            plan = self.plans.add(msg)
            n = plan.slots(SAMPLE)
            if n == 0:
                return None
            # The task's grids go to the object store once; execution requests name them.
            await put_task_inputs(self.ctx.bus, plan.task)
            key = claim_key(SAMPLE, plan)
            if not await begin(self.ctx.bus, key):
                self.ctx.log.info("sampling already started", generation=plan.generation)
                return None
            for s in range(min(plan.window, n)):
                await self.ctx.publish(gen_request(plan, SAMPLE, s, self.prompt(plan), search))
            await started(self.ctx.bus, key)
            self.ctx.log.info("sampling started", slots=n, generation=plan.generation)
            return None
        if not isinstance(msg, Completions) or msg.kind != SAMPLE:
            return None  # refinements are the refiner's
        plan = await self.plans.get(msg.task_id, msg.generation)
        if plan is None:
            self.ctx.log.warning("completions of no known search, ignored", generation=msg.generation)
            return None
        slot = slot_of(msg, plan)
        out = self.proposing.process(plan, msg, origin=SAMPLE, batch=search.exec_batch)
        rest = chain(plan, SAMPLE, slot)
        if rest:
            if await should_stop(self.ctx.bus, plan):
                out += skipped(plan, SAMPLE, rest)
            else:
                out.append(gen_request(plan, SAMPLE, rest[0], self.prompt(plan), search))
        return out

    def ids(self, msg: Message) -> dict[str, Any]:
        return {k: getattr(msg, k) for k in ("task_id", "request_id") if hasattr(msg, k)}
