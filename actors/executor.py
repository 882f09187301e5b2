"""Executor: execution requests in, evaluated programs out, through the wasm sandbox pool.

Behaviour only; the runtime pulls, acks, retries, dead-letters and heartbeats. The output
carries the program id and is published with a dedup id derived from it, so a redelivered
request (worker killed after publishing, before acking) leaves one Evaluated downstream.

A program that fails (raises, times out, returns garbage) is a *result*, not an error: it is
evaluated with its per-input error kinds. Only infrastructure failures (sandbox crashed, a
referenced blob missing) go through nak / dead letter.
"""

from __future__ import annotations

import collections
from typing import Any, ClassVar

import anyio
import msgpack

from soar_async.arc import Grid
from soar_async.bus.topology import OBJ_BLOBS
from soar_async.messages import DecodeError, Evaluated, EvaluatedBatch, ExecBatch, ExecRequest, Message
from soar_async.runtime.actor import Actor, ActorContext, PermanentError, TransientError, current_deliveries
from soar_async.runtime.inputs import Input, WorkQueue
from soar_async.sandbox.pool import available_cores
from soar_async.sandbox.types import ErrorKind
from soar_async.scoring import correctness


class Executor(Actor[Message]):
    role: ClassVar[str] = "executor"
    inputs: ClassVar[tuple[Input, ...]] = (WorkQueue("exec", None),)
    """`ExecRequest`s (one program) and `ExecBatch`es (the programs of one completion batch)."""
    default_concurrency: ClassVar[int] = 2 * available_cores()

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.pool: Any = None
        self._blobs: collections.OrderedDict[str, tuple[list[Grid], list[Grid | None] | None]] = (
            collections.OrderedDict()
        )
        """Inputs by reference name (a name never changes content), most recently used last."""
        self._fetching = anyio.Lock()

    async def setup(self) -> None:
        from soar_async.sandbox import Limits, SandboxPool, ensure_built
        from soar_async.sandbox.build import is_built

        # The first build compiles the wasm module (minutes); later starts load the cache.
        # Both that and the pool's start (spawning worker processes) block: keep them off the loop.
        if not is_built():
            self.ctx.log.info("building the wasm sandbox (first run on this machine: about 2 minutes)")
        await anyio.to_thread.run_sync(ensure_built)
        sb = self.ctx.config.sandbox
        limits = Limits.from_settings(sb)
        # Programs in flight (concurrency) exceed the sandbox processes (one per core by
        # default) so that fetching, publishing and acking overlap execution: with one job per
        # process, each process would idle for the bus round trips between its programs.
        workers = sb.workers or min(self.ctx.concurrency, available_cores())
        self.pool = await anyio.to_thread.run_sync(lambda: SandboxPool(workers=workers, limits=limits))
        self.ctx.log.info("sandbox pool ready", workers=workers, wall_s=limits.wall_s, memory_mb=limits.memory_mb)

    async def teardown(self) -> None:
        if self.pool is not None:
            await anyio.to_thread.run_sync(self.pool.close)
            self.pool = None

    async def _load_ref(self, ref: str) -> tuple[list[Grid], list[Grid | None] | None]:
        """Inputs stored in the object store (large tasks travel by reference), cached per worker."""
        if ref in self._blobs:
            self._blobs.move_to_end(ref)
            return self._blobs[ref]
        async with self._fetching:  # the first programs of a task arrive together: fetch once
            if ref in self._blobs:
                return self._blobs[ref]
            return await self._fetch_ref(ref)

    async def _fetch_ref(self, ref: str) -> tuple[list[Grid], list[Grid | None] | None]:
        import nats.js.errors

        try:
            with anyio.fail_after(30):
                store = await self.ctx.bus.js.object_store(OBJ_BLOBS)
                res = await store.get(ref)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            raise PermanentError(f"inputs_ref {ref!r} not found in object store {OBJ_BLOBS}") from None
        except TimeoutError:
            raise TransientError(f"timed out fetching inputs_ref {ref!r}") from None
        try:
            blob = msgpack.unpackb(res.data or b"", raw=False)
            value = (list(blob["inputs"]), blob.get("train_outputs"))
        except Exception as e:
            raise PermanentError(f"inputs_ref {ref!r} is not a msgpack map with 'inputs': {e}") from None
        self._blobs[ref] = value
        while len(self._blobs) > 256:
            self._blobs.popitem(last=False)
        return value

    async def handle(self, msg: Message) -> Evaluated | EvaluatedBatch:
        if isinstance(msg, ExecRequest):
            return await self._evaluate(msg)
        if not isinstance(msg, ExecBatch):
            raise PermanentError(f"not an execution request: {msg.TYPE}")
        try:
            requests = msg.requests()
        except DecodeError as e:
            raise PermanentError(e.reason) from None
        # Every program of the batch at once: the pool runs `workers` of them at a time and
        # queues the rest, so one batch keeps every sandbox process busy.
        results: list[Evaluated | BaseException | None] = [None] * len(requests)

        async def one(i: int, req: ExecRequest) -> None:
            try:
                results[i] = await self._evaluate(req)
            except Exception as e:  # kept, so that one program's fault does not cancel the others
                results[i] = e

        async with anyio.create_task_group() as tg:
            for i, req in enumerate(requests):
                tg.start_soon(one, i, req)
        faults = [r for r in results if isinstance(r, BaseException)]
        if faults:  # the batch goes back whole (PermanentError first: nothing would change)
            raise next((f for f in faults if isinstance(f, PermanentError)), faults[0])
        return EvaluatedBatch.of(msg.batch_id, [r for r in results if isinstance(r, Evaluated)])

    async def _evaluate(self, msg: ExecRequest) -> Evaluated:
        if msg.inputs is not None:
            inputs, train_outputs = msg.inputs, msg.train_outputs
        elif msg.inputs_ref:
            inputs, train_outputs = await self._load_ref(msg.inputs_ref)
        else:
            raise PermanentError("exec request has neither inputs nor inputs_ref")
        if train_outputs and len(train_outputs) > len(inputs):
            raise PermanentError(f"{len(train_outputs)} train outputs for {len(inputs)} inputs")
        # A reference names its content for good (the task's digest is in it): the pool's result
        # cache keys on the name instead of serialising the grids for every program.
        result = await self.pool.run(msg.code, inputs, inputs_key=msg.inputs_ref if msg.inputs is None else None)
        if any(r.error == ErrorKind.CRASH for r in result.results):
            # A sandbox worker died (killed by the OOM killer, by Ctrl-C while we shut down...).
            # That depends on the machine, not only on the program: run it once more, possibly
            # elsewhere, before recording the crash as the program's result.
            if self.ctx.draining or current_deliveries() < 2:
                raise TransientError("sandbox worker died while running the program")
        outputs = [r.output for r in result.results]
        errors = [None if r.error is None else ErrorKind(r.error).value for r in result.results]
        details = [r.detail for r in result.results]
        train_correct = [bool(c) for c in correctness(train_outputs or [], outputs[: len(train_outputs or [])])]
        fitness = sum(train_correct) / len(train_correct) if train_correct else 0.0
        # One info event per program (task_id / program_id come bound by the runtime), so that
        # `soar logs --task ID` lists a task's programs; logs.py keeps it off the console.
        kinds = sorted({e for e in errors if e})
        self.ctx.log.info(
            "evaluated",
            program_id=msg.program_id,
            train=f"{sum(train_correct)}/{len(train_correct)}",
            ms=round(result.duration_s * 1000, 1),
            **({"errors": ",".join(kinds)} if kinds else {}),
        )
        return Evaluated(
            program_id=msg.program_id,
            task_id=msg.task_id,
            outputs=outputs,
            errors=errors,
            details=details,
            train_correct=train_correct,
            fitness=fitness,
            duration_s=float(result.duration_s),
            stdout=(result.stdout or "")[:4096],
            worker_id=self.ctx.worker_id,
            code=msg.code,
            parent_id=msg.parent_id,
            origin=msg.origin,
            model_version=msg.model_version,
            generation=msg.generation,
            task_digest=msg.task_digest,
            norm=msg.norm,
        )
