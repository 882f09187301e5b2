"""`soar bench llm`: our generation path against vLLM's own best, on the same prompts.

Two measurements, one after the other (each engine takes ~5 GB with SmolLM2 on CPU, so the
first is shut down completely before the second starts):

- offline: `vllm.LLM.generate` with every prompt in one call, the engine's own best batch;
- actor: the path a SOAR run takes. An embedded nats-server and an LLM actor (`actors/llm.py`,
  role "llm", on our `VLLMEngine` wrapper of `AsyncLLM`) brought up by `bring_up`, exactly as
  `soar up` does; one `GenRequest` per prompt published to the gen work queue; `Completions`
  collected from the events stream.

Both use the same engine settings (`engine_args` from the `model` section), the same prompt
token ids (real SOAR sampling prompts of ARC tasks, rendered with the model's chat template
the way `VLLMEngine` does), the same sampling (`search.temperature`, `search.min_p`,
`max_tokens`, end of sequence honoured) and `n` completions per prompt. Each path gets one
small warm-up request first. tokens/s = completion tokens actually produced / wall seconds of
the generation phase (first request sent to last result in), engine start not included.
Completion lengths are sampled, so the two paths produce somewhat different token counts;
the rate, not the count, is compared. Goal: actor / offline >= 0.9.

`--backends vllm,transformers,openai` measures the actor path on the other engines too, each
against the same offline run: `transformers` (batched sampling in the actor's process) and
`openai` (the actor forwarding to a `vllm serve` of the same model with the same engine
settings, `vllm_engine.serve_flags`, which the benchmark starts on loopback and stops after).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

GOAL = 0.9
"""Actor path tokens/s over offline tokens/s at least this."""

DEFAULT_TASKS = "arc-agi-1:training"
"""Where the prompts come from: the first tasks of this set whose prompt fits (see `workload`)."""

MAX_PROMPT_TOKENS = 2048
"""Prompts longer than this are skipped: the benchmark is about decoding throughput, and a few
very long ARC prompts would make it a prefill benchmark on a CPU."""

WARMUP_CHAT = [{"role": "user", "content": "Say hello."}]
WARMUP_TOKENS = 4

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Prompt:
    task_id: str
    messages: list[dict[str, str]]
    ids: list[int]
    """The chat rendered with the model's template, generation prompt added (as VLLMEngine does)."""


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The same rendering as `VLLMEngine._prompt_ids`."""
    enc = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(enc["input_ids"])


def model_max_len(model_dir: Path, configured: int) -> int:
    if configured:
        return configured
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 4096
    return int(cfg.get("max_position_embeddings") or 4096)


def workload(model_dir: Path, count: int, max_tokens: int, *, tasks: str = DEFAULT_TASKS,
             max_prompt_tokens: int = MAX_PROMPT_TOKENS, max_model_len: int = 0) -> list[Prompt]:  # fmt: skip
    """SOAR sampling prompts of the first `count` tasks of `tasks` whose prompt has at most
    `max_prompt_tokens` tokens and leaves room for `max_tokens` in the model's length."""
    from soar_async.arc import load_tasks
    from soar_async.llm.vllm_engine import _load_tokenizer
    from soar_async.prompts import sampling_messages

    tok = _load_tokenizer(model_dir)
    limit = min(max_prompt_tokens, model_max_len(model_dir, max_model_len) - max_tokens - 1)
    out: list[Prompt] = []
    for task in load_tasks(tasks):
        msgs = sampling_messages(task)
        ids = prompt_ids(tok, msgs)
        if len(ids) <= limit:
            out.append(Prompt(task.id, [dict(m) for m in msgs], ids))
            if len(out) == count:
                return out
    raise ValueError(f"only {len(out)} tasks of {tasks} have a prompt of at most {limit} tokens; asked for {count}")


def _sampling_params(n: int, temperature: float, min_p: float, max_tokens: int) -> Any:
    """As `VLLMEngine._sampling_params` (top_p 1, final output only, no stop strings)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=n, temperature=temperature, top_p=1.0, min_p=min_p, max_tokens=max_tokens,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )  # fmt: skip


class CpuMeter:
    """CPU seconds used between `start` and `stop` by this process and by its child processes
    (vLLM's engine core and worker; an embedded nats-server counted apart), and the 1-minute
    load average at both ends. On a shared machine wall time swings with other people's load
    (and vLLM's CPU worker binds to a fixed core, which other vLLM processes may bind to too);
    the CPU our path spends outside the engine (this process, nats-server) is its own cost and
    hardly depends on the load."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._t0: dict[int, float] = {}
        self._main0 = 0.0
        self.load = [os.getloadavg()[0]]

    def _children(self) -> dict[int, tuple[str, float]]:
        import psutil

        out = {}
        for p in self._me.children(recursive=True):
            try:
                t = p.cpu_times()
                out[p.pid] = (p.name(), t.user + t.system)
            except psutil.Error:
                continue
        return out

    def _main(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self._t0 = {pid: cpu for pid, (_n, cpu) in self._children().items()}
        self._main0 = self._main()
        self.load = [os.getloadavg()[0]]

    def stop(self) -> dict[str, float]:
        main = self._main() - self._main0
        engine = nats = 0.0
        for pid, (name, cpu) in self._children().items():
            d = cpu - self._t0.get(pid, 0.0)
            if name.startswith("nats-server"):
                nats += d
            else:
                engine += d
        self.load.append(os.getloadavg()[0])
        return {
            "engine_cpu_s": engine,
            "main_cpu_s": main,
            "nats_server_cpu_s": nats,
            "load_avg_1m_start": self.load[0],
            "load_avg_1m_end": self.load[-1],
        }


# Offline ------------------------------------------------------------------------------------


def offline(model_cfg: Any, model_dir: Path, prompts: list[Prompt], n: int, max_tokens: int,
            temperature: float, min_p: float, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """Every prompt through `vllm.LLM.generate` in one call; the engine is shut down after."""
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs
    from vllm.inputs import TokensPrompt

    from soar_async.llm.vllm_engine import _is_cpu, engine_args

    a = engine_args(model_cfg, model_dir, on_cpu=_is_cpu())
    eargs = EngineArgs(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EngineArgs)})
    progress(f"offline: starting vllm.LLM on {model_dir} ...")
    t0 = time.monotonic()
    llm = LLM.from_engine_args(eargs)
    start_s = time.monotonic() - t0
    try:
        max_len = int(llm.llm_engine.model_config.max_model_len)
        tok = llm.get_tokenizer()
        warm = prompt_ids(tok, WARMUP_CHAT)
        llm.generate([TokensPrompt(prompt_token_ids=warm)],
                     _sampling_params(1, temperature, min_p, WARMUP_TOKENS), use_tqdm=False)  # fmt: skip
        inputs = [TokensPrompt(prompt_token_ids=p.ids) for p in prompts]
        params = [_sampling_params(n, temperature, min_p, min(max_tokens, max_len - len(p.ids))) for p in prompts]
        progress(f"offline: generating {len(prompts)} prompts x {n} in one batch ...")
        meter = CpuMeter()
        meter.start()
        t0 = time.perf_counter()
        outs = llm.generate(inputs, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        cpu = meter.stop()
        lengths = [len(c.token_ids) for o in outs for c in o.outputs]
        cut = sum(1 for o in outs for c in o.outputs if c.finish_reason == "length")
    finally:
        _shutdown_offline(llm)
        del llm
        gc.collect()
    tokens = sum(lengths)
    return {
        "engine_start_s": start_s,
        "seconds": seconds,
        "completion_tokens": tokens,
        "completions": len(lengths),
        "cut_at_max_tokens": cut,
        "tokens_per_s": tokens / seconds,
        **cpu,
        "tokens_per_engine_cpu_s": tokens / cpu["engine_cpu_s"] if cpu["engine_cpu_s"] else 0.0,
        "outside_engine_cpu_ms_per_token": cpu["main_cpu_s"] * 1e3 / max(1, tokens),
    }


def _shutdown_offline(llm: Any) -> None:
    """Stop the engine core process(es) now rather than whenever the object is collected."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as e:  # another vLLM version: collection still ends it
        print(f"soar bench llm: offline engine shutdown: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except Exception:
        pass


# Actor path -----------------------------------------------------------------------------------


async def actor_path(config: Any, prompts: list[Prompt], n: int, max_tokens: int, temperature: float,
                     min_p: float, progress: Progress, timeout_s: float = 3600.0) -> dict[str, Any]:  # fmt: skip
    """GenRequests through an embedded NATS system with one LLM actor; Completions collected."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from soar_async.bus.topology import EVT_COMPLETIONS
    from soar_async.messages import Completions, GenRequest
    from soar_async.runtime.system import ActorSpec, bring_up

    def request(rid: str, task_id: str, messages: list[dict[str, str]], n: int, max_tokens: int) -> GenRequest:
        return GenRequest(request_id=rid, task_id=task_id, messages=messages, n=n, max_tokens=max_tokens,
                          temperature=temperature, min_p=min_p)  # fmt: skip

    async def collect(sub: Any, want: set[str], got: dict[str, Completions]) -> None:
        while want:
            try:
                m = await sub.next_msg(timeout=timeout_s)
            except nats.errors.TimeoutError as e:
                raise RuntimeError(f"no completions for {len(want)} requests within {timeout_s:g} s") from e
            c = Completions.decode(m.data)
            if c.request_id in want:
                want.discard(c.request_id)
                got[c.request_id] = c

    tag = os.urandom(3).hex()
    with tempfile.TemporaryDirectory(prefix="soar-bench-llm-") as tmp:
        progress("actor: bringing up nats-server and the LLM actor (engine start) ...")
        t0 = time.monotonic()
        async with bring_up(config, run_dir=Path(tmp), actors=[ActorSpec("llm")], name="bench") as system:
            bring_up_s = time.monotonic() - t0
            bus, runner = system.bus, system.runners[0]
            engine = getattr(runner.actor, "engine", None)
            sub = await bus.js.subscribe(
                f"{EVT_COMPLETIONS}.>", ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
            )  # fmt: skip
            warm = request(f"warmup-{tag}", "warmup", WARMUP_CHAT, 1, WARMUP_TOKENS)
            await bus.js_publish(warm.subject(), warm.encode(), msg_id=warm.dedup_id())
            await collect(sub, {warm.request_id}, {})
            reqs = [
                request(f"bench-{tag}-{i:03d}", p.task_id, p.messages, n, max_tokens) for i, p in enumerate(prompts)
            ]
            got: dict[str, Completions] = {}
            progress(f"actor: publishing {len(reqs)} GenRequests (n={n}) to the gen queue ...")
            meter = CpuMeter()
            meter.start()
            t0 = time.perf_counter()
            futs = [
                await bus.js.publish_async(r.subject(), r.encode(), headers={"Nats-Msg-Id": r.dedup_id()}) for r in reqs
            ]
            for f in futs:
                await f
            published_s = time.perf_counter() - t0
            await collect(sub, {r.request_id for r in reqs}, got)
            seconds = time.perf_counter() - t0
            cpu = meter.stop()
            await sub.unsubscribe()
            engine_start = float(getattr(engine, "start_seconds", 0.0))
            concurrency, peak = runner.concurrency, runner.peak_in_flight
    tokens = sum(c.completion_tokens for c in got.values())
    return {
        "engine_start_s": engine_start,
        "bring_up_s": bring_up_s,
        "seconds": seconds,
        "publish_s": published_s,
        "completion_tokens": tokens,
        "completions": sum(len(c.texts) for c in got.values()),
        "cut_at_max_tokens": sum(r == "length" for c in got.values() for r in c.finish_reasons),
        "engine_seconds_mean": sum(c.seconds for c in got.values()) / max(1, len(got)),
        "max_concurrent_requests": concurrency,
        "peak_requests_in_flight": peak,
        "tokens_per_s": tokens / seconds,
        **cpu,
        "tokens_per_engine_cpu_s": tokens / cpu["engine_cpu_s"] if cpu["engine_cpu_s"] else 0.0,
        "outside_engine_cpu_ms_per_token": (cpu["main_cpu_s"] + cpu["nats_server_cpu_s"]) * 1e3 / max(1, tokens),
    }


# The benchmark ------------------------------------------------------------------------------


SERVED_NAME = "bench"
SERVE_READY_S = 600.0
"""How long `vllm serve` may take to answer (about a minute on an idle 2-core machine)."""


def openai_path(config: Any, model_dir: Path, prompts: list[Prompt], n: int, max_tokens: int, temperature: float,
                min_p: float, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """The actor path with `model.engine = openai`, against a `vllm serve` of the same model
    with the same engine settings, started on loopback for the measurement and stopped after.
    The server is this process's child, so its CPU counts as the engine's."""
    import anyio

    from soar_async.bus.server import free_port
    from soar_async.llm.serve import start_vllm_serve
    from soar_async.llm.vllm_engine import _is_cpu, serve_flags

    mcfg = dataclasses.replace(config.model, update_mode="merged")  # no LoRA slots: as the vllm path on CPU
    flags = serve_flags(mcfg, model_dir, on_cpu=_is_cpu())
    with tempfile.TemporaryDirectory(prefix="soar-bench-serve-") as tmp:
        progress("openai: starting vllm serve on loopback (engine start) ...")
        server = start_vllm_serve(
            model_dir, port=free_port(), served_name=SERVED_NAME, args=flags, log=Path(tmp) / "vllm-serve.log"
        )
        try:
            ready_s = server.wait_ready(SERVE_READY_S)
            ocfg = dataclasses.replace(
                config, model=dataclasses.replace(config.model, engine="openai", base_url=server.url, name=SERVED_NAME)
            )
            res = anyio.run(actor_path, ocfg, prompts, n, max_tokens, temperature, min_p, progress)
        finally:
            server.stop()
    res["engine_start_s"] = ready_s
    return res


BACKENDS = ("vllm", "transformers", "openai")
"""`--backends`: the engines the actor path is measured with (`model.engine`), each against the
same offline baseline."""


def run_bench(config: Any, *, model: str | None, prompts: int, n: int, max_tokens: int,
              tasks: str = DEFAULT_TASKS, max_prompt_tokens: int = MAX_PROMPT_TOKENS,
              backends: Sequence[str] = ("vllm",), progress: Progress = lambda _m: None) -> dict[str, Any]:  # fmt: skip
    """Offline, then the actor path with each backend, on the same prompts; see the module
    docstring. Blocking (runs its own event loop for each actor path)."""
    import anyio

    from soar_async.llm.models import resolve_model_path

    if prompts < 1 or n < 1 or max_tokens < 1:
        raise ValueError("--prompts, --n and --max-tokens must be at least 1")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends or "vllm" not in backends:
        raise ValueError(f"--backends must name vllm and any of {', '.join(BACKENDS)}, got {','.join(backends)!r}")
    model_dir = resolve_model_path(model if model is not None else config.model.path)
    mcfg = dataclasses.replace(config.model, engine="vllm", path=str(model_dir))
    config = dataclasses.replace(config, model=mcfg)
    temperature, min_p = config.search.temperature, config.search.min_p
    progress(f"rendering {prompts} sampling prompts from {tasks} ...")
    work = workload(model_dir, prompts, max_tokens, tasks=tasks, max_prompt_tokens=max_prompt_tokens,
                    max_model_len=mcfg.max_model_len)  # fmt: skip
    off = offline(mcfg, model_dir, work, n, max_tokens, temperature, min_p, progress)
    act = anyio.run(actor_path, config, work, n, max_tokens, temperature, min_p, progress)
    ratio = act["tokens_per_s"] / off["tokens_per_s"]
    others: dict[str, dict[str, Any]] = {}
    if "transformers" in backends:
        progress("transformers: the actor path on the transformers engine ...")
        tcfg = dataclasses.replace(config, model=dataclasses.replace(mcfg, engine="transformers"))
        others["transformers"] = anyio.run(actor_path, tcfg, work, n, max_tokens, temperature, min_p, progress)
    if "openai" in backends:
        others["openai"] = openai_path(config, model_dir, work, n, max_tokens, temperature, min_p, progress)
    for res in others.values():
        res["ratio"] = res["tokens_per_s"] / off["tokens_per_s"]
    prompt_lens = [len(p.ids) for p in work]
    import vllm

    vllm_version = str(getattr(vllm, "__version__", "unknown"))
    return {
        "offline_tokens_per_s": off["tokens_per_s"],
        "actor_tokens_per_s": act["tokens_per_s"],
        "ratio": ratio,
        "engine_cpu_ratio": (act["tokens_per_engine_cpu_s"] / off["tokens_per_engine_cpu_s"])
        if off["tokens_per_engine_cpu_s"]
        else 0.0,
        "goal": GOAL,
        "meets_goal": ratio >= GOAL,
        "model": str(model_dir),
        "prompts": len(work),
        "n": n,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "min_p": min_p,
        "tasks": [p.task_id for p in work],
        "prompt_tokens_mean": sum(prompt_lens) / len(prompt_lens),
        "prompt_tokens_max": max(prompt_lens),
        "max_concurrent_requests": mcfg.max_concurrent_requests,
        "offline": off,
        "actor": act,
        "backends": {"vllm": {**act, "ratio": ratio}, **others},
        "vllm": vllm_version,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def render(r: dict[str, Any]) -> str:
    o, a = r["offline"], r["actor"]
    seqs = r["prompts"] * r["n"]
    return "\n".join([
        f"soar bench llm: {r['prompts']} ARC sampling prompts x n={r['n']} ({seqs} sequences), "
        f"max_tokens {r['max_tokens']}, temperature {r['temperature']:g}, min_p {r['min_p']:g}",
        f"  model            {r['model']} (vllm {r['vllm']})",
        f"  prompts          {r['prompt_tokens_mean']:.0f} tokens mean, {r['prompt_tokens_max']} max",
        f"  offline          {o['tokens_per_s']:8.1f} tokens/s  {o['completion_tokens']} tokens in "
        f"{o['seconds']:.1f} s ({o['cut_at_max_tokens']}/{o['completions']} cut at max_tokens); "
        f"engine start {o['engine_start_s']:.1f} s",
        f"  actor path       {a['tokens_per_s']:8.1f} tokens/s  {a['completion_tokens']} tokens in "
        f"{a['seconds']:.1f} s ({a['cut_at_max_tokens']}/{a['completions']} cut at max_tokens); "
        f"engine start {a['engine_start_s']:.1f} s (bring-up {a['bring_up_s']:.1f} s); peak "
        f"{a['peak_requests_in_flight']}/{a['max_concurrent_requests']} requests in the engine",
        f"  CPU seconds      offline: engine {o['engine_cpu_s']:.1f}, this process {o['main_cpu_s']:.1f}; actor: "
        f"engine {a['engine_cpu_s']:.1f}, this process {a['main_cpu_s']:.1f}, nats-server "
        f"{a['nats_server_cpu_s']:.1f}",
        f"  outside engine   {o['outside_engine_cpu_ms_per_token']:.3f} ms CPU per token offline, "
        f"{a['outside_engine_cpu_ms_per_token']:.3f} ms actor path",
        f"  load average     {o['load_avg_1m_start']:.1f} -> {o['load_avg_1m_end']:.1f} offline, "
        f"{a['load_avg_1m_start']:.1f} -> {a['load_avg_1m_end']:.1f} actor ({r['cpus']} CPUs)",
        f"  actor / offline  {r['ratio']:.3f} tokens/s  (goal >= {r['goal']:g}: "
        f"{'met' if r['meets_goal'] else 'NOT met'}); {r['engine_cpu_ratio']:.3f} in tokens per engine CPU second",
        *_backend_lines(r),
    ])  # fmt: skip


def _backend_lines(r: dict[str, Any]) -> list[str]:
    """One line per backend beside vLLM in-process: the same prompts through the actor on it."""
    others = {k: v for k, v in r.get("backends", {}).items() if k != "vllm"}
    if not others:
        return []
    out = ["  the actor path per backend (model.engine), same prompts, against the offline run:"]
    for name, b in [("vllm", r["backends"]["vllm"]), *others.items()]:
        out.append(
            f"    {name:<12} {b['tokens_per_s']:8.1f} tokens/s  {b['completion_tokens']} tokens in "
            f"{b['seconds']:.1f} s ({b['cut_at_max_tokens']}/{b['completions']} cut at max_tokens); "
            f"engine start {b['engine_start_s']:.1f} s; / offline {b['ratio']:.3f}"
        )
    return out


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for the block (vLLM and its engine processes log to
    stdout), so that stdout carries only the result."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
