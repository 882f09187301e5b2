"""The transformers backend: batched sampling with `model.generate`, for CPUs and GPUs without vLLM.

Why this shape:
- A model must not run `generate` in two threads at once, and an adapter must not be loaded
  while a batch runs. So one batch at a time runs in a worker thread (`anyio.to_thread`), and
  an `anyio.Lock` serialises batches and adapter loads.
- No background task: the engine has no task group of its own (it is created by `start` and
  closed by `aclose`, not entered as a context). Instead a waiting caller elects itself
  runner when no batch is running: it takes the queue's head and every queued request with
  the same settings (up to `max_batch_sequences` sequences) and runs them as one left-padded
  `generate` call. Requests started in the same event-loop tick (e.g. a task group starting
  six at once) land in one batch; requests arriving while a batch runs form the next one.
- Versions are fixed at enqueue: each request records the version current when it was made
  (or the one it names), and the runner switches adapters between batches (`set_adapter`;
  the base model runs with adapters disabled). So `update` never changes a request in flight.

Cancellation: a caller cancelled while its request is queued removes it from the queue. A
request already inside the running batch cannot be stopped (transformers' `generate` has no
per-row abort): the batch runs to its end, the cancelled caller returns at once and its
completions are dropped. If the cancelled caller is the one running the batch, its
cancellation takes effect when the batch ends (the worker thread is waited for, so that the
other requests in the batch get their results).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from soar_async.config import ModelConfig
from soar_async.llm.engine import BASE_VERSION, ChatMessage, Completion, EngineError, Generation, Sampling
from soar_async.llm.models import resolve_model_path

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_BATCH_SEQUENCES = 64
"""Sequences one `generate` call samples at most (a request with a larger n runs alone)."""

DEFAULT_MAX_ADAPTERS = 4
"""Adapters kept loaded; older ones no queued request names are deleted when a new one loads."""


@dataclass(eq=False)
class _Request:
    """One `generate` call waiting in the queue or running in a batch."""

    prompt: str
    n: int
    sampling: Sampling
    version: str
    enqueued: float
    done: anyio.Event
    result: Generation | None = None
    error: BaseException | None = None

    @property
    def greedy(self) -> bool:
        return self.sampling.temperature == 0

    @property
    def rows(self) -> int:
        """Sequences this request adds to a batch: greedy completions are all the same, so one."""
        return 1 if self.greedy else self.n

    def key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one `generate` call (one generation config)."""
        s = self.sampling
        if self.greedy:
            return (self.version, 0.0, s.max_tokens, s.stop)
        return (self.version, s.temperature, s.top_p, s.min_p, s.seed, s.max_tokens, s.stop)


class HFEngine:
    """An `Engine` on a transformers causal LM, with PEFT adapters as model versions.

    Create with `await HFEngine.start(model_cfg)`; every attribute belongs to the event loop
    that created it."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_dir: Path,
        max_model_len: int,
        max_batch_sequences: int = DEFAULT_MAX_BATCH_SEQUENCES,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
    ) -> None:
        """Use `start`; this needs a running event loop (anyio primitives) and a loaded model."""
        if max_batch_sequences < 1 or max_adapters < 1:
            raise ValueError("max_batch_sequences and max_adapters must be at least 1")
        self._model = model
        self._tokenizer = tokenizer
        self.model_dir = model_dir
        self.max_model_len = max_model_len
        self.max_batch_sequences = max_batch_sequences
        self.max_adapters = max_adapters
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids[0]
        self._version = BASE_VERSION
        self._adapters: dict[str, Path] = {}
        """Loaded adapters, oldest first."""
        self._queue: list[_Request] = []
        self._running = False
        self._batch_done = anyio.Event()
        self._model_lock = anyio.Lock()
        self._closed = False
        self.batches = 0
        """Batches run so far (for tests and stats)."""

    @classmethod
    async def start(
        cls,
        model_cfg: ModelConfig,
        *,
        cache_dir: Path | None = None,
        max_batch_sequences: int = DEFAULT_MAX_BATCH_SEQUENCES,
    ) -> HFEngine:
        """Load `model_cfg.path` (converting a GGUF file once) on CUDA if there is one, else CPU.

        Loading runs in a worker thread so the event loop keeps serving meanwhile."""
        model_dir = await anyio.to_thread.run_sync(resolve_model_path, model_cfg.path, cache_dir)
        model, tokenizer = await anyio.to_thread.run_sync(_load, model_dir, model_cfg.dtype, model_cfg.seed)
        limit = model_cfg.max_model_len or int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
        return cls(model, tokenizer, model_dir=model_dir, max_model_len=limit, max_batch_sequences=max_batch_sequences)

    @property
    def version(self) -> str:
        """The model version new requests use."""
        return self._version

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version a request may name: the base and the loaded adapters."""
        return (BASE_VERSION, *self._adapters)

    @property
    def device(self) -> str:
        return str(_model_device(self._model))

    async def generate(
        self, messages: Sequence[ChatMessage], n: int, sampling: Sampling, *, version: str | None = None
    ) -> Generation:
        """n completions of the chat, on `version` (default: the current one), batched with
        whatever other requests are waiting."""
        if self._closed:
            raise EngineError("the transformers engine is closed")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        chosen = self._version if version is None else version
        if chosen not in self.versions:
            raise EngineError(f"unknown model version {chosen!r}; loaded: {', '.join(self.versions)}")
        prompt = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        req = _Request(prompt, n, sampling, chosen, time.monotonic(), anyio.Event())
        self._queue.append(req)
        try:
            while not req.done.is_set():
                if self._running:
                    await self._batch_done.wait()
                else:
                    await self._run_batch()
        finally:
            if not req.done.is_set() and req in self._queue:
                self._queue.remove(req)
        # A runner cancelled while its batch ran in the thread gets here with a result (the
        # thread was waited for, without a checkpoint since): honour the cancellation now.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    async def update(self, version: str, adapter_dir: Path) -> None:
        """Load the PEFT adapter in `adapter_dir` as `version` and make it current.

        Waits for the running batch; queued requests keep the version they were made with.
        Version names are immutable: updating to an already loaded name only makes it current."""
        if self._closed:
            raise EngineError("the transformers engine is closed")
        if version == BASE_VERSION:
            raise ValueError(f"{BASE_VERSION!r} names the model's own weights, not an adapter")
        adapter_dir = Path(adapter_dir)
        if version in self._adapters:
            self._version = version
            return
        if not (adapter_dir / "adapter_config.json").is_file():
            raise EngineError(f"no PEFT adapter in {adapter_dir} (adapter_config.json missing)")
        async with self._model_lock:
            in_use = {r.version for r in self._queue} | {version, self._version}
            old = [v for v in self._adapters if v not in in_use]
            victims = old[: max(0, len(self._adapters) + 1 - self.max_adapters)]
            await anyio.to_thread.run_sync(self._load_adapter_sync, version, adapter_dir, victims)
            for v in victims:
                del self._adapters[v]
            self._adapters[version] = adapter_dir
            self._version = version

    async def aclose(self) -> None:
        """Fail queued requests, wait for the running batch, release the model (and GPU memory)."""
        if self._closed:
            return
        self._closed = True
        for req in self._queue:
            req.error = EngineError("the transformers engine was closed before this request ran")
            req.done.set()
        self._queue.clear()
        while self._running:
            await self._batch_done.wait()
        async with self._model_lock:
            on_cuda = _model_device(self._model).type == "cuda"
            self._model = None
            gc.collect()
            if on_cuda:
                import torch

                torch.cuda.empty_cache()

    # The runner ------------------------------------------------------------------------------

    async def _run_batch(self) -> None:
        """Run one batch from the queue's head; the caller is the elected runner."""
        self._running = True
        self._batch_done = anyio.Event()
        try:
            await anyio.sleep(0)  # requests started in this same tick join the batch
            async with self._model_lock:  # an adapter load in progress finishes first
                batch = self._take_batch()
                if not batch:
                    return
                started = time.monotonic()
                try:
                    # Not abandoned on cancel: the other requests of the batch need its result.
                    outcomes = await anyio.to_thread.run_sync(self._run_sync, batch)
                except Exception as e:  # the whole batch failed (out of memory, a bug): tell every caller
                    outcomes = [EngineError(f"generation failed: {type(e).__name__}: {e}") for _ in batch]
                self.batches += 1
                batch_s = time.monotonic() - started
                for req, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        req.error = outcome
                    else:
                        completions, prompt_tokens = outcome
                        req.result = Generation(
                            completions=completions,
                            prompt_tokens=prompt_tokens,
                            version=req.version,
                            seconds=time.monotonic() - req.enqueued,
                            extra={
                                "queue_s": round(started - req.enqueued, 4),
                                "batch_s": round(batch_s, 4),
                                "batch_requests": len(batch),
                                "batch_sequences": sum(r.rows for r in batch),
                            },
                        )
                    req.done.set()
        finally:
            self._running = False
            self._batch_done.set()

    def _take_batch(self) -> list[_Request]:
        """The queue's head and the queued requests sharing its key, up to the sequence cap."""
        if not self._queue:
            return []
        key = self._queue[0].key()
        batch: list[_Request] = []
        rows = 0
        for req in self._queue:
            if req.key() == key and (not batch or rows + req.rows <= self.max_batch_sequences):
                batch.append(req)
                rows += req.rows
        for req in batch:
            self._queue.remove(req)
        return batch

    # Worker-thread side ------------------------------------------------------------------------

    def _load_adapter_sync(self, version: str, adapter_dir: Path, victims: list[str]) -> None:
        from peft import PeftModel

        try:
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(str(adapter_dir), adapter_name=version, is_trainable=False)
            else:
                self._model = PeftModel.from_pretrained(
                    self._model, str(adapter_dir), adapter_name=version, is_trainable=False
                )
        except Exception as e:
            raise EngineError(f"cannot load adapter {version!r} from {adapter_dir}: {type(e).__name__}: {e}") from e
        self._model.set_adapter(version)
        for v in victims:
            self._model.delete_adapter(v)
        self._model.eval()

    def _run_sync(self, batch: list[_Request]) -> list[tuple[tuple[Completion, ...], int] | BaseException]:
        """Sample every request of `batch` in one left-padded `generate` call (worker thread)."""
        import torch
        from transformers import GenerationConfig

        tok = self._tokenizer
        outcomes: list[tuple[tuple[Completion, ...], int] | BaseException] = []
        ids_of: list[list[int]] = []
        live: list[int] = []
        for i, req in enumerate(batch):
            ids = tok(req.prompt, add_special_tokens=False)["input_ids"]
            if len(ids) >= self.max_model_len:
                outcomes.append(
                    ValueError(f"prompt of {len(ids)} tokens does not fit the model length {self.max_model_len}")
                )
            else:
                outcomes.append(EngineError("internal: no result"))
                live.append(i)
            ids_of.append(ids)
        if not live:
            return outcomes
        s = batch[live[0]].sampling
        longest = max(len(ids_of[i]) for i in live)
        max_new = min(s.max_tokens, self.max_model_len - longest)
        rows: list[list[int]] = []
        owner: list[int] = []
        for i in live:
            for _ in range(batch[i].rows):
                rows.append(ids_of[i])
                owner.append(i)
        device = _model_device(self._model)
        input_ids = torch.full((len(rows), longest), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), longest), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[r, longest - len(ids) :] = 1
        greedy = s.temperature == 0
        settings: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": not greedy,
            "num_beams": 1,
            "num_return_sequences": 1,
            "repetition_penalty": 1.0,
            "eos_token_id": list(self._eos_ids),
            "pad_token_id": self._pad_id,
        }
        if not greedy:
            # top_k=0 explicitly: transformers otherwise fills in its global default of 50.
            settings.update(temperature=s.temperature, top_p=s.top_p, min_p=s.min_p or None, top_k=0)
        if s.stop:
            settings["stop_strings"] = list(s.stop)
        config = GenerationConfig(**settings)
        extra: dict[str, Any] = {"tokenizer": tok} if s.stop else {}
        if not greedy and s.seed is not None:
            torch.manual_seed(s.seed)
        with torch.inference_mode(), self._version_context(batch[live[0]].version):
            out = self._model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config, **extra
            )
        new = out[:, longest:].tolist()
        per_req: dict[int, list[Completion]] = {i: [] for i in live}
        for r, i in enumerate(owner):
            per_req[i].append(self._completion(new[r], batch[i].sampling.stop))
        for i in live:
            got = per_req[i]
            if batch[i].greedy:
                got = got * batch[i].n
            outcomes[i] = (tuple(got), len(ids_of[i]))
        return outcomes

    def _version_context(self, version: str) -> Any:
        """A context manager running the model as `version` (worker thread, under the lock)."""
        from contextlib import nullcontext

        from peft import PeftModel

        if not isinstance(self._model, PeftModel):
            if version != BASE_VERSION:
                raise EngineError(f"adapter {version!r} is not loaded")
            return nullcontext()
        if version == BASE_VERSION:
            return self._model.disable_adapter()
        if version not in self._model.peft_config:
            raise EngineError(f"adapter {version!r} is not loaded (evicted?)")
        self._model.set_adapter(version)
        return nullcontext()

    def _completion(self, new: list[int], stop: tuple[str, ...]) -> Completion:
        """One generated row: cut at the first end token, then at the first stop string.

        `tokens` counts the tokens generated, the end token included (as vLLM counts them)."""
        end = next((k for k, t in enumerate(new) if t in self._eos_ids), None)
        if end is not None:
            body, tokens, reason = new[:end], end + 1, "stop"
        else:
            body = new
            if stop and self._pad_id not in self._eos_ids:
                # A row ended by a stop string is padded up to the batch's longest row.
                while body and body[-1] == self._pad_id:
                    body = body[:-1]
            tokens, reason = len(body), "length"
        text = self._tokenizer.decode(body, skip_special_tokens=True)
        cuts = [k for k in (text.find(x) for x in stop if x) if k >= 0]
        if cuts:
            text, reason = text[: min(cuts)], "stop"
        return Completion(text=text, tokens=tokens, finish_reason=reason)


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token that ends a completion: the generation config's, the tokenizer's, <|im_end|>."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(int(t) for t in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    im_end = tokenizer.get_vocab().get("<|im_end|>")
    if im_end is not None:
        ids.append(int(im_end))
    if not ids:
        raise EngineError("the model has no end-of-sequence token (generation_config and tokenizer lack one)")
    return tuple(dict.fromkeys(ids))


def _model_device(model: Any) -> torch.device:
    import torch

    if model is None:
        return torch.device("cpu")
    return next(model.parameters()).device


def _load(model_dir: Path, dtype: str, seed: int) -> tuple[Any, Any]:
    """Tokenizer and model in eval mode on CUDA if available (worker thread).

    dtype "auto": bfloat16 on CUDA, float32 on CPU (bf16 matmuls are slow on most CPUs). The
    sampler's global torch seed is set here: transformers has no per-call generator."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    torch_dtype = {
        "auto": torch.bfloat16 if cuda else torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot load the model in {model_dir}: {e}") from e
    if tokenizer.chat_template is None:
        raise EngineError(f"the tokenizer in {model_dir} has no chat template; SOAR prompts are chats")
    model.to("cuda" if cuda else "cpu").eval()
    torch.manual_seed(seed)
    return model, tokenizer
