"""`soar bench learning`: does SOAR's loop make the model better, on this machine?

One model, one fixed set of measured tasks, three kinds of search with the same budget:

- generation 0: the base model's search;
- generations 1.. G-1: the full loop (`soar daemon` with `daemon.generations = G`): the archive's
  programs relabelled through the reuse filters, plus seed examples (the built-in baseline
  programs of *other* tasks), a LoRA trained from the base model, hot-swapped into the LLM
  worker, the next search;
- the control: a LoRA trained from the base model on seed-style data alone (baseline programs of
  other tasks, relabelled the same way, never a measured task) with about as many training
  tokens as the last generation's model was trained on, then one search of the measured tasks.

Why a control: a trained generation may do better only because training on *any* ARC-shaped
chat data teaches a 135M model the answer format (a fenced `transform`). The loop has learnt
from its own programs only if its last generation beats a model trained on as many tokens of
data that holds none of them. Why the same number of tokens: more training tokens alone make
the format stick better.

The control is searched through the same mechanism as the loop's generations: an embedded
system (executors, LLM worker, proposer, refiner, archive), a `ModelUpdated` naming the adapter
directory, which the LLM worker takes up (vLLM merges it and serves the merged weights on CPU;
the scripted test double takes up any real PEFT directory), and a search whose requests name
that version. `--repeats R` searches every model R times in all (R-1 more searches in fresh run
directories, each with another `model.seed`), so the spread of sampling alone can be set
against the differences; the headline numbers are always the first search of each model (the
loop's own, as `soar results` shows it), the spread is min / max / mean over the R searches.

Numbers per generation and for the control (from the archive, `soar_async.search.generations`):
usable share, mean train-pair accuracy over all completions (a non-usable completion counts
0), distinct programs right on every train pair and tasks with one, tasks solved by that
search's own vote, and why completions were not usable: no code, not runnable on every input,
and the share failing each reuse filter (a completion may fail several). Plus search tokens/s
and the training (time, examples, tokens) that made the model.

Layout of the run directory: `loop/` (the daemon's run), `control-train/` (the control's data
and adapter), `control/` (its search), `repeats/` (extra searches), `learning.json` (the
result). Every phase leaves a marker, so the same command on the same run directory continues
(or only prints, when everything is done); other settings on the same directory are refused,
but for `--repeats`, which may grow (the searches it adds are the only work done then).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from soar_async.arc import Task, load_tasks
from soar_async.config import Config, apply

Progress = Callable[[str], None]

POOL = "arc-agi-1:training"
"""Where the measured tasks and the seed tasks come from (the issue's hand measurement)."""
DEFAULT_TASKS = "20"
DEFAULT_SAMPLES = 16
DEFAULT_SEED_TASKS = "7"
DEFAULT_SEED_EXAMPLES = 8
"""7 seed tasks x 8 examples: about 56 relabelled seed examples, the hand measurement's."""
DEFAULT_GENERATIONS = 3
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MIN_P = 0.05
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "cpu-small.toml"

FILTERS = ("degenerate", "near_constant", "identity_like", "hardcoded")
"""The reuse filters (`soar_async.scoring.filter_reasons`), in its order."""
METRICS = ("usable_share", "mean_train_accuracy", "right_on_train", "tasks_right_on_train", "tasks_solved", "score")
"""What `--repeats` reports a spread of (and tokens_per_s)."""
CONTROLLED_KEYS = (
    "run.tasks", "search.samples_per_task", "search.refinements_per_task", "search.temperature", "search.min_p",
    "search.max_tokens_sample", "search.stop_after_correct", "daemon.mode", "daemon.generations",
    "daemon.seed_programs", "daemon.seed_examples_per_task",
)  # fmt: skip
"""Keys this benchmark sets itself (from its options, or fixed); `--set` on one would be overwritten
without a word, so it is refused."""

SETTINGS_FILE = "settings.json"
RESULT_FILE = "learning.json"
LOOP_STATE = "conductor-state.json"
SEARCH_MARK = "search.json"


class LearningBenchError(ValueError):
    """A phase of the benchmark failed (a training dead-lettered, the loop stopped early); a
    ValueError, which the command line prints as one `soar: error:` line."""


@dataclass(frozen=True, slots=True)
class LearningSettings:
    """The benchmark's own options (the rest is the configuration: model, training, sandbox).

    `tasks` and `seed_tasks` are a count (the N ARC-AGI-1 training tasks with the shortest
    sampling prompts, measured tasks first, seed tasks after them) or a task selector.
    """

    tasks: str = DEFAULT_TASKS
    samples: int = DEFAULT_SAMPLES
    refinements: int = 0
    temperature: float = DEFAULT_TEMPERATURE
    min_p: float = DEFAULT_MIN_P
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed_tasks: str = DEFAULT_SEED_TASKS
    seed_examples_per_task: int = DEFAULT_SEED_EXAMPLES
    generations: int = DEFAULT_GENERATIONS
    repeats: int = 1
    learning_rate: float | None = None
    """None: the configuration's `train.learning_rate`."""

    def __post_init__(self) -> None:
        if self.generations < 2:
            raise ValueError("--generations must be at least 2 (generation 0, then at least one trained model)")
        if self.samples < 1 or self.refinements < 0 or self.repeats < 1 or self.seed_examples_per_task < 1:
            raise ValueError("--samples, --repeats and --seed-examples-per-task must be at least 1, --refinements 0+")
        if self.max_tokens < 1:
            raise ValueError("--max-tokens must be at least 1")


# --- which tasks ---------------------------------------------------------------------------------


def prompt_length(task: Task) -> int:
    """Characters of the task's sampling prompt (system + user): what orders the pool."""
    from soar_async.prompts import sampling_messages

    return sum(len(m["content"]) for m in sampling_messages(task))


def prompt_order(tasks: Sequence[Task]) -> list[Task]:
    """Shortest sampling prompt first, then by id: deterministic, and short prompts fit a small
    model's context and `train.max_seq_len` with room for the program."""
    return sorted(tasks, key=lambda t: (prompt_length(t), t.id))


def _is_count(spec: str) -> bool:
    # An ARC task id is 8 hex digits (some all decimal): a count is shorter.
    return spec.strip().isdigit() and len(spec.strip()) < 8


@dataclass(frozen=True, slots=True)
class Picked:
    """Tasks and the selector that names them for the daemon (`run.tasks`, a `baseline:` seed source)."""

    tasks: list[Task]
    selector: str

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tasks]


def pick_tasks(spec: str, pool: Sequence[Task], *, exclude: Sequence[str] = ()) -> Picked:
    """A count N (the first N of `pool` not in `exclude`) or a selector (its tasks, less `exclude`,
    which the seed source leaves out by itself)."""
    excluded = set(exclude)
    if _is_count(spec):
        n = int(spec)
        chosen = [t for t in pool if t.id not in excluded][:n]
        if len(chosen) < n:
            raise ValueError(f"only {len(chosen)} tasks left in {POOL} for a count of {n}")
        return Picked(chosen, _selector(chosen))
    chosen = [t for t in load_tasks(spec) if t.id not in excluded]
    if not chosen:
        raise ValueError(f"task selector {spec!r} names no task (measured tasks are never seeds)")
    return Picked(chosen, spec)


def _selector(tasks: Sequence[Task]) -> str:
    """A selector naming exactly these tasks of the pool, in this order."""
    return f"{POOL}#" + ",".join(t.id for t in tasks)


# --- configuration -------------------------------------------------------------------------------


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse `--set` on a key the benchmark sets from its own options (it would be overwritten)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in CONTROLLED_KEYS:
            raise ValueError(f"--set {key}: this benchmark sets it itself (from its options, see --help)")


def bench_config(cfg: Config, settings: LearningSettings, measured: Picked, seeds: Picked) -> Config:
    """`cfg` with the benchmark's search budget, tasks, generations and seeds.

    `search.stop_after_correct` is 0: every search spends the whole budget, so the shares of all
    the searches are over the same number of completions."""
    search: dict[str, Any] = {
        "samples_per_task": settings.samples,
        "refinements_per_task": settings.refinements,
        "temperature": settings.temperature,
        "min_p": settings.min_p,
        "max_tokens_sample": settings.max_tokens,
        "stop_after_correct": 0,
    }
    values: dict[str, dict[str, Any]] = {
        "search": search,
        "run": {"tasks": measured.selector},
        "daemon": {
            "mode": "train-tasks",
            "generations": settings.generations,
            "seed_programs": "baseline:" + seeds.selector,
            "seed_examples_per_task": settings.seed_examples_per_task,
        },
    }
    if settings.learning_rate is not None:
        values["train"] = {"learning_rate": settings.learning_rate}
    return apply(cfg, values, "soar bench learning")


def base_model_dir(cfg: Config) -> Path:
    """The directory every training starts from (as the trainer resolves it)."""
    from soar_async.llm.models import resolve_model_path

    return resolve_model_path(cfg.train.base_model or cfg.model.path)


def settings_record(
    cfg: Config, settings: LearningSettings, measured: Picked, seeds: Picked, config_file: str | None
) -> dict[str, Any]:
    """What a result was measured with (also what a continued run must agree with)."""
    tr = cfg.train
    return {
        "tasks": measured.ids,
        "task_choice": f"the {settings.tasks} {POOL} tasks with the shortest sampling prompts"
        if _is_count(settings.tasks)
        else settings.tasks,
        "samples": settings.samples,
        "refinements": settings.refinements,
        "temperature": settings.temperature,
        "min_p": settings.min_p,
        "max_tokens": settings.max_tokens,
        "generations": settings.generations,
        "repeats": settings.repeats,
        "seed_tasks": seeds.ids,
        "seed_examples_per_task": settings.seed_examples_per_task,
        "config_file": config_file,
        "model": {"engine": cfg.model.engine, "path": cfg.model.path or "(default model)", "seed": cfg.model.seed},
        "train": {
            "base_model": tr.base_model or "(model.path)",
            "learning_rate": tr.learning_rate,
            "lora_rank": tr.lora_rank,
            "lora_alpha": tr.lora_alpha,
            "epochs": tr.epochs,
            "effective_batch_size": tr.effective_batch_size,
            "max_seq_len": tr.max_seq_len,
        },
    }


def same_measurement(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a run directory's stored settings allow continuing with `now`: all but `repeats`
    must agree. More repeats on a finished run search each model again, no more than that (the
    searches done are kept); fewer use the first ones."""
    return {k: v for k, v in before.items() if k != "repeats"} == {k: v for k, v in now.items() if k != "repeats"}


# --- reading a search's archive ------------------------------------------------------------------


def completion_breakdown(run_dir: Path) -> dict[tuple[int, str], Counter[str]]:
    """Per (generation, model version): completions, and how many were usable or why not (no code,
    never evaluated, not runnable on every input, each failed reuse filter; several may fail)."""
    from soar_async.records import ProgramRecord
    from soar_async.scoring import filter_reasons
    from soar_async.search.results import open_archive

    out: dict[tuple[int, str], Counter[str]] = {}
    stores = open_archive(run_dir)
    try:
        by_task: dict[str, list[Any]] = {}
        for s in stores:
            for tid in s.task_ids():
                by_task.setdefault(tid, []).append(s)
        for tid, holders in sorted(by_task.items()):
            task = holders[0].task(tid)
            recs: dict[str, ProgramRecord] = {}
            comps: dict[tuple[int, str], Counter[str | None]] = {}
            for store in holders:
                for norm, rec in store.norm_records(tid):
                    recs.setdefault(norm, rec)
                for row, counts in store.generation_completions(tid).items():
                    comps.setdefault(row, Counter()).update(counts)
            reasons: dict[str, list[str] | None] = {
                norm: filter_reasons(rec, task) if rec.all_outputs_valid else None for norm, rec in recs.items()
            }
            for row, counts in comps.items():
                acc = out.setdefault(row, Counter())
                for norm, n in counts.items():
                    acc["completions"] += n
                    if norm is None:
                        acc["no_code"] += n
                    elif norm not in recs:
                        acc["not_evaluated"] += n
                    elif reasons[norm] is None:
                        acc["not_runnable"] += n
                    elif not reasons[norm]:
                        acc["usable"] += n
                    else:
                        for r in reasons[norm] or ():
                            acc[r] += n
    finally:
        for s in stores:
            s.close()
    return out


def _share(n: int, d: int) -> float | None:
    return n / d if d else None


def search_row(stats: Any, breakdown: Counter[str], search_s: float | None) -> dict[str, Any]:
    """One searched model's numbers: `GenerationStats` plus the reasons completions were not usable
    and the search's tokens/s (completion tokens over the search's wall time)."""
    comps = breakdown.get("completions", 0)
    counted = {*FILTERS, "completions", "usable", "no_code", "not_runnable", "not_evaluated"}
    reasons = [*FILTERS, *sorted(k for k in breakdown if k not in counted)]  # a filter added later shows too
    return {
        "generation": stats.generation,
        "model_version": stats.model_version,
        "tasks": stats.tasks,
        "completions": stats.completions,
        "usable": stats.usable,
        "usable_share": stats.usable_share,
        "mean_train_accuracy": stats.mean_train_accuracy,
        "programs": stats.programs,
        "new_programs": stats.new_programs,
        "right_on_train": stats.right_on_train,
        "tasks_right_on_train": stats.tasks_right_on_train,
        "tasks_solved": stats.solved,
        "scored": stats.scored,
        "score": stats.score,
        "tokens": stats.tokens,
        "search_s": None if search_s is None else round(search_s, 1),
        "tokens_per_s": round(stats.tokens / search_s, 1) if search_s else None,
        "no_code_share": _share(breakdown.get("no_code", 0), comps),
        "not_runnable_share": _share(breakdown.get("not_runnable", 0) + breakdown.get("not_evaluated", 0), comps),
        "rejected_share": {r: _share(breakdown.get(r, 0), comps) for r in reasons},
    }


def _rows(run_dir: Path) -> dict[tuple[int, str], Any]:
    from soar_async.search.generations import generation_stats

    return {(s.generation, s.model_version): s for s in generation_stats(run_dir)}


PER_TASK = ("usable_share", "mean_train_accuracy", "right_on_train", "solved")
"""What each row keeps per task (`per_task`): the paired comparison's inputs, and which tasks moved."""


def per_task(run_dir: Path) -> dict[tuple[int, str], dict[str, dict[str, Any]]]:
    """Per (generation, model version): {task id: PER_TASK numbers of that task's search}."""
    from soar_async.search.generations import task_stats

    return {
        row: {tid: {k: getattr(st, k) for k in PER_TASK} for tid, st in tasks.items()}
        for row, tasks in task_stats(run_dir).items()
    }


# --- the loop ------------------------------------------------------------------------------------


async def _fail_on_dead_letters(run_dir: Path, up: anyio.Event, roles: Sequence[str]) -> None:
    """Raise once a message of `roles` is dead-lettered (a training that failed for good): the
    conductor would otherwise wait for its model forever."""
    from soar_async.bus.conn import Bus, BusConfig
    from soar_async.bus.topology import dead_letter_subject
    from soar_async.runtime.discovery import URL_FILE

    await up.wait()
    url = (run_dir / URL_FILE).read_text().strip()
    async with await Bus.connect(BusConfig.from_url(url), name="soar-bench-learning-watch") as bus:
        subs = [await bus.nc.subscribe(dead_letter_subject(r)) for r in roles]
        async with anyio.create_task_group() as tg:

            async def watch(sub: Any, role: str) -> None:
                async for m in sub.messages:
                    reason = (m.headers or {}).get("Soar-Reason", "no reason given")
                    reason = reason.split(" --- ")[0]  # the trainer's stderr tail is in the run's log
                    raise LearningBenchError(f"the loop's {role} gave up on a message: {reason}")

            for sub, role in zip(subs, roles, strict=True):
                tg.start_soon(watch, sub, role)


async def run_loop(cfg: Config, loop_dir: Path, progress: Progress) -> dict[str, Any]:
    """The daemon's run (search, dataset, train, swap, ... for `daemon.generations` searches), or
    its saved end state when it finished before; returns the conductor's state as a dict."""
    from soar_async.learn.daemon import run_daemon

    saved = loop_dir / LOOP_STATE
    if saved.is_file():
        state = json.loads(saved.read_text())
        if state.get("phase") == "done":
            progress(f"loop: done before ({len(state.get('history', []))} generations), read from {saved}")
            return state
    up = anyio.Event()
    seen: list[tuple[int, str]] = []

    def on_state(st: Any) -> None:
        up.set()
        now = (st.generation, st.phase)
        if not seen or seen[-1] != now:
            seen.append(now)
            progress(f"loop: generation {st.generation}: {st.phase} (model {st.model_version or 'base'})")

    result: dict[str, Any] = {}

    async def daemon(tg: anyio.abc.TaskGroup) -> None:
        state = await run_daemon(cfg, run_dir=loop_dir, on_state=on_state, handle_signals=True)
        result["state"] = state
        tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon, tg)
            tg.start_soon(_fail_on_dead_letters, loop_dir, up, ("trainer",))
    except BaseExceptionGroup as eg:
        raise _first(eg) from None
    state = result.get("state")
    if state is None or getattr(state, "phase", None) != "done":
        where = f"generation {state.generation}, phase {state.phase}" if state is not None else "before it began"
        raise LearningBenchError(f"the loop stopped in {where}; the same command continues it")
    data = dataclasses.asdict(state)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(saved)
    return data


def _first(eg: BaseExceptionGroup) -> BaseException:
    """The first exception of a task group's group, ours first: a one-line error, not a tree."""
    ours = eg.subgroup(LearningBenchError)
    found: BaseException = (ours or eg).exceptions[0]
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def train_result(loop_dir: Path, generation: int) -> dict[str, Any] | None:
    """The result of the training requested after `generation`'s search (it made the model of
    generation + 1): its examples and tokens, which the conductor's history does not keep."""
    from soar_async.train.lora import read_result

    for work in sorted((loop_dir / "train").glob(f"train-g{generation}-*")):
        res = read_result(work / "out" / "adapter")
        if res is not None:
            return {**res.to_dict(), "dataset": str(work / "dataset.jsonl")}
    return None


# --- the control ---------------------------------------------------------------------------------


def control_examples(
    cfg: Config,
    pool: Sequence[Task],
    measured: Picked,
    seeds: Picked,
    target_tokens: int,
    per_task: int,
    progress: Progress,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Seed-style examples of other tasks with about `target_tokens` training tokens.

    The loop's own seeds first (the same call the conductor makes), then the baseline programs of
    the next tasks of `pool` (never a measured one), relabelled the same way, example by example
    until the tokens (prompt + answer, as the trainer counts them; too long examples dropped as it
    drops them) come closest to the target."""
    from transformers import AutoTokenizer

    from soar_async.learn.dataset import seed_examples
    from soar_async.train.data import ExampleTooLong, encode_example

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir(cfg)))
    excluded = measured.ids
    used = {*seeds.ids, *excluded}
    extra = [t for t in pool if t.id not in used]
    batches: list[str] = [cfg.daemon.seed_programs]  # the loop's seeds, as the conductor names them
    batches += ["baseline:" + _selector(extra[i : i + 10]) for i in range(0, len(extra), 10)]
    chosen: list[dict[str, Any]] = []
    tasks: list[str] = []
    tokens = dropped = 0
    for source in batches:
        examples, _ = seed_examples(source, excluded, per_task=per_task)  # as the conductor calls it
        for e in examples:
            try:
                n = len(encode_example(tokenizer, e["messages"], cfg.train.max_seq_len))
            except ExampleTooLong:
                dropped += 1
                continue
            if tokens >= target_tokens or (chosen and abs(tokens + n - target_tokens) > abs(tokens - target_tokens)):
                break
            chosen.append(e)
            tokens += n
            if e.get("task_id") not in tasks:
                tasks.append(str(e.get("task_id")))
        else:
            progress(f"control data: {len(chosen)} examples, {tokens} of {target_tokens} tokens so far")
            continue
        break
    info = {
        "examples": len(chosen),
        "tokens_counted": tokens,
        "target_tokens": target_tokens,
        "dropped_too_long": dropped,
        "seed_tasks_available": len(seeds.tasks) + len(extra),
        "tasks": tasks,
    }
    if tokens < target_tokens * 0.9:
        info["short_of_target"] = True
    return chosen, info


async def train_control(
    cfg: Config, examples: Sequence[dict[str, Any]], work: Path, progress: Progress
) -> dict[str, Any]:
    """Train the control's LoRA from the base model with the loop's training settings (as the
    trainer does, in a child process; an existing adapter of the same data is reused)."""
    from soar_async.train.lora import TrainSpec
    from soar_async.train.process import run_training

    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "dataset.jsonl"
    text = "".join(json.dumps(e) + "\n" for e in examples)
    if not dataset.is_file() or dataset.read_text() != text:
        dataset.write_text(text)
    spec = TrainSpec.from_config(
        cfg.train, base_model=str(base_model_dir(cfg)), dataset=str(dataset), out_dir=str(work / "out")
    )
    last = [0.0]

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("event") == "train_progress" and time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            progress(f"control training: step {ev.get('step')}/{ev.get('steps')}, loss {ev.get('loss'):.3f}")

    t0 = time.perf_counter()
    res = await run_training(spec, on_event)
    out = res.to_dict()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


# --- searching one model -------------------------------------------------------------------------


async def search_model(
    cfg: Config,
    tasks: Sequence[Task],
    run_dir: Path,
    *,
    version: str = "",
    adapter_dir: Path | None = None,
    progress: Progress,
) -> float:
    """One search of `tasks` (generation 0 of `run_dir`) by the base model, or by the adapter
    taken up as `version` the way the loop's LLM workers take up a new model; returns its
    seconds (from a marker when it was done before)."""
    from soar_async.bus.conn import Bus
    from soar_async.messages import ModelUpdated
    from soar_async.runtime.registry import live_workers
    from soar_async.runtime.roles import SEARCH_ACTORS
    from soar_async.runtime.system import ActorSpec, bring_up
    from soar_async.sandbox import ensure_built
    from soar_async.search.run import follow_search

    mark = run_dir / SEARCH_MARK
    if mark.is_file():
        return float(json.loads(mark.read_text())["seconds"])
    await anyio.to_thread.run_sync(ensure_built)
    actors = [
        ActorSpec("executor", cfg.sandbox.workers or None),
        ActorSpec("llm", None),
        *(ActorSpec(role, n) for role, n in SEARCH_ACTORS),
    ]
    async with (
        bring_up(cfg, run_dir=run_dir, actors=actors, name="bench-learning") as system,
        await Bus.connect(system.bus_config, name="soar-bench-learning") as client,
    ):
        if adapter_dir is not None:
            mu = ModelUpdated(version=version, adapter_path=str(adapter_dir), base_model=str(base_model_dir(cfg)))
            await client.js_publish(mu.subject(), mu.encode(), msg_id=mu.dedup_id())
            with anyio.move_on_after(cfg.daemon.swap_timeout_s) as scope:
                while True:  # as the conductor's swap: the worker serves it before the search begins
                    llms = [hb for hb in await live_workers(client) if hb.role == "llm"]
                    if llms and all(hb.info.get("model_version") == version for hb in llms):
                        break
                    await anyio.sleep(1.0)
            # Late or not, the requests name the version: no other model answers them.
            progress(f"  {run_dir.name}: {'still loading' if scope.cancelled_caught else 'serving'} {version}")
        outcome = await follow_search(client, tasks, config=cfg, generation=0, model_version=version)
    if outcome.unfinished:
        raise LearningBenchError(f"the search in {run_dir} left {len(outcome.unfinished)} task(s) unfinished")
    mark.write_text(json.dumps({"seconds": outcome.seconds, "version": version or "base"}))
    return outcome.seconds


def _searched(run_dir: Path, seconds: float) -> dict[str, Any]:
    """The one row of a single-search run directory."""
    rows = _rows(run_dir)
    if len(rows) != 1:
        raise LearningBenchError(f"{run_dir}: expected one searched model, found {sorted(rows)}")
    key, stats = next(iter(rows.items()))
    row = search_row(stats, completion_breakdown(run_dir).get(key, Counter()), seconds)
    row["per_task"] = per_task(run_dir).get(key, {})
    return row


# --- the whole benchmark -------------------------------------------------------------------------


def spread(samples: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """min / max / mean of each metric over the searches of one model (None values left out)."""
    out: dict[str, dict[str, Any]] = {}
    for k in (*METRICS, "tokens_per_s"):
        vals = [s[k] for s in samples if s.get(k) is not None]
        if vals:
            out[k] = {"n": len(vals), "min": min(vals), "max": max(vals), "mean": sum(vals) / len(vals)}
    return out


def _sign(d: float) -> str:
    return "higher" if d > 0 else "lower" if d < 0 else "equal"


def _value(row: dict[str, Any], key: str) -> float | None:
    """The mean over the repeats when there are several, else the one search's value."""
    sp = row.get("spread", {}).get(key)
    return sp["mean"] if sp and sp["n"] > 1 else row.get(key)


BOOTSTRAP_DRAWS = 10_000


def task_means(searches: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """{task id: `key` averaged over the searches of one model} (tasks without a value left out)."""
    vals: dict[str, list[float]] = {}
    for search in searches:
        for tid, nums in (search.get("per_task") or {}).items():
            if nums.get(key) is not None:
                vals.setdefault(tid, []).append(nums[key])
    return {tid: sum(v) / len(v) for tid, v in vals.items()}


def paired_over_tasks(new: dict[str, float], old: dict[str, float], *, seed: int = 0) -> dict[str, Any] | None:
    """The difference new - old, task by task, with a 95% bootstrap interval over the tasks.

    Why paired over tasks: both models searched the same tasks, and tasks differ far more from
    each other than two models do on one task; differencing per task removes that, and
    resampling the tasks (with replacement, `BOOTSTRAP_DRAWS` times, a fixed seed) shows how far
    the mean difference moves with which tasks happened to be measured and how each search's
    samples fell. An interval that holds 0 means the data cannot tell the two models apart.
    None when fewer than two tasks have both numbers."""
    common = sorted(new.keys() & old.keys())
    if len(common) < 2:
        return None
    diffs = [new[t] - old[t] for t in common]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(BOOTSTRAP_DRAWS))
    lo, hi = means[int(0.025 * BOOTSTRAP_DRAWS)], means[int(0.975 * BOOTSTRAP_DRAWS) - 1]
    return {
        "tasks": n,
        "mean_difference": sum(diffs) / n,
        "interval95": [lo, hi],
        "beyond_noise": lo > 0 or hi < 0,
        "tasks_higher": sum(d > 0 for d in diffs),
        "tasks_lower": sum(d < 0 for d in diffs),
    }


def verdict(
    gens: Sequence[dict[str, Any]],
    control: dict[str, Any],
    repeats: int,
    searches: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Whether the last generation beats the control and whether the numbers rise generation by
    generation (usable share, mean train accuracy); with repeats, whether the gap is beyond the
    spread (the last generation's worst search above the control's best). With `searches`
    (every search of each model, by "g<N>" and "control", carrying `per_task`), each comparison
    also gets its paired interval over tasks (`paired_over_tasks`): whether it is beyond noise."""
    last = gens[-1]
    searches = searches or {}
    out: dict[str, Any] = {"last_generation": last["generation"], "repeats": repeats}

    def paired(a: str, b: str, key: str) -> dict[str, Any] | None:
        if a not in searches or b not in searches:
            return None
        return paired_over_tasks(task_means(searches[a], key), task_means(searches[b], key))

    for key in ("usable_share", "mean_train_accuracy"):
        g, c = _value(last, key), _value(control, key)
        d = None if g is None or c is None else g - c
        entry: dict[str, Any] = {"generation": g, "control": c, "difference": d}
        entry["beats_control"] = d is not None and d > 0
        if repeats > 1:
            gs, cs = last.get("spread", {}).get(key), control.get("spread", {}).get(key)
            if gs and cs:
                entry["beyond_spread"] = gs["min"] > cs["max"] or gs["max"] < cs["min"]
        entry["paired"] = paired(f"g{last['generation']}", "control", key)
        out[key + "_vs_control"] = entry
        series = [_value(g_, key) for g_ in gens]
        steps = [None if a is None or b is None else b - a for a, b in itertools.pairwise(series)]
        out[key + "_by_generation"] = {
            "values": series,
            "steps": steps,
            "rises_every_step": all(s is not None and s > 0 for s in steps),
            "paired_steps": [
                paired(f"g{b['generation']}", f"g{a['generation']}", key) for a, b in itertools.pairwise(gens)
            ],
        }
    return out


async def run_learning_bench(
    cfg: Config,
    settings: LearningSettings,
    run_dir: Path,
    *,
    config_file: str | None = None,
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """The loop, the control, the repeats; the result (also written to `run_dir/learning.json`)."""
    t_start = time.perf_counter()
    progress(f"choosing tasks from {POOL} by sampling-prompt length ...")
    pool = prompt_order(await anyio.to_thread.run_sync(load_tasks, POOL))
    measured = pick_tasks(settings.tasks, pool)
    seeds = pick_tasks(settings.seed_tasks, pool, exclude=measured.ids)
    cfg = bench_config(cfg, settings, measured, seeds)
    record = settings_record(cfg, settings, measured, seeds, config_file)
    run_dir.mkdir(parents=True, exist_ok=True)
    stored = run_dir / SETTINGS_FILE
    if stored.is_file() and not same_measurement(json.loads(stored.read_text()), json.loads(json.dumps(record))):
        raise ValueError(
            f"{run_dir} holds a learning benchmark with other settings (only --repeats may change); "
            "choose another --run-dir"
        )
    stored.write_text(json.dumps(record, indent=1))
    progress(
        f"measured: {len(measured.tasks)} tasks ({', '.join(measured.ids[:5])}...), seeds from "
        f"{len(seeds.tasks)} other tasks; run dir {run_dir}"
    )

    # 1. The loop: generation 0 (base), then the trained generations.
    loop_dir = run_dir / "loop"
    state = await run_loop(cfg, loop_dir, progress)
    history = {h["generation"]: h for h in state.get("history", [])}
    rows = _rows(loop_dir)
    breakdown = completion_breakdown(loop_dir)
    tasks_of = per_task(loop_dir)
    gens: list[dict[str, Any]] = []
    for g in range(settings.generations):
        h = history.get(g, {})
        version = h.get("model_version", "base")
        stats = rows.get((g, version))
        if stats is None:
            raise LearningBenchError(f"{loop_dir}: no completions of generation {g} by {version}")
        row = search_row(stats, breakdown.get((g, version), Counter()), h.get("search_s"))
        row["dataset"] = h.get("dataset")  # built after this search: the next model's data
        row["per_task"] = tasks_of.get((g, version), {})
        if g > 0:
            made = dict(history.get(g - 1, {}).get("train") or {})
            res = train_result(loop_dir, g - 1)
            if res is not None:
                made.update(tokens=res["tokens"], answer_tokens=res["answer_tokens"], adapter_dir=res["adapter_dir"])
            row["train"] = made
        gens.append(row)
    target = (gens[-1].get("train") or {}).get("tokens")
    if not target:
        raise LearningBenchError(f"{loop_dir}: no training result for generation {settings.generations - 1}'s model")

    # 2. The control: seed-style data alone, as many tokens as the last generation's training.
    work = run_dir / "control-train"
    data_mark, train_mark = work / "data.json", work / "trained.json"
    if data_mark.is_file() and train_mark.is_file():  # the settings, hence the data, are those of before
        data_info, trained = json.loads(data_mark.read_text()), json.loads(train_mark.read_text())
        progress(f"control: trained before, {trained['adapter_dir']}")
    else:
        progress(f"control: seed data of other tasks up to {target} training tokens ...")
        examples, data_info = await anyio.to_thread.run_sync(
            lambda: control_examples(cfg, pool, measured, seeds, target, settings.seed_examples_per_task, progress)
        )
        progress(f"control: training on {len(examples)} examples ({data_info['tokens_counted']} tokens) ...")
        trained = await train_control(cfg, examples, work, progress)
        data_mark.write_text(json.dumps(data_info, indent=1))
        train_mark.write_text(json.dumps(trained, indent=1))
    digest = hashlib.sha256((work / "dataset.jsonl").read_bytes()).hexdigest()
    control_version = f"control-{digest[:8]}"
    progress(f"control: searching with {control_version} ...")
    seconds = await search_model(
        cfg, measured.tasks, run_dir / "control", version=control_version, adapter_dir=Path(trained["adapter_dir"]),
        progress=progress,
    )  # fmt: skip
    control = _searched(run_dir / "control", seconds)
    control["train"] = {
        "version": control_version,
        **{k: trained.get(k) for k in ("steps", "examples", "dropped", "first_loss", "final_loss", "seconds")},
        **{k: trained.get(k) for k in ("tokens_per_s", "wall_s", "tokens", "answer_tokens", "adapter_dir")},
    }
    control["data"] = data_info

    # 3. Repeats: every model searched R times in all, each time with another engine seed.
    samples: dict[str, list[dict[str, Any]]] = {f"g{r['generation']}": [r] for r in gens}
    samples["control"] = [control]
    for r in range(1, settings.repeats):
        rcfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, seed=cfg.model.seed + r))
        models: list[tuple[str, str, Path | None]] = [
            (f"g{row['generation']}", row["model_version"] if row["generation"] else "",
             Path(row["train"]["adapter_dir"]) if row.get("train", {}).get("adapter_dir") else None)
            for row in gens
        ]  # fmt: skip
        models.append(("control", control_version, Path(trained["adapter_dir"])))
        for name, version, adapter in models:
            if version and adapter is None:
                raise LearningBenchError(f"no adapter of {version} to search again")
            where = run_dir / "repeats" / f"{name}-r{r}"
            progress(f"repeat {r + 1}/{settings.repeats}: searching {name} ({version or 'base'}) ...")
            secs = await search_model(
                rcfg, measured.tasks, where, version=version, adapter_dir=adapter, progress=progress
            )
            samples[name].append(_searched(where, secs))
    for row in gens:
        row["spread"] = spread(samples[f"g{row['generation']}"])
    control["spread"] = spread(samples["control"])

    result = {
        "settings": record,
        "run_dir": str(run_dir),
        "generations": gens,
        "control": control,
        "verdict": verdict(gens, control, settings.repeats, samples),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=1))
    return result


# --- rendering -----------------------------------------------------------------------------------


def _f(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def _noise(p: dict[str, Any] | None) -> str:
    """The noise clause after a difference, e.g. ', paired over 20 tasks: 95% interval -0.010..+0.050,
    within the noise' (empty without a paired comparison)."""
    if not p:
        return ""
    lo, hi = p["interval95"]
    word = "beyond the noise" if p["beyond_noise"] else "within the noise"
    return f", paired over {p['tasks']} tasks: 95% interval {_signed(lo)}..{_signed(hi)}, {word}"


def render(res: dict[str, Any]) -> str:
    """The tables and the verdict lines (`--json` prints `res` itself)."""
    s = res["settings"]
    rows = [(f"gen {g['generation']}", g) for g in res["generations"]] + [("control", res["control"])]
    head = (
        f"{'':<9} {'model':<16} {'compl':>5} {'usable':>6} {'mean acc':>8} {'right':>5} {'tasks':>5} "
        f"{'solved':>6} {'score':>6} {'tokens':>7} {'tok/s':>6} {'search s':>8} {'train s':>7} {'train tok':>9}"
    )
    out = [
        f"soar bench learning: {len(s['tasks'])} tasks ({s['task_choice']}), {s['samples']} samples each, "
        f"{s['refinements']} refinements, temperature {s['temperature']}, min_p {s['min_p']}, "
        f"{s['max_tokens']} new tokens; model {s['model']['engine']} {s['model']['path']}; "
        f"seeds: {len(s['seed_tasks'])} other tasks x {s['seed_examples_per_task']} examples; "
        f"lr {s['train']['learning_rate']}, rank {s['train']['lora_rank']}, {s['train']['epochs']} epochs",
        f"run dir {res['run_dir']}; {res['seconds']:.0f} s in all",
        "",
        head,
        "-" * len(head),
    ]
    for name, r in rows:
        tr = r.get("train") or {}
        out.append(
            f"{name:<9} {str(r['model_version'])[:16]:<16} {r['completions']:>5} {_f(r['usable_share']):>6} "
            f"{_f(r['mean_train_accuracy']):>8} {r['right_on_train']:>5} {r['tasks_right_on_train']:>5} "
            f"{r['tasks_solved']:>6} {_f(r['score']):>6} {r['tokens']:>7} {_f(r['tokens_per_s'], '.1f'):>6} "
            f"{_f(r['search_s'], '.0f'):>8} {_f(tr.get('seconds'), '.0f'):>7} {_f(tr.get('tokens')):>9}"
        )
    out.append(
        "usable: share of completions fit for training data; mean acc: train-pair accuracy over all completions "
        "(not usable: 0); right: distinct programs right on every train pair; tasks: tasks with one; solved: "
        "tasks the search's own vote solves; train s / train tok: the training that made the model"
    )
    reasons = list(res["generations"][0]["rejected_share"])
    head2 = f"{'not usable, share of completions':<33} {'no code':>7} {'not run':>7} " + " ".join(
        f"{r[:13]:>13}" for r in reasons
    )
    out += ["", head2, "-" * len(head2)]
    for name, r in rows:
        out.append(
            f"{name:<33} {_f(r['no_code_share']):>7} {_f(r['not_runnable_share']):>7} "
            + " ".join(f"{_f(r['rejected_share'].get(x)):>13}" for x in reasons)
        )
    out.append("not run: not a valid grid on every input; a runnable program may fail several filters")
    c = res["control"]
    d = c.get("data", {})
    out += [
        "",
        f"control data: {d.get('examples')} seed examples of {len(d.get('tasks', []))} other tasks, "
        f"{(c.get('train') or {}).get('tokens')} training tokens against {d.get('target_tokens')} of "
        f"generation {res['generations'][-1]['generation']}'s training"
        + (" (the seed pool ran out short of it)" if d.get("short_of_target") else ""),
    ]
    v = res["verdict"]
    n = v["last_generation"]
    parts = []
    for key, label in (("usable_share", "usable share"), ("mean_train_accuracy", "mean train accuracy")):
        e = v[key + "_vs_control"]
        word = "beats" if e["beats_control"] else "does not beat"
        extra = ""
        if "beyond_spread" in e:
            extra = ", beyond the spread" if e["beyond_spread"] else ", within the spread"
        parts.append(
            f"{label} {_f(e['generation'])} vs {_f(e['control'])}: {_signed(e['difference'])} "
            f"({_sign(e['difference'] or 0.0)}; {word} the control{extra}{_noise(e.get('paired'))})"
        )
    out.append(f"verdict: generation {n} vs control: " + "; ".join(parts))
    parts = []
    for key, label in (("usable_share", "usable share"), ("mean_train_accuracy", "mean train accuracy")):
        e = v[key + "_by_generation"]
        chain = " -> ".join(_f(x) for x in e["values"])
        falls = [f"{i}->{i + 1}" for i, st in enumerate(e["steps"]) if st is None or st <= 0]
        how = "rises at every step" if e["rises_every_step"] else "does not rise at " + ", ".join(falls)
        noise = [
            f"{i}->{i + 1}{_noise(p)}" for i, p in enumerate(e.get("paired_steps") or []) if p is not None
        ]  # fmt: skip
        parts.append(f"{label} {chain} ({how}" + ("; " + "; ".join(noise) if noise else "") + ")")
    out.append(
        f"verdict: generations {' -> '.join(str(g['generation']) for g in res['generations'])}: " + "; ".join(parts)
    )
    if v["repeats"] > 1:
        out.append(f"spread over {v['repeats']} searches of each model (min..max, the verdict uses the means):")
        for name, r in rows:
            sp = r.get("spread", {})
            bits = [f"{k} {_f(sp[k]['min'])}..{_f(sp[k]['max'])}" for k in ("usable_share", "mean_train_accuracy")
                    if k in sp]  # fmt: skip
            out.append(f"  {name:<9} " + ", ".join(bits))
    else:
        out.append(
            "spread: one search per model (--repeats 1, the default): no spread measured, so a small difference "
            "may be sampling noise; --repeats R searches each model R times"
        )
    return "\n".join(out)
