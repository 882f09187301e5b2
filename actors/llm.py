"""LLM worker: generation requests in, completions out, through one engine kept busy.

Behaviour only; the runtime pulls, acks, retries and heartbeats. The worker's concurrency is
`model.max_concurrent_requests`: that many requests sit inside the engine at once, which
batches them continuously; the actor never waits for one request before taking the next.

Every worker also hears every `ModelUpdated` (a broadcast, not a shared queue): it fetches the
adapter and hands it to the engine, which serves new requests with it while requests already
running finish on the version they started with. Each `Completions` names the version that
wrote all of its texts. A worker killed mid-request loses nothing: the request is redelivered
to another worker, and the first `Completions` stored for a request id is the only one kept.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import anyio

from soar_async.bus.topology import EVT_MODEL_UPDATED
from soar_async.config import Config
from soar_async.llm import Engine, Sampling, open_engine
from soar_async.llm.adapters import fetch_adapter
from soar_async.llm.engine import EngineDead
from soar_async.messages import Completions, GenRequest, Message, ModelUpdated
from soar_async.runtime.actor import Actor, PermanentError, TransientError
from soar_async.runtime.inputs import Broadcast, Input, WorkQueue


class LLMWorker(Actor[Message]):
    role: ClassVar[str] = "llm"
    inputs: ClassVar[tuple[Input, ...]] = (
        WorkQueue("gen", GenRequest),
        Broadcast((EVT_MODEL_UPDATED,), ModelUpdated),
    )

    @classmethod
    def concurrency_for(cls, config: Config) -> int:
        return config.model.max_concurrent_requests

    engine: Engine | None = None

    async def setup(self) -> None:
        model = self.ctx.config.model
        self.ctx.log.info("starting the LLM engine", engine=model.engine, path=model.path or "(default model)")
        self.engine = await open_engine(model)
        self._done: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._in_engine = 0
        self._latest: tuple[str, Path] | None = None
        """The last version taken up and its adapter: a restarted engine takes it up again."""
        self._restarting = anyio.Lock()
        self._taken: set[str] = {self.engine.version}
        """Versions this worker has taken up (requests naming one of them are served)."""
        self._arriving: dict[str, anyio.Event] = {}
        """Versions being taken up now: a request naming one waits for it instead of failing."""
        self.ctx.log.info("LLM engine ready", version=self.engine.version)
        # The version in service now, before any request is taken: after a restart, requests
        # naming it (the conductor's current generation) are answered at once, not handed
        # back until the broadcast delivers it.
        latest = await self._announced()
        if latest is not None:
            try:
                await self._take_up(latest)
            except (PermanentError, OSError, ValueError, RuntimeError) as e:
                # Still useful for requests that name no version; those naming it go elsewhere.
                self.ctx.log.error("could not take up the current model version", version=latest.version, error=repr(e))

    async def teardown(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()
            self.engine = None

    async def handle(self, msg: Message) -> Completions | None:
        assert self.engine is not None
        if isinstance(msg, ModelUpdated):
            await self._take_up(msg)
            return None
        assert isinstance(msg, GenRequest)
        try:
            sampling = Sampling(
                temperature=msg.temperature,
                top_p=msg.top_p,
                min_p=msg.min_p,
                max_tokens=msg.max_tokens,
                stop=tuple(msg.stop),
            )
        except ValueError as e:
            raise PermanentError(str(e)) from None
        if not msg.messages or msg.n < 1:
            raise PermanentError("generation request without messages or with n < 1")
        await self._version_ready(msg.model_version)
        self._in_engine += 1
        engine = self.engine
        try:
            gen = await engine.generate(msg.messages, msg.n, sampling, version=msg.model_version)  # type: ignore[arg-type]
        except EngineDead as e:
            # The engine's processes are gone (crashed, killed): start a new one and hand the
            # request back, rather than fail every request on a dead engine from now on.
            await self._restart(engine, str(e))
            raise TransientError(f"the engine died and was restarted: {e}") from None
        except ValueError as e:
            # The request itself cannot be served (its prompt is longer than the model's
            # context...): answered with no completions and the reason, so that whoever
            # asked resolves it rather than waiting for a retry that would fail the same way.
            self.ctx.log.warning("request cannot be served", error=str(e))
            return Completions(
                request_id=msg.request_id,
                task_id=msg.task_id,
                texts=[],
                kind=msg.kind,
                parent_id=msg.parent_id,
                worker_id=self.ctx.worker_id,
                generation=msg.generation,
                meta=msg.meta,
                error=str(e)[:500],
            )
        finally:
            self._in_engine -= 1
        self._done.append((time.monotonic(), gen.completion_tokens))
        return Completions(
            request_id=msg.request_id,
            task_id=msg.task_id,
            texts=[c.text for c in gen.completions],
            kind=msg.kind,
            parent_id=msg.parent_id,
            model_version=gen.version,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            tokens=[c.tokens for c in gen.completions],
            finish_reasons=[c.finish_reason for c in gen.completions],
            seconds=round(gen.seconds, 3),
            worker_id=self.ctx.worker_id,
            generation=msg.generation,
            meta=msg.meta,
        )

    async def _announced(self) -> ModelUpdated | None:
        """The last `ModelUpdated` of this system, if any."""
        import nats.js.errors

        from soar_async.bus.topology import STREAM_EVENTS
        from soar_async.messages import DecodeError

        try:
            with anyio.fail_after(self.ctx.bus.cfg.request_timeout):
                raw = await self.ctx.bus.js.get_last_msg(STREAM_EVENTS, EVT_MODEL_UPDATED)
            return ModelUpdated.decode(raw.data or b"")
        except (nats.js.errors.NotFoundError, DecodeError):
            return None

    async def _version_ready(self, version: str | None) -> None:
        """A request names a version (the conductor's next generation): serve it only with that
        model. One being taken up right now is waited for; one never heard of is handed back
        for later (its `ModelUpdated` is on its way, or another worker serves it)."""
        assert self.engine is not None
        if not version or version == self.engine.version or version in self._taken:
            return
        arriving = self._arriving.get(version)
        if arriving is not None:
            with anyio.move_on_after(900):
                await arriving.wait()
        if version != self.engine.version and version not in self._taken:
            raise TransientError(f"model version {version!r} is not served by this worker yet")

    async def _take_up(self, msg: ModelUpdated) -> None:
        assert self.engine is not None
        if msg.version == self.engine.version:
            return  # already serving it (a redelivery, or the latest version heard on joining)
        arriving = self._arriving.setdefault(msg.version, anyio.Event())
        try:
            await self._load(msg)
        finally:
            arriving.set()
            self._arriving.pop(msg.version, None)

    async def _load(self, msg: ModelUpdated) -> None:
        assert self.engine is not None
        if msg.adapter_path:
            adapter_dir = Path(msg.adapter_path)
        elif msg.adapter_ref:
            base = (self.ctx.run_dir or Path(".")) / "adapters"
            adapter_dir = await fetch_adapter(self.ctx.bus, msg.adapter_ref, base / msg.version)
        else:
            raise PermanentError(f"model update {msg.version!r} names no adapter")
        self.ctx.log.info("taking up a new model version", version=msg.version, adapter=str(adapter_dir))
        await self.engine.update(msg.version, adapter_dir)
        self._taken.add(msg.version)
        self._latest = (msg.version, adapter_dir)
        self.ctx.log.info("serving model version", version=msg.version)

    async def _restart(self, dead: Engine, why: str) -> None:
        """Replace a dead engine once (concurrent handlers see the same death), with the same
        model and the last version taken up."""
        async with self._restarting:
            if self.engine is not dead:
                return  # another handler restarted it already
            self.ctx.log.error("LLM engine died, starting a new one", error=why)
            with anyio.CancelScope(shield=True), anyio.move_on_after(60):
                try:
                    await dead.aclose()
                except Exception as e:
                    self.ctx.log.warning("closing the dead engine failed", error=repr(e))
            engine = await open_engine(self.ctx.config.model)
            if self._latest is not None:
                await engine.update(*self._latest)
            self.engine = engine
            self.ctx.log.info("LLM engine restarted", version=engine.version)

    def ids(self, msg: Message) -> dict[str, Any]:
        return {k: getattr(msg, k) for k in ("task_id", "request_id", "version") if hasattr(msg, k)}

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = [n for t, n in getattr(self, "_done", ()) if now - t <= 60]
        return {
            "model_version": self.engine.version if self.engine is not None else None,
            "requests_in_engine": getattr(self, "_in_engine", 0),
            "tokens_per_s": round(sum(recent) / 60, 1),
        }
