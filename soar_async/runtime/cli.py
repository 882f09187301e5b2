"""`soar up`, `soar worker`, `soar status`, `soar logs`, `soar exec submit`: the runtime's commands.

Finding the bus, in order: `--nats URL`, the environment (SOAR_NATS_URL), the config file's
`[bus] nats_urls`, and finally the URL that a running `soar up` wrote to
`<run dir>/nats.url` - so that on one machine a second terminal needs no flags at all.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from soar_async.bus.conn import Bus, BusConfig, BusError
from soar_async.bus.server import NatsServer, ServerError
from soar_async.bus.topology import Topology
from soar_async.commands.config import add_config_args

URL_FILE = "nats.url"


# --- configuration glue ------------------------------------------------------------------


def _load_cfg(args: argparse.Namespace) -> Any:
    """The project configuration: defaults < --config file < environment < --set."""
    from soar_async.commands.config import config_from_args

    return config_from_args(args)


def run_dir_of(args: argparse.Namespace, cfg: Any) -> Path:
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    if cfg is not None:
        return Path(cfg.run.path)
    return Path("runs") / "default"


def bus_config(args: argparse.Namespace, cfg: Any, *, run_dir: Path | None = None) -> BusConfig | None:
    """Connection settings from flags > environment > config file > `<run dir>/nats.url`; None = none found."""
    url = getattr(args, "nats", None) or os.environ.get("SOAR_NATS_URL")
    b = cfg.bus if cfg is not None else None
    if not url and b is not None and b.nats_urls:
        url = ",".join(b.nats_urls)
    source = ""
    if not url and run_dir is not None and (run_dir / URL_FILE).is_file():
        url = (run_dir / URL_FILE).read_text().strip()
        source = f"{run_dir / URL_FILE}, written by `soar up`: is it still running?"
    if not url:
        return None
    kw: dict[str, Any] = {}
    if b is not None:
        kw = {
            "user": b.user or None,
            "password": b.password or None,
            "token": b.token or None,
            "creds": b.creds_file or None,
            "nkey_seed": b.nkey_seed_file or None,
            "tls_ca": b.tls_ca or None,
            "tls_cert": b.tls_cert or None,
            "tls_key": b.tls_key or None,
            "connect_timeout": b.connect_timeout_s,
            "request_timeout": b.request_timeout_s,
        }
    for flag, key in (
        ("user", "user"),
        ("password", "password"),
        ("token", "token"),
        ("creds", "creds"),
        ("tls_ca", "tls_ca"),
    ):
        v = getattr(args, flag, None)
        if v:
            kw[key] = v
    bc = BusConfig.from_url(url, **kw)
    bc.source = source
    return bc


def topology_of(cfg: Any, args: argparse.Namespace | None = None) -> Topology:
    """The configured topology. `bus.ack_wait_s` and `bus.max_deliver` tune the execution queue;
    the generation and training queues keep their own longer waits (their jobs run for minutes)."""
    topo = Topology()
    if cfg is not None:
        topo.replicas = int(cfg.bus.replicas)
        topo.queues["exec"] = dataclasses.replace(
            topo.queues["exec"], ack_wait=float(cfg.bus.ack_wait_s), max_deliver=int(cfg.bus.max_deliver)
        )
    if args is not None and getattr(args, "replicas", None):
        topo.replicas = args.replicas
    return topo


def sandbox_options(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    return {"sandbox": dataclasses.asdict(cfg.sandbox)}


def _add_bus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", metavar="URL", help="NATS server URL(s), comma-separated (default: see `soar up`)")
    add_config_args(p)
    p.add_argument("--run-dir", metavar="DIR", help="run directory (default: runs/<name> from the config)")
    p.add_argument("--user", help="NATS user (or SOAR_NATS_USER)")
    p.add_argument("--password", help="NATS password (or SOAR_NATS_PASSWORD)")
    p.add_argument("--token", help="NATS token (or SOAR_NATS_TOKEN)")
    p.add_argument("--creds", metavar="FILE", help="NATS .creds file (JWT + nkey)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the server")


def _parse_role(spec: str) -> tuple[str, int | None]:
    """`executor`, `executor:4` (concurrency 4) or `module:Class[:N]`."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return spec, None


def _need_bus(args: argparse.Namespace, cfg: Any, run_dir: Path) -> BusConfig:
    bc = bus_config(args, cfg, run_dir=run_dir)
    if bc is None:
        raise ValueError(
            f"no NATS server given: pass --nats URL, set SOAR_NATS_URL, or start `soar up` "
            f"(which writes {run_dir / URL_FILE})"
        )
    return bc


# --- soar up / soar worker ---------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from soar_async.logs import configure_logging
    from soar_async.runtime.host import ActorSpec, serve
    from soar_async.runtime.roles import UP_ACTORS

    cfg = _load_cfg(args)
    run_dir = run_dir_of(args, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    level = args.log_level or (cfg.run.log_level if cfg is not None else "info")
    configure_logging(process="up", worker_id=f"up-{socket.gethostname()}-{os.getpid()}", run_dir=run_dir, level=level)
    from soar_async.logs import get_logger

    log = get_logger(actor="up")
    roles = [_parse_role(r) for r in args.role] if args.role else list(UP_ACTORS)
    if args.concurrency:
        roles = [(r, n or args.concurrency) for r, n in roles]
    specs = [ActorSpec(r, n, sandbox_options(cfg)) for r, n in roles]
    url = getattr(args, "nats", None) or os.environ.get("SOAR_NATS_URL")
    if not url and cfg is not None and cfg.bus.nats_urls:
        url = ",".join(cfg.bus.nats_urls)
    server: NatsServer | None = None
    url_file = run_dir / URL_FILE
    if not url:
        host, _, port = (args.listen or "127.0.0.1:").rpartition(":")
        host = host or "127.0.0.1"
        if args.server_config:
            # An ops/ config (auth, TLS...): its relative store_dir resolves inside the run dir.
            server = NatsServer(
                None,
                host=host,
                port=int(port) if port else None,
                config=Path(args.server_config).resolve(),
                cwd=run_dir,
                log_file=run_dir / "logs" / "nats-server.log",
            )
        else:
            server = NatsServer(
                run_dir / "nats",
                host=host,
                port=int(port) if port else None,
                log_file=run_dir / "logs" / "nats-server.log",
            )
            if host not in ("127.0.0.1", "localhost", "::1"):
                log.warning(
                    "embedded nats-server listens beyond loopback without authentication; "
                    "use --server-config ops/nats/auth.conf on untrusted networks",
                    listen=f"{host}:{port}",
                )
        try:
            server.start()
        except ServerError as e:
            raise ValueError(str(e)) from None
        url = server.url
        url_file.write_text(url + "\n")
        log.info(
            "embedded nats-server started",
            url=url,
            store=str(run_dir / "nats"),
            pid=server.proc.pid if server.proc else None,
        )
    bc = bus_config(argparse.Namespace(**{**vars(args), "nats": url}), cfg, run_dir=run_dir)
    assert bc is not None
    topo = topology_of(cfg, args)
    if args.ack_wait:
        topo.ack_wait = args.ack_wait
    try:
        if not args.quiet:
            actors = ", ".join(f"{r}:{n or 'auto'}" for r, n in roles)
            print(
                f"soar up: NATS at {bc.redacted()}  run dir {run_dir}  actors {actors}  (Ctrl-C to stop)",
                file=sys.stderr,
            )
        return anyio.run(
            lambda: serve(
                bc, specs, run_dir=run_dir, topology=topo, update_topology=True, drain_timeout=args.drain_timeout
            )
        )
    except BusError as e:
        raise ValueError(str(e)) from None
    finally:
        if server is not None:
            server.stop()
            with contextlib.suppress(OSError):
                if url_file.read_text().strip() == url:
                    url_file.unlink()
            log.info("embedded nats-server stopped")


def cmd_worker(args: argparse.Namespace) -> int:
    from soar_async.logs import configure_logging
    from soar_async.runtime.host import ActorSpec, serve

    cfg = _load_cfg(args)
    run_dir = run_dir_of(args, cfg)
    role, n = _parse_role(args.role)
    concurrency = args.concurrency or n
    bc = _need_bus(args, cfg, run_dir)
    level = args.log_level or (cfg.run.log_level if cfg is not None else "info")
    from soar_async.runtime.actor import make_worker_id

    short = role.rpartition(":")[2].lower() if ":" in role else role
    worker_id = make_worker_id(short)
    configure_logging(process=f"worker-{short}", worker_id=worker_id, run_dir=run_dir, level=level)
    topo = topology_of(cfg, args)
    try:
        return anyio.run(
            lambda: serve(
                bc,
                [ActorSpec(role, concurrency, sandbox_options(cfg), worker_id)],
                run_dir=run_dir,
                topology=topo,
                update_topology=False,
                drain_timeout=args.drain_timeout,
                heartbeat_interval=args.heartbeat,
            )
        )
    except BusError as e:
        raise ValueError(str(e)) from None


# --- soar status -------------------------------------------------------------------------


async def gather_status(bc: BusConfig) -> dict[str, Any]:
    """Everything `soar status` shows, as plain data (the --json output)."""
    import nats.js.errors

    from soar_async.bus.topology import (
        EVALUATED_ALL,
        EVT_EVALUATED,
        KV_TASKS,
        QUEUES,
        STREAM_DLQ,
        STREAM_EVENTS,
        STREAM_EXEC,
        STREAM_LOGS,
        WORK_EXEC,
        subject_token,
    )
    from soar_async.messages import TaskStatus
    from soar_async.runtime.registry import kv_keys, live_workers

    bus = await Bus.connect(bc, name="soar-status")
    out: dict[str, Any] = {
        "nats": bc.redacted(),
        "time": time.time(),
        "workers": [],
        "queues": [],
        "streams": {},
        "tasks": [],
    }
    try:
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
                    # per-task subjects (soar.evt.evaluated.<task>) summed per kind
                    kind = ".".join(subj.split(".")[:3])
                    kinds[kind] = kinds.get(kind, 0) + n
                out["streams"][sname] = {"messages": si.state.messages, "bytes": si.state.bytes, "subjects": kinds}
            # Tasks: queued (in the work queue, including in flight) and evaluated, counted by the
            # server per task subject; the conductor's TaskStatus (KV) adds state where it exists.
            tasks: dict[str, dict[str, Any]] = {}
            with contextlib.suppress(nats.js.errors.NotFoundError):
                si = await js.stream_info(STREAM_EXEC, subjects_filter=f"{WORK_EXEC}.>")
                for subj, n in (si.state.subjects or {}).items():
                    tok = subj[len(WORK_EXEC) + 1 :]
                    tasks.setdefault(tok, {"task_id": tok, "queued": 0, "evaluated": 0})["queued"] = n
            with contextlib.suppress(nats.js.errors.NotFoundError):
                si = await js.stream_info(STREAM_EVENTS, subjects_filter=EVALUATED_ALL)
                for subj, n in (si.state.subjects or {}).items():
                    tok = subj[len(EVT_EVALUATED) + 1 :]
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
            rates: dict[str, float] = {}
            for w in out["workers"]:
                rates[w["role"]] = round(rates.get(w["role"], 0.0) + float(w.get("rate") or 0.0), 3)
            out["throughput_per_s"] = rates
    finally:
        await bus.close()
    return out


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
    if st["tasks"]:
        tt = Table(title=f"tasks ({len(st['tasks'])})")
        for c in ("task", "state", "queued", "evaluated", "programs", "correct", "best h"):
            tt.add_column(c)
        for x in st["tasks"][:200]:
            tt.add_row(
                x["task_id"],
                x.get("state", ""),
                str(x.get("queued", 0)),
                str(x.get("evaluated", 0)),
                str(x.get("programs", "")),
                str(x.get("correct", "")),
                f"{x['best_fitness']:.2f}" if "best_fitness" in x else "",
            )
        console.print(tt)
        if len(st["tasks"]) > 200:
            console.print(f"... and {len(st['tasks']) - 200} more tasks (--json for all)")
    else:
        console.print("tasks: none yet")
    return console.export_text()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    bc = _need_bus(args, cfg, run_dir_of(args, cfg))
    try:
        st = anyio.run(gather_status, bc)
    except BusError as e:
        raise ValueError(str(e)) from None
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    else:
        print(render_status(st), end="")
    return 0


# --- soar logs ---------------------------------------------------------------------------


async def stream_logs(
    bc: BusConfig,
    *,
    follow: bool,
    actor: str | None,
    task: str | None,
    level: str,
    last: int,
    emit: Any,
    idle_exit: float | None = None,
) -> int:
    """Print matching events from the LOGS stream (the last `last`), then new ones with `follow`."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from soar_async.bus.topology import LOG, STREAM_LOGS, log_subject
    from soar_async.logs import LEVELS
    from soar_async.messages import DecodeError, LogEvent

    min_level = LEVELS.get(level.lower(), 20)
    subject = log_subject(actor) if actor else f"{LOG}.>"
    bus = await Bus.connect(bc, name="soar-logs")
    shown = 0
    try:
        with anyio.fail_after(15):
            si = await bus.js.stream_info(STREAM_LOGS)
        last_seq = si.state.last_seq
        window = last if not (task or min_level > 20 or actor) else max(last * 50, 20_000)
        start = max(si.state.first_seq, last_seq - window + 1, 1)
        if last_seq == 0:
            cc = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        else:
            cc = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        sub = await bus.js.subscribe(subject, ordered_consumer=True, config=cc)
        history: list[dict[str, Any]] = []
        live = last_seq == 0
        idle_since = anyio.current_time()
        while True:
            try:
                m = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                if not live:
                    live = True
                    for ev in history[-last:]:
                        emit(ev)
                    shown += len(history[-last:])
                    history = []
                    if not follow:
                        break
                if idle_exit is not None and anyio.current_time() - idle_since > idle_exit:
                    break
                continue
            idle_since = anyio.current_time()
            try:
                ev = LogEvent.decode(m.data)
            except DecodeError:
                continue
            seq = m.metadata.sequence.stream
            if LEVELS.get(ev.level, 20) < min_level or (task and ev.task_id != task):
                pass
            else:
                d = ev.to_dict()
                d.pop("t", None)
                d.pop("v", None)
                if live:
                    emit(d)
                    shown += 1
                else:
                    history.append(d)
            if not live and seq >= last_seq:
                live = True
                for ev2 in history[-last:]:
                    emit(ev2)
                shown += len(history[-last:])
                history = []
                if not follow:
                    break
        await sub.unsubscribe()
    finally:
        await bus.close()
    return shown


def cmd_logs(args: argparse.Namespace) -> int:
    from soar_async.logs import format_event

    cfg = _load_cfg(args)
    bc = _need_bus(args, cfg, run_dir_of(args, cfg))

    def emit(ev: dict[str, Any]) -> None:
        print(json.dumps(ev, default=str) if args.json else format_event(ev), flush=True)

    try:
        anyio.run(
            lambda: stream_logs(
                bc, follow=args.follow, actor=args.actor, task=args.task, level=args.level, last=args.lines, emit=emit
            )
        )
    except BusError as e:
        raise ValueError(str(e)) from None
    except KeyboardInterrupt:
        return 0
    return 0


# --- soar exec submit --------------------------------------------------------------------


def cmd_exec_submit(args: argparse.Namespace) -> int:
    from soar_async.arc import load_tasks

    cfg = _load_cfg(args)
    bc = _need_bus(args, cfg, run_dir_of(args, cfg))
    tasks = load_tasks(args.task)
    codes = []
    for f in args.file:
        try:
            codes.append(Path(f).read_text())
        except OSError as e:
            raise ValueError(f"cannot read program file {f}: {e.strerror or e}") from None
    from soar_async.runtime.client import exec_requests, submit_and_collect

    reqs = exec_requests(tasks, codes)

    def emit(ev: Any) -> None:
        if args.json:
            d = ev.to_dict()
            d.pop("t", None)
            print(json.dumps(d), flush=True)
        else:
            ok = sum(ev.train_correct)
            errs = sorted({e for e in ev.errors if e})
            print(
                f"{ev.program_id}  task {ev.task_id}  train {ok}/{len(ev.train_correct)}  "
                f"h={ev.fitness:.2f}  {ev.duration_s * 1000:.1f} ms  by {ev.worker_id}"
                + (f"  errors: {', '.join(errs)}" if errs else ""),
                flush=True,
            )

    try:
        got = anyio.run(lambda: submit_and_collect(bc, reqs, timeout=args.wait, on_result=emit))
    except BusError as e:
        raise ValueError(str(e)) from None
    for pid, reason in sorted(got.dead_lettered.items()):
        print(f"{pid}  dead-lettered: {reason}", file=sys.stderr)
    print(
        f"submitted {len(reqs)} execution request(s) for {len(tasks)} task(s)"
        + (f"; {len(got.results)} evaluated" if args.wait else "")
        + (f", {len(got.dead_lettered)} dead-lettered" if got.dead_lettered else ""),
        file=sys.stderr,
    )
    return 0 if not args.wait or len(got.results) == len(reqs) else 1


# --- registration ------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on this machine (embedded NATS unless --nats)")
    _add_bus_args(p)
    p.add_argument(
        "--role", action="append", metavar="ROLE[:N]", help="actors to start (repeatable; default: the built-in list)"
    )
    p.add_argument("--concurrency", type=int, help="concurrency for each started actor")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="embedded server address (default 127.0.0.1 on a free port; 0.0.0.0:4222 to let "
        "other machines attach workers)",
    )
    p.add_argument(
        "--server-config",
        metavar="FILE",
        help="config file for the embedded server (e.g. ops/nats/auth.conf); clients then need credentials",
    )
    p.add_argument("--replicas", type=int, help="JetStream replicas for streams and buckets (cluster: 3)")
    p.add_argument("--ack-wait", type=float, help="seconds before an unacked job is redelivered")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="join a running system as one worker of a role")
    _add_bus_args(w)
    w.add_argument("--role", required=True, help="executor, ... or module:Class")
    w.add_argument("--concurrency", type=int, help="jobs in flight at once (default: the role's default)")
    w.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight work may take to finish after SIGTERM before it is handed back",
    )
    w.add_argument("--heartbeat", type=float, default=3.0, help="heartbeat interval, seconds")
    w.add_argument("--replicas", type=int, help=argparse.SUPPRESS)
    w.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    w.set_defaults(func=cmd_worker)

    s = sub.add_parser("status", help="live workers, queue depths, throughput, tasks")
    _add_bus_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="tail the structured logs of the whole system")
    _add_bus_args(lg)
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--actor", help="only this actor (role)")
    lg.add_argument("--task", help="only events about this task id")
    lg.add_argument("--level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    lg.add_argument("-n", "--lines", type=int, default=50, help="how many past events to show first")
    lg.add_argument("--json", action="store_true")
    lg.set_defaults(func=cmd_logs)

    ex = sub.add_parser("exec", help="execution requests (testing and demos)")
    exs = ex.add_subparsers(dest="exec_cmd", metavar="CMD")
    es = exs.add_parser("submit", help="run program files on tasks through the executors")
    _add_bus_args(es)
    es.add_argument("--task", required=True, help="task selector (e.g. arc-agi-1:training#007bbfb7)")
    es.add_argument("--file", required=True, action="append", help="program file (repeatable)")
    es.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=120.0,
        default=None,
        help="wait up to this many seconds for the results and print them",
    )
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_exec_submit)
