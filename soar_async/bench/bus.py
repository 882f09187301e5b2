"""`soar bench bus`: what the bus costs, measured against its own baselines on this machine.

Payload: one ARC task's worth of work, 50 programs from the sandbox benchmark corpus (light
numpy one-liners and heavy pure-Python flood fills, with their real ARC inputs), as
ExecRequest messages, and the Evaluated messages they produce.

Rows:
- codec: msgpack encode + decode-and-validate per message;
- core NATS: request/reply round trip (per hop = half of it) and publish throughput;
- JetStream: publish-with-ack latency, publish -> pull -> ack hop latency, throughput;
- actor path: the full runtime path per program (publish request, pull, decode, publish the
  Evaluated with dedup, ack) through an ActorRunner whose handler returns precomputed
  results, one slot, so nothing overlaps; divided by the sandbox time of the same programs.
  Goal: under 5% of sandbox time.
The server is an embedded `nats-server` on loopback (its own temporary store), so the numbers
are the software's cost, not a network's.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

GOAL = 0.05


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else 0.0


def _lat(xs: list[float]) -> dict[str, float]:
    return {"p50_us": _pct(xs, 0.5) * 1e6, "p99_us": _pct(xs, 0.99) * 1e6, "mean_us": statistics.fmean(xs) * 1e6}


def workload(n: int, heavy: int) -> list[Any]:
    """n ExecRequests: (n - heavy) light and `heavy` heavy corpus programs, with train outputs."""
    from soar_async.messages import ExecRequest
    from soar_async.sandbox.corpus import heavy_programs, light_programs

    light, hv = light_programs(), heavy_programs()
    progs = [light[(i * 3) % len(light)] for i in range(n - heavy)] + [hv[i % len(hv)] for i in range(heavy)]
    reqs = []
    for i, p in enumerate(progs):
        reqs.append(
            ExecRequest(
                program_id=f"bench-{i:03d}",
                task_id=p.name.split("@")[-1],
                code=p.code,
                inputs=p.inputs,
                train_outputs=[None] * max(0, len(p.inputs) - 1),
            )
        )
    return reqs


def sandbox_times(reqs: list[Any]) -> tuple[list[Any], list[float]]:
    """Run each program once in a one-worker SandboxPool: results and wall time per program."""
    from soar_async.sandbox import SandboxPool

    results, times = [], []
    with SandboxPool(workers=1, cache_size=0) as pool:
        pool.map([("def transform(g):\n    return g\n", [[[0]]])])  # warm the worker
        for r in reqs:
            t0 = time.perf_counter()
            [res] = pool.map([(r.code, r.inputs)])
            times.append(time.perf_counter() - t0)
            results.append(res)
    return results, times


def codec(reqs: list[Any], evs: list[Any]) -> dict[str, Any]:
    from soar_async.messages import Evaluated, ExecRequest

    def cost(msgs: list[Any], cls: Any) -> dict[str, float]:
        enc, dec = [], []
        for _ in range(5):
            for m in msgs:
                t0 = time.perf_counter()
                b = m.encode()
                t1 = time.perf_counter()
                cls.decode(b)
                dec.append(time.perf_counter() - t1)
                enc.append(t1 - t0)
        sizes = [len(m.encode()) for m in msgs]
        return {
            "encode_us": statistics.fmean(enc) * 1e6,
            "decode_us": statistics.fmean(dec) * 1e6,
            "mean_bytes": statistics.fmean(sizes),
            "max_bytes": max(sizes),
        }

    return {"exec_request": cost(reqs, ExecRequest), "evaluated": cost(evs, Evaluated)}


async def core_nats(bus: Any, payloads: list[bytes], rounds: int) -> dict[str, Any]:
    import nats.errors

    subj = "bench.core.echo"

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    sub = await bus.nc.subscribe(subj, cb=echo)
    rtt = []
    for _ in range(rounds):
        for p in payloads:
            t0 = time.perf_counter()
            await bus.nc.request(subj, p, timeout=5)
            rtt.append(time.perf_counter() - t0)
    await sub.unsubscribe()
    # throughput: publish everything, count arrivals at a subscriber
    got = 0
    done = anyio.Event()
    total = len(payloads) * rounds * 5

    async def count(_msg: Any) -> None:
        nonlocal got
        got += 1
        if got == total:
            done.set()

    sub = await bus.nc.subscribe("bench.core.tput", cb=count, pending_msgs_limit=total * 2, pending_bytes_limit=2**30)
    t0 = time.perf_counter()
    for _ in range(rounds * 5):
        for p in payloads:
            await bus.nc.publish("bench.core.tput", p)
    await bus.nc.flush()
    with anyio.move_on_after(60):
        await done.wait()
    wall = time.perf_counter() - t0
    await sub.unsubscribe()
    with anyio.move_on_after(1):
        try:
            await bus.nc.flush()
        except nats.errors.Error:
            pass
    nbytes = sum(len(p) for p in payloads) * rounds * 5
    return {
        "hop": _lat([x / 2 for x in rtt]),
        "round_trip": _lat(rtt),
        "msgs_per_s": got / wall,
        "mb_per_s": nbytes / wall / 2**20,
        "delivered": got,
        "sent": total,
    }


async def jetstream(bus: Any, payloads: list[bytes], rounds: int) -> dict[str, Any]:
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

    await bus.js.add_stream(
        StreamConfig(
            name="BENCH", subjects=["bench.js.>"], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE
        )
    )
    await bus.js.add_consumer(
        "BENCH",
        ConsumerConfig(
            durable_name="bench", ack_policy=AckPolicy.EXPLICIT, filter_subject="bench.js.work", max_ack_pending=100_000
        ),
    )
    pull = await bus.js.pull_subscribe_bind(durable="bench", stream="BENCH")
    pub, hop = [], []
    for r in range(rounds):
        for i, p in enumerate(payloads):
            t0 = time.perf_counter()
            await bus.js.publish("bench.js.work", p, headers={"Nats-Msg-Id": f"lat-{r}-{i}"})
            t1 = time.perf_counter()
            [m] = await pull.fetch(1, timeout=5)
            await m.ack_sync(timeout=5)
            t2 = time.perf_counter()
            pub.append(t1 - t0)
            hop.append(t2 - t0)
    # throughput: async publishes (acks awaited in bulk), then batch pulls with acks
    total = len(payloads) * rounds * 5
    t0 = time.perf_counter()
    futs = []
    for r in range(rounds * 5):
        for i, p in enumerate(payloads):
            futs.append(await bus.js.publish_async("bench.js.work", p, headers={"Nats-Msg-Id": f"tp-{r}-{i}"}))
    for f in futs:
        await f
    t_pub = time.perf_counter() - t0
    got = 0
    t1 = time.perf_counter()
    while got < total:
        msgs = await pull.fetch(min(256, total - got), timeout=5)
        for m in msgs:
            await m.ack()
        got += len(msgs)
    await bus.nc.flush()
    t_con = time.perf_counter() - t1
    await pull.unsubscribe()
    await bus.js.delete_stream("BENCH")
    nbytes = sum(len(p) for p in payloads) * rounds * 5
    return {
        "publish_ack": _lat(pub),
        "hop": _lat(hop),
        "publish_msgs_per_s": total / t_pub,
        "consume_msgs_per_s": total / t_con,
        "msgs_per_s": total / (t_pub + t_con),
        "mb_per_s": nbytes / (t_pub + t_con) / 2**20,
    }


def _cpu(pid: int | None) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def actor_path(
    bus: Any, reqs: list[Any], results: list[Any], rounds: int, server_pid: int | None = None
) -> dict[str, Any]:
    """The runtime path per program, with the sandbox replaced by its precomputed results."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from soar_async.bus.topology import EVALUATED_ALL, Topology, provision
    from soar_async.messages import Evaluated, ExecRequest
    from soar_async.runtime.actor import Actor, ActorRunner
    from soar_async.runtime.inputs import Input, WorkQueue

    by_code = {r.code: res for r, res in zip(reqs, results, strict=True)}

    class Replay(Actor[ExecRequest]):
        role: ClassVar[str] = "bench"
        inputs: ClassVar[tuple[Input, ...]] = (WorkQueue("exec", ExecRequest),)

        async def handle(self, msg: ExecRequest) -> Evaluated:
            res = by_code[msg.code]
            return Evaluated(
                program_id=msg.program_id,
                task_id=msg.task_id,
                code=msg.code,
                outputs=[g.output for g in res.results],
                errors=[None if g.error is None else str(g.error) for g in res.results],
                details=[g.detail for g in res.results],
                duration_s=res.duration_s,
                worker_id=self.ctx.worker_id,
            )

    topo = Topology()
    await provision(bus, topo, update=True, queues=["exec"])
    sub = await bus.js.subscribe(
        EVALUATED_ALL, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    )
    runner = ActorRunner(Replay, bus, concurrency=1, topology=topo, fetch_timeout=0.5)
    per_program = []
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        for r in range(rounds):
            for q in reqs:
                m = dataclasses.replace(q, program_id=f"{q.program_id}-r{r}")
                t0 = time.perf_counter()
                await bus.js_publish(m.subject(), m.encode(), msg_id=m.dedup_id())
                while True:
                    try:
                        ev = await sub.next_msg(timeout=10)
                    except nats.errors.TimeoutError as e:
                        raise RuntimeError("actor path stalled") from e
                    if Evaluated.decode(ev.data).program_id == m.program_id:
                        break
                per_program.append(time.perf_counter() - t0)
        runner.request_stop()
    # Pipelined: the whole batch queued at once, 8 slots, as a busy executor sees it; the
    # amortised wall time per program is the bus's share of a worker's time when nothing waits.
    runner = ActorRunner(Replay, bus, concurrency=8, topology=topo, fetch_timeout=0.5)
    batch = [dataclasses.replace(q, program_id=f"{q.program_id}-p{r}") for r in range(rounds) for q in reqs]
    want = {m.program_id for m in batch}
    async with anyio.create_task_group() as tg:
        t0 = time.perf_counter()
        cpu0 = _cpu(None)
        srv0 = _cpu(server_pid) if server_pid else 0.0
        futs = [
            await bus.js.publish_async(m.subject(), m.encode(), headers={"Nats-Msg-Id": m.dedup_id()}) for m in batch
        ]
        for f in futs:
            await f
        await tg.start(runner.run)
        while want:
            try:
                ev = await sub.next_msg(timeout=10)
            except nats.errors.TimeoutError as e:
                raise RuntimeError("pipelined actor path stalled") from e
            want.discard(Evaluated.decode(ev.data).program_id)
        wall = time.perf_counter() - t0
        cpu = _cpu(None) - cpu0
        srv_cpu = (_cpu(server_pid) - srv0) if server_pid else 0.0
        runner.request_stop()
    await sub.unsubscribe()
    return {
        "per_program": _lat(per_program),
        "programs": len(per_program),
        "pipelined_per_program_us": wall / len(batch) * 1e6,
        "pipelined_msgs_per_s": len(batch) / wall,
        "client_cpu_per_program_us": cpu / len(batch) * 1e6,
        "server_cpu_per_program_us": srv_cpu / len(batch) * 1e6,
    }


async def run_bench(n: int, rounds: int, heavy: int, progress: Any) -> dict[str, Any]:
    from soar_async.config import Config
    from soar_async.runtime.system import bring_up

    reqs = workload(n, heavy)
    progress(f"sandbox: running {len(reqs)} programs once ({heavy} heavy) ...")
    results, sb_times = await anyio.to_thread.run_sync(sandbox_times, reqs)
    from soar_async.messages import Evaluated

    evs = [
        Evaluated(
            program_id=r.program_id,
            task_id=r.task_id,
            code=r.code,
            outputs=[g.output for g in res.results],
            errors=[None if g.error is None else str(g.error) for g in res.results],
            duration_s=res.duration_s,
        )
        for r, res in zip(reqs, results, strict=True)
    ]
    out: dict[str, Any] = {"programs": n, "heavy": heavy, "rounds": rounds}
    out["codec"] = codec(reqs, evs)
    out["sandbox"] = {
        "per_program": _lat(sb_times),
        "light_mean_ms": statistics.fmean(sb_times[: n - heavy]) * 1e3,
        "heavy_mean_ms": statistics.fmean(sb_times[n - heavy :]) * 1e3 if heavy else 0.0,
    }
    payloads = [r.encode() for r in reqs]
    with tempfile.TemporaryDirectory(prefix="soar-bench-bus-") as tmp:
        # The same bring-up as `soar up`: an embedded server on its own temporary store.
        async with bring_up(Config(), run_dir=Path(tmp), name="bench") as system:
            bus, srv = system.bus, system.server
            pid = srv.proc.pid if srv is not None and srv.proc is not None else None
            progress("core NATS ...")
            out["core"] = await core_nats(bus, payloads, rounds)
            progress("JetStream ...")
            out["jetstream"] = await jetstream(bus, payloads, rounds)
            progress("actor path ...")
            out["actor"] = await actor_path(bus, reqs, results, rounds, pid)
    sb_mean = out["sandbox"]["per_program"]["mean_us"]
    out["ratios"] = {
        "jetstream_vs_core_hop_latency_p50": out["jetstream"]["hop"]["p50_us"] / out["core"]["hop"]["p50_us"],
        "core_vs_jetstream_throughput": out["core"]["msgs_per_s"] / out["jetstream"]["msgs_per_s"],
        "bus_overhead_fraction_of_sandbox": out["actor"]["per_program"]["mean_us"] / sb_mean,
        "bus_overhead_fraction_of_sandbox_light": out["actor"]["per_program"]["mean_us"]
        / (out["sandbox"]["light_mean_ms"] * 1e3),
        "bus_overhead_fraction_of_sandbox_light_pipelined": out["actor"]["pipelined_per_program_us"]
        / (out["sandbox"]["light_mean_ms"] * 1e3),
        "bus_cpu_fraction_of_sandbox": (
            out["actor"]["client_cpu_per_program_us"] + out["actor"]["server_cpu_per_program_us"]
        )
        / sb_mean,
        "bus_cpu_fraction_of_sandbox_light": (
            out["actor"]["client_cpu_per_program_us"] + out["actor"]["server_cpu_per_program_us"]
        )
        / (out["sandbox"]["light_mean_ms"] * 1e3),
        "goal": GOAL,
    }
    out["ratios"]["meets_goal"] = out["ratios"]["bus_overhead_fraction_of_sandbox"] < GOAL
    return out


def render(r: dict[str, Any]) -> str:
    c, js, a, sb, q = r["core"], r["jetstream"], r["actor"], r["sandbox"], r["ratios"]
    cd = r["codec"]
    lines = [
        f"soar bench bus: one ARC task with {r['programs']} programs ({r['heavy']} heavy), "
        f"{r['rounds']} rounds, embedded nats-server on loopback",
        f"  payload          ExecRequest mean {cd['exec_request']['mean_bytes'] / 1024:.1f} KiB "
        f"(max {cd['exec_request']['max_bytes'] / 1024:.1f}), Evaluated mean "
        f"{cd['evaluated']['mean_bytes'] / 1024:.1f} KiB",
        f"  codec            ExecRequest encode {cd['exec_request']['encode_us']:.0f} us, decode+validate "
        f"{cd['exec_request']['decode_us']:.0f} us; Evaluated {cd['evaluated']['encode_us']:.0f} / "
        f"{cd['evaluated']['decode_us']:.0f} us",
        f"  core NATS        hop p50 {c['hop']['p50_us']:.0f} us  p99 {c['hop']['p99_us']:.0f} us   "
        f"{c['msgs_per_s']:,.0f} msg/s  {c['mb_per_s']:.0f} MiB/s",
        f"  JetStream        publish+ack p50 {js['publish_ack']['p50_us']:.0f} us; publish->pull->ack hop p50 "
        f"{js['hop']['p50_us']:.0f} us  p99 {js['hop']['p99_us']:.0f} us   {js['msgs_per_s']:,.0f} msg/s "
        f"(publish {js['publish_msgs_per_s']:,.0f}, consume {js['consume_msgs_per_s']:,.0f})  "
        f"{js['mb_per_s']:.0f} MiB/s",
        f"  actor path       per program p50 {a['per_program']['p50_us'] / 1e3:.2f} ms  p99 "
        f"{a['per_program']['p99_us'] / 1e3:.2f} ms  mean {a['per_program']['mean_us'] / 1e3:.2f} ms "
        f"(request -> pull -> decode -> Evaluated published with dedup -> ack), one at a time",
        f"  actor pipelined  {a['pipelined_per_program_us'] / 1e3:.2f} ms per program amortised, "
        f"{a['pipelined_msgs_per_s']:,.0f} programs/s (batch queued, 8 slots); CPU per program: "
        f"client {a['client_cpu_per_program_us']:.0f} us (producer + actor + consumer in one process), "
        f"nats-server {a['server_cpu_per_program_us']:.0f} us",
        f"  sandbox          per program mean {sb['per_program']['mean_us'] / 1e3:.1f} ms (light "
        f"{sb['light_mean_ms']:.1f} ms, heavy {sb['heavy_mean_ms']:.1f} ms), p50 "
        f"{sb['per_program']['p50_us'] / 1e3:.1f} ms",
        "ratios:",
        f"  JetStream / core hop latency (p50)      {q['jetstream_vs_core_hop_latency_p50']:.1f}x",
        f"  core / JetStream throughput             {q['core_vs_jetstream_throughput']:.1f}x",
        f"  bus overhead / sandbox time, corpus mix {q['bus_overhead_fraction_of_sandbox'] * 100:.2f}%  "
        f"(goal < {GOAL * 100:.0f}%: {'met' if q['meets_goal'] else 'NOT met'})",
        f"  bus overhead / sandbox time, light only {q['bus_overhead_fraction_of_sandbox_light'] * 100:.2f}% "
        f"one at a time, {q['bus_overhead_fraction_of_sandbox_light_pipelined'] * 100:.2f}% pipelined",
        f"  bus CPU / sandbox time                  {q['bus_cpu_fraction_of_sandbox'] * 100:.2f}% corpus mix, "
        f"{q['bus_cpu_fraction_of_sandbox_light'] * 100:.2f}% light only",
    ]
    return "\n".join(lines)
