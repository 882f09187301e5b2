"""Trainer: a relabelled dataset in, a new model version out.

On a `TrainRequest` it fetches the dataset (JSONL of chat examples, from the blob store),
fine-tunes a LoRA adapter on it from the base model (as SOAR does every generation), stores
the adapter in the adapters object store under a new, never reused version name and
announces it with `ModelUpdated`, which every LLM worker takes up.

Training runs in a child process (`soar_async.train.process`): the actor's event loop keeps
heartbeating and keeps the request "in progress" however long the training takes. The
work directory is keyed by the request id, so a killed trainer's redelivered request
resumes from the last checkpoint, and one that already finished is announced without
training again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

from soar_async.bus.topology import OBJ_BLOBS
from soar_async.llm.adapters import publish_adapter
from soar_async.llm.engine import EngineError
from soar_async.llm.models import resolve_model_path
from soar_async.messages import Message, ModelUpdated, TrainRequest
from soar_async.runtime.actor import Actor, PermanentError
from soar_async.runtime.inputs import Input, WorkQueue


def version_name(req: TrainRequest) -> str:
    """An immutable version name per training request: vLLM serves stale prefix-cache
    entries if a name is reused for new weights."""
    digest = hashlib.sha256(f"{req.request_id}:{req.dataset_ref}".encode()).hexdigest()[:8]
    return f"g{req.generation + 1}-{digest}"


class Trainer(Actor[Message]):
    role: ClassVar[str] = "trainer"
    inputs: ClassVar[tuple[Input, ...]] = (WorkQueue("train", TrainRequest),)

    async def setup(self) -> None:
        self._current: dict[str, Any] = {}

    async def handle(self, msg: Message) -> ModelUpdated | None:
        from soar_async.train.lora import TrainSpec
        from soar_async.train.process import TrainingFailed, run_training

        assert isinstance(msg, TrainRequest)
        cfg = self.ctx.config
        base = msg.base_model or cfg.train.base_model or cfg.model.path
        try:
            base_dir = await anyio.to_thread.run_sync(resolve_model_path, base)
        except (OSError, ValueError, EngineError) as e:
            raise PermanentError(f"training base model {base or '(default)'!r}: {e}") from None
        work = (self.ctx.run_dir or Path(".")) / "train" / _safe(msg.request_id)
        work.mkdir(parents=True, exist_ok=True)
        dataset = work / "dataset.jsonl"
        if not dataset.exists():
            await self._fetch(msg.dataset_ref, dataset)
        try:
            spec = TrainSpec.from_config(
                cfg.train, base_model=str(base_dir), dataset=str(dataset), out_dir=str(work / "out"), **msg.params
            )
        except (TypeError, ValueError) as e:  # ConfigError is a ValueError: a bad `params` never trains
            raise PermanentError(f"training request {msg.request_id}: {e}") from None
        self._current = {"request_id": msg.request_id, "generation": msg.generation, "step": 0}
        self.ctx.log.info("training", request_id=msg.request_id, base_model=str(base_dir), generation=msg.generation)

        def on_event(ev: dict[str, Any]) -> None:
            kind = ev.get("event", "train")
            if kind == "train_progress":
                self._current.update(step=ev.get("step"), steps=ev.get("steps"), loss=ev.get("loss"))
            fields = {k: v for k, v in ev.items() if k != "event"}
            self.ctx.log.info(kind.replace("_", " "), request_id=msg.request_id, **fields)

        t0 = time.perf_counter()
        try:
            result = await run_training(spec, on_event)
        except TrainingFailed as e:
            raise PermanentError(f"training failed: {e}") from None
        finally:
            self._current = {}
        version = version_name(msg)
        ref = await publish_adapter(self.ctx.bus, version, Path(result.adapter_dir))
        train = {
            "steps": result.steps,
            "examples": result.examples,
            "dropped": result.dropped,
            "first_loss": result.first_loss,
            "final_loss": result.final_loss,
            "seconds": round(result.seconds, 1),
            "tokens_per_s": round(result.tokens_per_s, 1),
            "tokens": result.tokens,
            "answer_tokens": result.answer_tokens,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        self.ctx.log.info("new model version", version=version, generation=msg.generation + 1, **train)
        return ModelUpdated(
            version=version,
            adapter_ref=ref,
            base_model=str(base_dir),
            generation=msg.generation + 1,
            train=train,
        )

    async def _fetch(self, ref: str, dest: Path) -> None:
        import nats.js.errors

        try:
            with anyio.fail_after(self.ctx.bus.cfg.request_timeout * 6):
                objects = await self.ctx.bus.js.object_store(OBJ_BLOBS)
                got = await objects.get(ref)
        except nats.js.errors.ObjectNotFoundError:
            raise PermanentError(f"dataset {ref!r} is not in the blob store") from None
        tmp = dest.with_suffix(".part")
        tmp.write_bytes(got.data or b"")
        tmp.replace(dest)

    def ids(self, msg: Message) -> dict[str, Any]:
        return {k: getattr(msg, k) for k in ("request_id", "generation") if hasattr(msg, k)}

    def status(self) -> dict[str, Any]:
        return dict(getattr(self, "_current", {}))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120]
