"""`soar solve` with the LLM: start the search of every task, follow it, vote, write the submission.

The driver holds no search state. It publishes one `SearchTask` per task (idempotent: the
archive stores a plan once, the proposer and refiner start a phase once), follows the
archive's `TaskStatus` events until every task is done, then asks the archive for each
task's vote. Everything else is the actors': with no NATS URL they run here, embedded
(executors, the LLM worker, proposer, refiner, archive); with one, they are whoever is
attached to that system. A run stopped at any point continues with `resume=True`: the
queues, the events and the archive are in the run directory, so nothing is asked twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats.js.errors

from soar_async.arc import Task
from soar_async.bus.conn import Bus, BusConfig
from soar_async.bus.topology import EVT_TASK_STATUS, KV_TASKS, subject_token
from soar_async.config import Config
from soar_async.logs import get_logger
from soar_async.messages import ArchiveQuery, DecodeError, TaskStatus
from soar_async.runtime.actor import TransientError
from soar_async.runtime.registry import live_workers
from soar_async.runtime.roles import SEARCH_ACTORS
from soar_async.runtime.system import ActorSpec, bring_up
from soar_async.scoring import make_submission, score_task, write_submission
from soar_async.search.common import ask_archive
from soar_async.search.plan import search_task

NEEDED_ROLES = ("executor", "llm", "proposer", "refiner", "archive")


class RunExists(ValueError):
    """The run directory already holds a run and `resume` was not asked for."""


@dataclass(frozen=True, slots=True)
class SearchProgress:
    """Where the whole search stands (reported about once a second)."""

    tasks: int
    done: int
    programs: int
    right_on_train: int
    """Tasks with at least one program right on every train pair."""
    solved: int
    """Done tasks whose vote is right on every test input (where solutions are known)."""
    tokens: int
    elapsed: float

    @property
    def programs_per_s(self) -> float:
        return self.programs / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class SearchReport:
    """What a search produced, also written as `report.json` beside the submission."""

    tasks: int
    programs: int
    tokens: int
    seconds: float
    submission_path: str
    score: float | None = None
    solved: list[str] = field(default_factory=list)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    """Tasks still searching when the timeout came (their vote uses what was archived)."""
    programs_source: str = "llm"
    already_done: bool = False
    """Resumed a run whose tasks were all done: answered from its archive, nothing started."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_run(run_dir: Path) -> bool:
    return any(run_dir.glob("archive*.sqlite"))


async def _check_workers(bus: Bus) -> None:
    """Joining a running system: say which role is missing instead of waiting forever."""
    roles = {hb.role for hb in await live_workers(bus)}
    missing = [r for r in NEEDED_ROLES if r not in roles]
    if missing:
        raise ValueError(
            f"no live {', '.join(missing)} worker(s) on this system: attach them with "
            f"`soar worker --role ROLE --nats URL` (or `soar up --role ...`)"
        )


async def _latest(bus: Bus, task_id: str) -> TaskStatus | None:
    kv = await bus.js.key_value(KV_TASKS)
    try:
        entry = await kv.get(subject_token(task_id))
        return TaskStatus.decode(entry.value or b"")
    except (nats.js.errors.KeyNotFoundError, DecodeError):
        return None


async def search(
    tasks: Sequence[Task],
    *,
    run_dir: Path,
    config: Config | None = None,
    bus: BusConfig | None = None,
    samples: int | None = None,
    refinements: int | None = None,
    resume: bool = False,
    executors: int | None = None,
    timeout: float = 24 * 3600.0,
    generation: int = 0,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchReport:
    """Search `tasks` with the LLM and vote two attempts per test input (see the module doc)."""
    config = config or Config()
    log = get_logger(actor="solve")
    if has_run(run_dir) and not resume and bus is None:
        raise RunExists(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and bus is None:
        finished = _finished_in_store(run_dir, tasks, generation)
        if finished is not None:  # nothing left to do: no need to start a model
            log.info("every task of the run is done already", tasks=len(tasks))
            status = finished
            attempts = _votes_in_store(run_dir, tasks, config)
            t0 = time.perf_counter()
            report = _write_report(run_dir, tasks, status, attempts, t0, unfinished=[], already_done=True)
            return report
    actors: list[ActorSpec] = []
    if bus is None:
        from soar_async.sandbox import ensure_built

        await anyio.to_thread.run_sync(ensure_built)  # minutes on a machine's first run: before any timer
        actors = [
            ActorSpec("executor", executors or config.sandbox.workers or None),
            ActorSpec("llm", None),
            *(ActorSpec(role, n) for role, n in SEARCH_ACTORS),
        ]
    if len({t.id for t in tasks}) != len(tasks):
        raise ValueError("the task list names a task twice")
    t0 = time.perf_counter()
    async with (
        bring_up(config, run_dir=run_dir, bus=bus, actors=actors, name="solve") as system,
        await Bus.connect(system.bus_config, name="soar-solve-client") as client,
    ):
        if bus is not None:
            await _check_workers(client)
        outcome = await follow_search(
            client,
            tasks,
            config=config,
            generation=generation,
            samples=samples,
            refinements=refinements,
            timeout=timeout,
            on_progress=on_progress,
        )
    return _write_report(run_dir, tasks, outcome.status, outcome.attempts, t0, unfinished=outcome.unfinished)


@dataclass
class SearchOutcome:
    """Where a followed search ended: each task's last status and its vote."""

    status: dict[str, TaskStatus]
    attempts: dict[str, list[list[Any]]]
    unfinished: list[str]
    scores: dict[str, float]
    seconds: float


async def follow_search(
    client: Bus,
    tasks: Sequence[Task],
    *,
    config: Config,
    generation: int = 0,
    samples: int | None = None,
    refinements: int | None = None,
    model_version: str = "",
    timeout: float = 24 * 3600.0,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchOutcome:
    """Start one generation's search of `tasks` (idempotent) and follow it until every task is
    done, fetching each task's vote as it finishes. Shared by `soar solve` and the conductor."""
    log = get_logger(actor="solve")
    by_id = {t.id: t for t in tasks}
    if len(by_id) != len(tasks):
        raise ValueError("the task list names a task twice")
    t0 = time.perf_counter()
    status: dict[str, TaskStatus] = {}
    scores: dict[str, float] = {}
    attempts: dict[str, list[list[Any]]] = {}
    all_done = anyio.Event()

    async def settle(tid: str) -> None:
        """A task is done: fetch its vote now, so that the score grows while the run goes on."""
        for _ in range(30):
            try:
                got = await ask_archive(client, ArchiveQuery(task_id=tid, what="vote"), timeout=30)
                break
            except TransientError as e:
                log.warning("vote not available yet", task_id=tid, error=str(e))
                await anyio.sleep(1)
        else:
            return
        attempts[tid] = got
        if by_id[tid].has_solutions:
            scores[tid] = score_task(by_id[tid], got)

    async def follow(tg: anyio.abc.TaskGroup) -> None:
        sub = await client.nc.subscribe(f"{EVT_TASK_STATUS}.>")
        try:
            for tid in by_id:  # what happened before we listened (a resumed run)
                st = await _latest(client, tid)
                if st is not None and st.generation == generation:
                    status[tid] = st
            for t in tasks:
                msg = search_task(
                    t,
                    config.search,
                    generation=generation,
                    samples=samples,
                    refinements=refinements,
                    model_version=model_version,
                )
                await client.js_publish(msg.subject(), msg.encode(), msg_id=msg.dedup_id())
            log.info("search started", tasks=len(tasks), generation=generation)
            for tid, st in list(status.items()):
                if st.state == "done":
                    tg.start_soon(settle, tid)
            if _finished(status, by_id):
                all_done.set()
                return
            async for m in sub.messages:
                try:
                    st = TaskStatus.decode(m.data)
                except DecodeError:
                    continue
                if st.task_id not in by_id or st.generation != generation:
                    continue
                was = status.get(st.task_id)
                if was is not None and was.generation == st.generation and st.updated_at < was.updated_at:
                    continue  # older than what we hold (the key-value read above can be newer)
                status[st.task_id] = st
                if st.state == "done" and (was is None or was.state != "done"):
                    tg.start_soon(settle, st.task_id)
                if _finished(status, by_id):
                    all_done.set()
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def report_progress() -> None:
        while True:
            p = SearchProgress(
                tasks=len(tasks),
                done=sum(st.state == "done" for st in status.values()),
                programs=sum(st.programs for st in status.values()),
                right_on_train=sum(st.correct > 0 for st in status.values()),
                solved=sum(s == 1.0 for s in scores.values()),
                tokens=sum(st.tokens for st in status.values()),
                elapsed=time.perf_counter() - t0,
            )
            log.info(
                "search progress",
                done=p.done,
                tasks=p.tasks,
                programs=p.programs,
                programs_per_s=round(p.programs_per_s, 1),
                tokens_per_s=round(p.tokens_per_s, 1),
                solved=p.solved,
            )
            if on_progress is not None:
                on_progress(p)
            await anyio.sleep(1.0)

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, tg)
            tg.start_soon(report_progress)
            await all_done.wait()
            # The last votes are being fetched: give them a moment, then stop reporting.
            with anyio.move_on_after(60):
                while any(tid not in attempts for tid, st in status.items() if st.state == "done"):
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    unfinished = sorted(tid for tid in by_id if status.get(tid) is None or status[tid].state != "done")
    for tid in by_id:
        if tid not in attempts:
            try:
                await settle(tid)
            except Exception as e:  # no archive answer: the submission fills the holes
                log.warning("no vote for task", task_id=tid, error=repr(e))

    return SearchOutcome(status, attempts, unfinished, scores, time.perf_counter() - t0)


def _write_report(
    run_dir: Path,
    tasks: Sequence[Task],
    status: dict[str, TaskStatus],
    attempts: dict[str, list[list[Any]]],
    t0: float,
    *,
    unfinished: list[str],
    already_done: bool = False,
) -> SearchReport:
    """The submission and `report.json` from the tasks' last statuses and votes."""
    scores = {t.id: score_task(t, attempts[t.id]) for t in tasks if t.has_solutions and t.id in attempts}
    submission = make_submission(attempts, tasks)
    sub_path = run_dir / "submission.json"
    write_submission(sub_path, submission)
    report = SearchReport(
        tasks=len(tasks),
        programs=sum(st.programs for st in status.values()),
        tokens=sum(st.tokens for st in status.values()),
        seconds=round(time.perf_counter() - t0, 3),
        submission_path=str(sub_path),
        unfinished=unfinished,
        already_done=already_done,
        per_task={
            tid: {
                "programs": st.programs,
                "right_on_train": st.correct,
                "best_train_accuracy": st.best_fitness,
                "tokens": st.tokens,
                "score": scores.get(tid),
            }
            for tid, st in sorted(status.items())
        },
    )
    if all(t.has_solutions for t in tasks):
        report.score = sum(scores.get(t.id, 0.0) for t in tasks) / len(tasks) if tasks else 0.0
        report.solved = sorted(tid for tid, s in scores.items() if s == 1.0)
    (run_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _finished_in_store(run_dir: Path, tasks: Sequence[Task], generation: int) -> dict[str, TaskStatus] | None:
    """Every task's status from the run's archive files when all are done, else None."""
    from soar_async.search.store import ArchiveStore, UnknownTask

    stores = [ArchiveStore.open_readonly(p) for p in sorted(run_dir.glob("archive*.sqlite"))]
    try:
        out: dict[str, TaskStatus] = {}
        for t in tasks:
            for store in stores:
                try:
                    st = store.status(t.id, generation)
                except UnknownTask:
                    continue
                if st.state == "done" and store.task(t.id).digest == t.digest:
                    out[t.id] = st
        return out if len(out) == len(tasks) else None
    finally:
        for store in stores:
            store.close()


def _votes_in_store(run_dir: Path, tasks: Sequence[Task], config: Config) -> dict[str, list[list[Any]]]:
    from soar_async.search.store import ArchiveStore, UnknownTask

    stores = [ArchiveStore.open_readonly(p) for p in sorted(run_dir.glob("archive*.sqlite"))]
    try:
        out: dict[str, list[list[Any]]] = {}
        for t in tasks:
            for store in stores:
                try:
                    store.task(t.id)
                except UnknownTask:
                    continue
                out[t.id] = store.attempts(t.id, c=config.vote.c, n_attempts=config.vote.attempts)
        return out
    finally:
        for store in stores:
            store.close()


def _finished(status: dict[str, TaskStatus], by_id: dict[str, Task]) -> bool:
    return all(tid in status and status[tid].state == "done" for tid in by_id)
