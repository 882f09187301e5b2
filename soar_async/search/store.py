"""The archive's SQLite store: every program, every completion, every slot, idempotently.

One file per archive partition in the run directory (WAL: readers such as `soar results`
never block the writer). Every write is keyed by what it records (program id; task,
generation, kind and slot; completion index), so a redelivered event changes nothing.

Duplicates: programs whose normalised code is equal (`plan.norm_key`) share a `norm`. The
search runs a norm once; the vote counts it as often as the model wrote it (the number of
completions carrying that norm), as SOAR counts every sampled program.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from soar_async.arc import Grid, Task, parse_task
from soar_async.messages import Evaluated, Proposals, SearchTask, TaskStatus
from soar_async.records import ProgramRecord
from soar_async.scoring import vote
from soar_async.search.plan import REFINE, SAMPLE, Plan, norm_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT NOT NULL, generation INTEGER NOT NULL, digest TEXT NOT NULL, task_json TEXT NOT NULL,
    samples INTEGER NOT NULL, refinements INTEGER NOT NULL, n_sample INTEGER NOT NULL,
    n_refine INTEGER NOT NULL, stop_after_correct INTEGER NOT NULL,
    sample_slots INTEGER NOT NULL, refine_slots INTEGER NOT NULL,
    created_at REAL NOT NULL, done_at REAL,
    PRIMARY KEY (task_id, generation)
);
CREATE TABLE IF NOT EXISTS programs (
    program_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, digest TEXT NOT NULL, norm TEXT NOT NULL,
    code TEXT NOT NULL, record TEXT NOT NULL,
    n_train INTEGER NOT NULL, n_train_correct INTEGER NOT NULL, fitness REAL NOT NULL,
    all_train INTEGER NOT NULL, raised INTEGER NOT NULL, test_score REAL,
    parent_id TEXT, origin TEXT NOT NULL, model_version TEXT NOT NULL, generation INTEGER NOT NULL,
    duration_s REAL NOT NULL, evaluated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS programs_task ON programs (task_id, norm);
CREATE TABLE IF NOT EXISTS slots (
    task_id TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL, slot INTEGER NOT NULL,
    request_id TEXT NOT NULL, skipped INTEGER NOT NULL, parent_id TEXT, island INTEGER,
    model_version TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL, error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, generation, kind, slot)
);
CREATE TABLE IF NOT EXISTS completions (
    task_id TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL, slot INTEGER NOT NULL,
    idx INTEGER NOT NULL, program_id TEXT, norm TEXT, code TEXT, tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    PRIMARY KEY (task_id, generation, kind, slot, idx)
);
CREATE INDEX IF NOT EXISTS completions_norm ON completions (task_id, norm);
"""


class UnknownTask(LookupError):
    """An event about a task the store has no `SearchTask` for (yet)."""


@dataclass(frozen=True, slots=True)
class Arm:
    """A candidate parent for REX: a program that ran without error on every input."""

    program_id: str
    fitness: float
    origin: str
    parent_id: str | None
    island: int | None
    """The island of the refinement that wrote it; None for samples (roots of every island)."""


@dataclass(slots=True)
class _Counts:
    """A task's running totals, so that `status()` after every event costs O(1), not a scan
    of the task's programs (at SOAR's 6,000 programs per task the scan took 20-45 ms)."""

    programs: int
    correct: int
    best: float
    arms: int
    evaluated_norms: set[str]
    pending: dict[tuple[int, str], set[str]]
    """(generation, kind) -> norms proposed there and not evaluated yet."""
    resolved: dict[tuple[int, str], int]
    tokens: dict[int, int]
    correct_by_gen: dict[int, int]


def _record_json(rec: ProgramRecord) -> str:
    """The record as stored: a shallow dict (json.dumps copies nothing; `to_dict` deep-copies every grid)."""
    return json.dumps({f.name: getattr(rec, f.name) for f in fields(rec)}, separators=(",", ":"))


class ArchiveStore:
    """SQLite tables of one archive partition. Not thread-safe: one actor owns it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._tasks: dict[tuple[str, str], Task] = {}
        self._counts: dict[str, _Counts] = {}
        self._writer = True
        """Running totals are kept only by the writer: a reader's would miss the writer's events."""

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ArchiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes (idempotent)

    def add_search(self, msg: SearchTask) -> Plan:
        """Record a task's search plan; a second one for the same task and generation is ignored."""
        plan = Plan.of(msg)
        self.db.execute(
            "INSERT OR IGNORE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
            (
                msg.task_id,
                msg.generation,
                plan.task.digest,
                json.dumps(msg.task, separators=(",", ":")),
                plan.samples,
                plan.refinements,
                plan.n_sample,
                plan.n_refine,
                plan.stop_after_correct,
                plan.slots(SAMPLE),
                plan.slots(REFINE),
                time.time(),
            ),
        )
        return plan

    def add_proposals(self, msg: Proposals) -> bool:
        """Record one resolved slot and its completions; False when it was already recorded."""
        if msg.kind not in (SAMPLE, REFINE):
            raise ValueError(f"proposals of kind {msg.kind!r} (expected sample or refine)")
        with self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO slots VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    msg.task_id,
                    msg.generation,
                    msg.kind,
                    msg.slot,
                    msg.request_id,
                    int(msg.skipped),
                    msg.parent_id,
                    msg.island,
                    msg.model_version,
                    msg.prompt_tokens,
                    msg.completion_tokens,
                    msg.created_at,
                    msg.error,
                ),
            )
            if cur.rowcount == 0:
                return False
            c = self._counts.get(msg.task_id)
            if c is not None:
                key = (msg.generation, msg.kind)
                c.resolved[key] = c.resolved.get(key, 0) + 1
                c.tokens[msg.generation] = c.tokens.get(msg.generation, 0) + msg.completion_tokens
                waiting = c.pending.setdefault(key, set())
                waiting.update(e["norm"] for e in msg.entries if e.get("norm") and e["norm"] not in c.evaluated_norms)
            self.db.executemany(
                "INSERT OR IGNORE INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        msg.task_id,
                        msg.generation,
                        msg.kind,
                        msg.slot,
                        i,
                        e.get("program_id"),
                        e.get("norm"),
                        e.get("code"),
                        int(e.get("tokens") or 0),
                        str(e.get("finish_reason") or ""),
                    )
                    for i, e in enumerate(msg.entries)
                ],
            )
        return True

    def task(self, task_id: str, digest: str | None = None) -> Task:
        """The task as searched (latest generation; the one with `digest` when given)."""
        key = (task_id, digest or "")
        if key in self._tasks:
            return self._tasks[key]
        q = "SELECT task_json FROM tasks WHERE task_id=?" + (" AND digest=?" if digest else "")
        row = self.db.execute(q + " ORDER BY generation DESC LIMIT 1", (task_id, digest) if digest else (task_id,))
        got = row.fetchone()
        if got is None:
            raise UnknownTask(f"no search recorded for task {task_id!r}" + (f" with digest {digest}" if digest else ""))
        task = parse_task(task_id, json.loads(got[0]))
        self._tasks[key] = task
        return task

    def add_evaluated(self, ev: Evaluated) -> bool:
        """Record an executed program; False when it was already recorded.

        A program whose norm the task already has (another text of the same program, run
        again by a proposer restarted with an empty memory of what it sent) is not stored a
        second time: its completion row already counts it in the vote as a duplicate."""
        return self.add_evaluated_many([ev]) == 1

    def add_evaluated_many(self, evs: Sequence[Evaluated]) -> int:
        """Record executed programs in one transaction (one commit for a whole `EvaluatedBatch`);
        how many were new. All or nothing: a program that cannot be stored (ValueError) stores
        none of them."""
        tasks = {ev.task_id for ev in evs}
        self.db.execute("BEGIN")
        try:
            added = sum(self._insert_evaluated(ev) for ev in evs)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            for tid in tasks:  # the running totals may have counted rows that were rolled back
                self._counts.pop(tid, None)
            raise
        return added

    def _insert_evaluated(self, ev: Evaluated) -> bool:
        task = self.task(ev.task_id, ev.task_digest or None)
        rec = ProgramRecord.from_evaluated(task, ev)
        norm = ev.norm or norm_key(rec.code)
        same = "SELECT 1 FROM programs WHERE task_id=? AND norm=? AND digest=? LIMIT 1"
        c = self._counts.get(rec.task_id)
        # The running totals know every norm stored for the task (of any digest): a norm they
        # lack needs no look-up; one they have is checked against this digest.
        if (c is None or norm in c.evaluated_norms) and self.db.execute(
            same, (rec.task_id, norm, rec.task_digest)
        ).fetchone():
            return False
        cur = self.db.execute(
            "INSERT OR IGNORE INTO programs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.id, rec.task_id, rec.task_digest, norm, rec.code, _record_json(rec), len(rec.train_correct),
                rec.n_train_correct, rec.train_accuracy, int(rec.all_train_correct), int(rec.raised_any),
                rec.test_accuracy, rec.parent_id, rec.origin, rec.model_version, rec.generation,
                float(ev.duration_s), time.time(),
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return False
        if c is not None:
            c.programs += 1
            c.correct += int(rec.all_train_correct)
            if rec.all_train_correct:
                c.correct_by_gen[rec.generation] = c.correct_by_gen.get(rec.generation, 0) + 1
            c.best = max(c.best, rec.train_accuracy)
            c.arms += int(not rec.raised_any)
            c.evaluated_norms.add(norm)
            for waiting in c.pending.values():
                waiting.discard(norm)
        return True

    def add_record(self, rec: ProgramRecord) -> bool:
        """Import a program evaluated elsewhere (a parquet file of released programs); it counts
        once in the vote. False when the program is already stored."""
        self._counts.pop(rec.task_id, None)
        cur = self.db.execute(
            "INSERT OR IGNORE INTO programs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.id, rec.task_id, rec.task_digest, norm_key(rec.code), rec.code,
                _record_json(rec), len(rec.train_correct), rec.n_train_correct,
                rec.train_accuracy, int(rec.all_train_correct), int(rec.raised_any), rec.test_accuracy,
                rec.parent_id, rec.origin, rec.model_version, rec.generation, 0.0, time.time(),
            ),
        )  # fmt: skip
        return cur.rowcount > 0

    # ------------------------------------------------------------------ reads

    def task_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT task_id FROM tasks ORDER BY task_id")]

    def latest_generation(self, task_id: str) -> int | None:
        row = self.db.execute("SELECT MAX(generation) FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return row[0] if row else None

    def _load_counts(self, task_id: str) -> _Counts:
        c = self._counts.get(task_id)
        if c is not None:
            return c
        programs, correct, best, arms = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(all_train),0), COALESCE(MAX(fitness),0), COALESCE(SUM(raised=0),0) "
            "FROM programs WHERE task_id=?",
            (task_id,),
        ).fetchone()
        evaluated = {r[0] for r in self.db.execute("SELECT DISTINCT norm FROM programs WHERE task_id=?", (task_id,))}
        pending: dict[tuple[int, str], set[str]] = {}
        for gen, kind, norm in self.db.execute(
            "SELECT DISTINCT generation, kind, norm FROM completions WHERE task_id=? AND norm IS NOT NULL", (task_id,)
        ):
            if norm not in evaluated:
                pending.setdefault((gen, kind), set()).add(norm)
        resolved = {
            (g, k): n
            for g, k, n in self.db.execute(
                "SELECT generation, kind, COUNT(*) FROM slots WHERE task_id=? GROUP BY 1, 2", (task_id,)
            )
        }
        tokens = dict(
            self.db.execute(
                "SELECT generation, COALESCE(SUM(completion_tokens),0) FROM slots WHERE task_id=? GROUP BY 1",
                (task_id,),
            ).fetchall()
        )
        correct_by_gen = dict(
            self.db.execute(
                "SELECT generation, COUNT(*) FROM programs WHERE task_id=? AND all_train=1 GROUP BY 1", (task_id,)
            ).fetchall()
        )
        c = _Counts(programs, correct, best, arms, evaluated, pending, resolved, tokens, correct_by_gen)
        if self._writer:
            self._counts[task_id] = c
        return c

    def status(self, task_id: str, generation: int | None = None) -> TaskStatus:
        """Where the task's search stands: from running totals, loaded from the tables once."""
        gen = self.latest_generation(task_id) if generation is None else generation
        plan = self.db.execute(
            "SELECT sample_slots, refine_slots FROM tasks WHERE task_id=? AND generation=?", (task_id, gen)
        ).fetchone()
        if plan is None:
            raise UnknownTask(f"no search recorded for task {task_id!r} in generation {gen}")
        sample_slots, refine_slots = plan
        c = self._load_counts(task_id)
        s_res, r_res = c.resolved.get((gen, SAMPLE), 0), c.resolved.get((gen, REFINE), 0)
        pending_sample = c.pending.get((gen, SAMPLE), set())
        pending = len(pending_sample | c.pending.get((gen, REFINE), set()))
        settled = s_res >= sample_slots and not pending_sample
        done = settled and r_res >= refine_slots and pending == 0
        return TaskStatus(
            task_id=task_id,
            state="done" if done else "running",
            programs=c.programs,
            correct=c.correct,
            generation_correct=c.correct_by_gen.get(gen, 0),
            best_fitness=c.best,
            generation=gen,
            sample_slots=sample_slots,
            sample_resolved=s_res,
            refine_slots=refine_slots,
            refine_resolved=r_res,
            pending=pending,
            arms=c.arms,
            tokens=c.tokens.get(gen, 0),
            sampling_settled=settled,
        )

    def mark_done(self, task_id: str, generation: int) -> None:
        self.db.execute(
            "UPDATE tasks SET done_at=? WHERE task_id=? AND generation=? AND done_at IS NULL",
            (time.time(), task_id, generation),
        )

    def arms(self, task_id: str) -> list[Arm]:
        """Programs that ran without error, each with the island of the refinement that first wrote it."""
        rows = self.db.execute(
            "SELECT p.program_id, p.fitness, p.origin, p.parent_id, "
            "(SELECT s.island FROM completions c JOIN slots s USING (task_id, generation, kind, slot) "
            " WHERE c.task_id=p.task_id AND c.norm=p.norm AND c.kind='refine' ORDER BY s.created_at LIMIT 1) "
            "FROM programs p WHERE p.task_id=? AND p.raised=0 ORDER BY p.evaluated_at",
            (task_id,),
        ).fetchall()
        return [Arm(pid, fit, origin, parent, island) for pid, fit, origin, parent, island in rows]

    def refinements_asked(self, task_id: str, generation: int) -> dict[tuple[str, int], int]:
        """(parent id, island) -> refinement requests resolved with that parent: REX's N."""
        rows = self.db.execute(
            "SELECT parent_id, island, COUNT(*) FROM slots WHERE task_id=? AND generation=? AND kind='refine' "
            "AND skipped=0 AND parent_id IS NOT NULL GROUP BY parent_id, island",
            (task_id, generation),
        ).fetchall()
        return {(p, int(i if i is not None else 0)): n for p, i, n in rows}

    def resolved_slots(self, task_id: str, generation: int, kind: str) -> set[int]:
        rows = self.db.execute(
            "SELECT slot FROM slots WHERE task_id=? AND generation=? AND kind=?", (task_id, generation, kind)
        )
        return {r[0] for r in rows}

    def records(self, task_id: str) -> list[ProgramRecord]:
        """Every evaluated program of the task, one per norm, with `extra["count"]`: how many
        completions wrote it (at least 1)."""
        counts = self._norm_counts(task_id)
        out: dict[str, ProgramRecord] = {}
        for norm, rec_json in self.db.execute(
            "SELECT norm, record FROM programs WHERE task_id=? ORDER BY evaluated_at", (task_id,)
        ):
            if norm in out:
                continue
            rec = ProgramRecord.from_dict(json.loads(rec_json))
            rec.extra["count"] = max(1, counts.get(norm, 0))
            out[norm] = rec
        return list(out.values())

    def _norm_counts(self, task_id: str) -> dict[str, int]:
        """Completions per norm of the task: how many times each program was written."""
        return dict(
            self.db.execute(
                "SELECT norm, COUNT(*) FROM completions WHERE task_id=? AND norm IS NOT NULL GROUP BY norm",
                (task_id,),
            ).fetchall()
        )

    def record(self, program_id: str) -> ProgramRecord | None:
        row = self.db.execute("SELECT record FROM programs WHERE program_id=?", (program_id,)).fetchone()
        return None if row is None else ProgramRecord.from_dict(json.loads(row[0]))

    def iter_records(self) -> Iterator[ProgramRecord]:
        for tid in self.task_ids():
            yield from self.records(tid)

    def attempts(self, task_id: str, *, c: float, n_attempts: int = 2) -> list[list[Grid]]:
        """The weighted majority vote over the task's programs (one per norm, as in `records`),
        duplicates counted as written. Reads only the test outputs of each record (SQLite's
        `json_extract`): a task is voted on as soon as it is done, while other tasks still run,
        and parsing whole records (code, train outputs) cost the search's event loop several ms."""
        counts = self._norm_counts(task_id)
        seen: set[str] = set()
        cands: list[tuple[list[Grid | None], float]] = []
        for norm, accuracy, tests in self.db.execute(
            "SELECT norm, fitness, json_extract(record, '$.test_outputs') FROM programs "
            "WHERE task_id=? ORDER BY evaluated_at",
            (task_id,),
        ):
            if norm in seen:
                continue
            seen.add(norm)
            cands += [(json.loads(tests) if tests else [], float(accuracy))] * max(1, counts.get(norm, 0))
        return vote(cands, c=c, n_attempts=n_attempts)

    def completion_stats(self, task_id: str) -> dict[str, int]:
        """Completions written for the task: total, without a program, and duplicates of an earlier one."""
        total, without, distinct = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(norm IS NULL),0), COUNT(DISTINCT norm) FROM completions WHERE task_id=?",
            (task_id,),
        ).fetchone()
        return {"completions": total, "without_program": without, "duplicates": total - without - distinct}

    # ------------------------------------------------------------------ reading finished runs, exchange

    @classmethod
    def open_readonly(cls, path: str | Path) -> ArchiveStore:
        """A store over an existing file that can only read (`soar results`, `soar archive export`):
        no schema, no journal-mode change; a live run's writer goes on undisturbed (WAL)."""
        store = cls.__new__(cls)
        store.path = Path(path)
        if not store.path.is_file():
            raise FileNotFoundError(f"no archive store {store.path}")
        store.db = sqlite3.connect(store.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        store._tasks = {}
        store._counts = {}
        store._writer = False
        return store

    def program_records(self, task_id: str) -> list[ProgramRecord]:
        """Every stored program of the task (all rows, in evaluation order), each with
        `extra["count"]`: the weight `records` gives it (how many completions wrote its norm,
        at least 1), or 0 for a later row whose norm an earlier row already has (the vote
        does not count it; `extra["duplicate_of"]` names that row)."""
        counts = dict(
            self.db.execute(
                "SELECT norm, COUNT(*) FROM completions WHERE task_id=? AND norm IS NOT NULL GROUP BY norm",
                (task_id,),
            ).fetchall()
        )
        first: dict[str, str] = {}
        out = []
        for pid, norm, rec_json in self.db.execute(
            "SELECT program_id, norm, record FROM programs WHERE task_id=? ORDER BY evaluated_at", (task_id,)
        ):
            rec = ProgramRecord.from_dict(json.loads(rec_json))
            if norm in first:
                rec.extra["count"] = 0
                rec.extra["duplicate_of"] = first[norm]
            else:
                first[norm] = pid
                rec.extra["count"] = max(1, counts.get(norm, 0))
            out.append(rec)
        return out

    def add_records(self, records: Iterable[ProgramRecord]) -> int:
        """`add_record` for many records (an import of millions), in one transaction; returns how
        many were new. The rows are `add_record`'s, built without copying the records."""
        rows = []
        for rec in records:
            self._counts.pop(rec.task_id, None)
            record = _record_json(rec)
            rows.append(
                (
                    rec.id, rec.task_id, rec.task_digest, norm_key(rec.code), rec.code, record, len(rec.train_correct),
                    rec.n_train_correct, rec.train_accuracy, int(rec.all_train_correct), int(rec.raised_any),
                    rec.test_accuracy, rec.parent_id, rec.origin, rec.model_version, rec.generation, 0.0, time.time(),
                )
            )  # fmt: skip
        before = self.db.total_changes
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR IGNORE INTO programs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    def tokens(self, task_id: str) -> int:
        """Completion tokens spent on the task, all generations together."""
        row = self.db.execute("SELECT COALESCE(SUM(completion_tokens),0) FROM slots WHERE task_id=?", (task_id,))
        return int(row.fetchone()[0])

    # ------------------------------------------------------------------ per generation (`soar results`, `soar report`)

    def norm_records(self, task_id: str) -> list[tuple[str, ProgramRecord]]:
        """The task's programs, one per norm (the first stored, as `records` keeps them), with their norm:
        completions name programs by norm, so per-generation counts are matched against these."""
        out: dict[str, ProgramRecord] = {}
        for norm, rec_json in self.db.execute(
            "SELECT norm, record FROM programs WHERE task_id=? ORDER BY evaluated_at", (task_id,)
        ):
            if norm not in out:
                out[norm] = ProgramRecord.from_dict(json.loads(rec_json))
        return list(out.items())

    def generation_completions(self, task_id: str) -> dict[tuple[int, str], dict[str | None, int]]:
        """(generation, model version) -> norm -> completions that wrote it; the norm None counts the
        completions without code. The model version is the one the slot was served by.

        The vote of one generation counts each program as often as that generation wrote it, as
        `records` does over all generations (a program with no completion at all, an import,
        counts once in its own generation and model version)."""
        out: dict[tuple[int, str], dict[str | None, int]] = {}
        for gen, version, norm, n in self.db.execute(
            "SELECT c.generation, s.model_version, c.norm, COUNT(*) FROM completions c "
            "JOIN slots s USING (task_id, generation, kind, slot) WHERE c.task_id=? GROUP BY 1, 2, 3",
            (task_id,),
        ):
            out.setdefault((gen, version), {})[norm] = n
        return out

    def generation_tokens(self, task_id: str) -> dict[tuple[int, str], int]:
        """(generation, model version) -> completion tokens of the task's requested (not skipped) slots."""
        rows = self.db.execute(
            "SELECT generation, model_version, COALESCE(SUM(completion_tokens),0) FROM slots "
            "WHERE task_id=? AND skipped=0 GROUP BY 1, 2",
            (task_id,),
        )
        return {(g, v): int(n) for g, v, n in rows}


def open_stores(run_dir: Path) -> list[ArchiveStore]:
    """Every archive partition's store found in a run directory."""
    return [ArchiveStore(p) for p in sorted(run_dir.glob("archive*.sqlite"))]


def store_name(partition: tuple[int, int] | None) -> str:
    return "archive.sqlite" if partition is None else f"archive-p{partition[0]}of{partition[1]}.sqlite"
