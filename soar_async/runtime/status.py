"""What `soar status` shows: live workers, queue depths, streams, tasks and throughput.

`gather_status` asks the servers and returns plain data (the `--json` output); `render_status`
turns that data into the tables the command prints.
"""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import anyio

from soar_async.bus.conn import Bus


async def gather_status(bus: Bus) -> dict[str, Any]:
    """Everything `soar status` shows, as plain data (the --json output)."""
    import nats.js.errors

    from soar_async.bus.topology import (
        EVALUATED_ALL,
        KV_TASKS,
        QUEUES,
        STREAM_DLQ,
        STREAM_EVENTS,
        STREAM_EXEC,
        STREAM_LOGS,
        WORK_EXEC,
        subject_token,
        task_token_of,
    )
    from soar_async.messages import TaskStatus
    from soar_async.runtime.registry import kv_keys, live_workers

    out: dict[str, Any] = {
        "nats": bus.cfg.redacted(),
        "time": time.time(),
        "workers": [],
        "queues": [],
        "streams": {},
        "tasks": [],
    }
    with anyio.fail_after(30):
        js = bus.js
        now = time.time()
        for hb in await live_workers(bus):
            d = hb.to_dict()
            d.pop("t", None)
            d["last_seen_s"] = round(max(0.0, now - hb.ts), 1)
            out["workers"].append(d)
        out["workers"].sort(key=lambda w: (w["role"], w["worker_id"]))
        for name, q in QUEUES.items():
            entry: dict[str, Any] = {"queue": name, "subject": q.subject, "stream": q.stream}
            try:
                si = await js.stream_info(q.stream)
                entry["depth"] = si.state.messages
                ci = await js.consumer_info(q.stream, q.durable)
                entry.update(
                    consumer=q.durable,
                    pending=ci.num_pending,
                    in_flight=ci.num_ack_pending,
                    redelivered=ci.num_redelivered,
                    waiting_pulls=ci.num_waiting,
                    delivered=ci.delivered.stream_seq if ci.delivered else 0,
                    acked=ci.ack_floor.stream_seq if ci.ack_floor else 0,
                )
            except nats.js.errors.NotFoundError:
                entry["missing"] = True
            out["queues"].append(entry)
        for sname in (STREAM_EVENTS, STREAM_DLQ, STREAM_LOGS):
            try:
                si = await js.stream_info(sname, subjects_filter=">")
            except nats.js.errors.NotFoundError:
                continue
            kinds: dict[str, int] = {}
            for subj, n in (si.state.subjects or {}).items():
                # per-task subjects (soar.evt.evaluated.<shard>.<task>) summed per kind
                kind = ".".join(subj.split(".")[:3])
                kinds[kind] = kinds.get(kind, 0) + n
            out["streams"][sname] = {"messages": si.state.messages, "bytes": si.state.bytes, "subjects": kinds}
        # Tasks: queued (in the work queue, including in flight) and evaluated, counted by the
        # server per task subject; the conductor's TaskStatus (KV) adds state where it exists.
        tasks: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(nats.js.errors.NotFoundError):
            si = await js.stream_info(STREAM_EXEC, subjects_filter=f"{WORK_EXEC}.>")
            for subj, n in (si.state.subjects or {}).items():
                tok = task_token_of(subj)
                tasks.setdefault(tok, {"task_id": tok, "queued": 0, "evaluated": 0})["queued"] = n
        with contextlib.suppress(nats.js.errors.NotFoundError):
            si = await js.stream_info(STREAM_EVENTS, subjects_filter=EVALUATED_ALL)
            for subj, n in (si.state.subjects or {}).items():
                tok = task_token_of(subj)
                tasks.setdefault(tok, {"task_id": tok, "queued": 0, "evaluated": 0})["evaluated"] = n
        try:
            tkv = await js.key_value(KV_TASKS)
            for k in await kv_keys(bus, KV_TASKS):
                with contextlib.suppress(Exception):
                    ts = TaskStatus.decode((await tkv.get(k)).value or b"")
                    d = ts.to_dict()
                    d.pop("t", None)
                    d.pop("v", None)
                    tasks.setdefault(subject_token(ts.task_id), {"queued": 0, "evaluated": 0}).update(d)
        except (nats.js.errors.NoKeysError, nats.js.errors.NotFoundError):
            pass
        for t in tasks.values():
            t.setdefault(
                "state",
                "queued" if t["queued"] and not t["evaluated"] else "running" if t["queued"] else "evaluated",
            )
        out["tasks"] = sorted(tasks.values(), key=lambda t: t["task_id"])
        out["conductor"] = await _conductor_state(bus)
        rates: dict[str, float] = {}
        for w in out["workers"]:
            rates[w["role"]] = round(rates.get(w["role"], 0.0) + float(w.get("rate") or 0.0), 3)
        out["throughput_per_s"] = rates
    return out


async def _conductor_state(bus: Bus) -> dict[str, Any] | None:
    """The learning loop's record (generation, phase, one line per generation), if a daemon runs here."""
    import json

    import nats.js.errors

    from soar_async.bus.topology import KV_STATE

    try:
        kv = await bus.js.key_value(KV_STATE)
        entry = await kv.get("conductor")
        return dict(json.loads(entry.value or b"{}"))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError, ValueError):
        return None


def render_status(st: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=140, file=io.StringIO())
    console.print(f"[bold]soar status[/bold]  nats {st['nats']}")
    t = Table(title=f"workers ({len(st['workers'])} live)")
    for c in (
        "role",
        "worker",
        "host",
        "pid",
        "state",
        "load",
        "in flight",
        "ok",
        "failed",
        "dead",
        "rate/s",
        "last seen",
        "info",
    ):
        t.add_column(c)
    for w in st["workers"]:
        c = w.get("counters") or {}
        t.add_row(
            w["role"],
            w["worker_id"],
            w["host"],
            str(w["pid"]),
            w.get("state", ""),
            f"{w['load']:.2f}",
            f"{w['in_flight']}/{w['concurrency']}",
            str(c.get("ok", 0)),
            str(c.get("failed", 0)),
            str(c.get("dead_lettered", 0)),
            f"{w.get('rate', 0):.2f}",
            f"{w['last_seen_s']}s ago",
            " ".join(f"{k}={v}" for k, v in sorted((w.get("info") or {}).items())),
        )
    console.print(t)
    q = Table(title="queues")
    for c in ("queue", "subject", "depth", "pending", "in flight", "redelivered", "waiting pulls"):
        q.add_column(c)
    for e in st["queues"]:
        if e.get("missing"):
            q.add_row(e["queue"], e["subject"], "-", "-", "-", "-", "-")
            continue
        q.add_row(
            e["queue"],
            e["subject"],
            str(e.get("depth", 0)),
            str(e.get("pending", 0)),
            str(e.get("in_flight", 0)),
            str(e.get("redelivered", 0)),
            str(e.get("waiting_pulls", 0)),
        )
    console.print(q)
    thr = ", ".join(f"{r} {v:.2f}/s" for r, v in st.get("throughput_per_s", {}).items()) or "idle"
    console.print(f"throughput (last minute): {thr}")
    for sname, s in st["streams"].items():
        subj = ", ".join(f"{k}={v}" for k, v in sorted(s["subjects"].items())) or "empty"
        console.print(
            f"{sname}: {s['messages']} msgs ({subj})"
            if sname != "SOAR_LOGS"
            else f"{sname}: {s['messages']} log events"
        )
    cond = st.get("conductor")
    if cond:
        from soar_async.learn.report import render_generations

        console.print(
            f"learning loop: generation {cond.get('generation')}, phase {cond.get('phase')}, "
            f"model {cond.get('model_version') or 'base'}, {len(cond.get('tasks') or [])} tasks"
        )
        if cond.get("history"):
            console.print(render_generations(cond["history"]), markup=False, highlight=False)
    if st["tasks"]:
        tt = Table(title=f"tasks ({len(st['tasks'])})")
        cols = ("task", "state", "queued", "evaluated", "programs", "correct", "best h", "sampled", "refined", "tokens")
        for c in cols:
            tt.add_column(c)

        def slots(x: dict[str, Any], kind: str) -> str:
            """Request slots resolved / planned in the task's search (blank without a search)."""
            planned = x.get(f"{kind}_slots") or 0
            return f"{x.get(f'{kind}_resolved', 0)}/{planned}" if planned else ""

        for x in st["tasks"][:200]:
            tt.add_row(
                x["task_id"],
                x.get("state", ""),
                str(x.get("queued", 0)),
                str(x.get("evaluated", 0)),
                str(x.get("programs", "")),
                str(x.get("correct", "")),
                f"{x['best_fitness']:.2f}" if "best_fitness" in x else "",
                slots(x, "sample"),
                slots(x, "refine"),
                str(x.get("tokens", "") or ""),
            )
        console.print(tt)
        if len(st["tasks"]) > 200:
            console.print(f"... and {len(st['tasks']) - 200} more tasks (--json for all)")
    else:
        console.print("tasks: none yet")
    return console.export_text()
