"""The actor base and the loop that feeds it: all the plumbing, written once.

An actor module subclasses `Actor`, declares what it listens to (`inputs`: work queues,
durable event streams, broadcasts; see `soar_async.runtime.inputs`) and writes
`handle(msg) -> output(s)`. `ActorRunner` does the rest:

- one JetStream pull consumer per input, fetching only as many messages as there are free
  slots, so a busy worker never sits on work another worker could take, and a stop has
  little to hand back;
- in-progress acks while a long job runs (the server would otherwise redeliver it after
  ack_wait);
- outputs published with their dedup id *before* the input is acked: a crash in between
  means redelivery and a duplicate publish the server drops (at-least-once delivery,
  idempotent consumers, exactly-once results);
- nak with backoff on failure, termination after the last allowed delivery with the message
  copied to the dead letter stream; undecodable payloads go there at once;
- heartbeats into the worker registry (KV with TTL);
- stop = drain: `request_stop()` cancels the fetch loops; in-flight handlers get
  `drain_timeout` (a deadline on their scope); whatever is cut off is nak'd so that another
  worker takes it at once.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import anyio.abc
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from soar_async import __version__
from soar_async.bus.conn import Bus, PayloadTooLarge
from soar_async.bus.topology import KV_WORKERS, Topology
from soar_async.config import Config
from soar_async.logs import bind, get_logger
from soar_async.messages import DecodeError, Heartbeat, Message, decode
from soar_async.retry import Backoff, backoff_delay
from soar_async.runtime.deadletter import publish_dead_letter, watch_max_deliveries
from soar_async.runtime.inputs import Events, Feed, Input, Partition

In = TypeVar("In", bound=Message)

_deliveries: contextvars.ContextVar[int] = contextvars.ContextVar("soar_deliveries", default=1)


def current_deliveries() -> int:
    """How many times the message being handled (in this task) has been delivered, 1 = first."""
    return _deliveries.get()


class TransientError(Exception):
    """Try again later (another worker, after a backoff): the input may be fine."""


class PermanentError(Exception):
    """The input itself cannot be processed: dead-letter it now instead of retrying."""


def make_worker_id(role: str) -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40]
    return f"{role}-{host}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(slots=True)
class ActorContext:
    """What an actor may use: the bus, its identity, the typed configuration, a logger, the run directory.

    Attributes:
        bus: the connected bus (publish facts with `publish`, read buckets through `bus.js`).
        role: the actor's role name.
        worker_id: unique per worker process and role; heartbeats and log events carry it.
        concurrency: how many messages this worker handles at once.
        topology: the bus layout (queues, streams, buckets).
        config: the whole frozen configuration; an actor reads its own section.
        run_dir: the run directory, where a stateful actor keeps files (None: no local state).
        partition: (index, count) when this worker owns a share of the tasks.
        log: a structlog logger bound to the actor and worker.
        draining: set when the worker was asked to stop: a handler may hand work back
            (raise TransientError) instead of starting something long.
    """

    bus: Bus
    role: str
    worker_id: str
    concurrency: int
    topology: Topology
    config: Config
    run_dir: Path | None = None
    partition: Partition | None = None
    log: Any = None
    draining: bool = False

    async def publish(self, msg: Message, *, retry_for: float = 120.0) -> None:
        """Publish a fact into its stream with its dedup id (redeliveries are stored once)."""
        await self.bus.js_publish(msg.subject(), msg.encode(), msg_id=msg.dedup_id(), retry_for=retry_for)


class Actor(Generic[In]):
    """Behaviour of one role. Subclasses set the class attributes and implement `handle`.

    role: name used by `soar worker --role`, in heartbeats and log events.
    inputs: what it listens to (`WorkQueue`, `Events`, `Broadcast`); override `listens_to`
        when that depends on the context (e.g. the tasks a worker drives).
    """

    role: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    default_concurrency: ClassVar[int] = 1
    serves: ClassVar[str | None] = None
    """A sharded subject prefix (`soar.q.archive`) on which the actor answers requests
    (core NATS request/reply, `answer()`), for the shards of its partition: the place of a
    stateful actor's queries, so that askers reach the worker that holds the task."""

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    def listens_to(self) -> Sequence[Input]:
        return type(self).inputs

    @classmethod
    def concurrency_for(cls, config: Config) -> int:
        """Messages one worker handles at once when none is given; a role may size it from config."""
        return cls.default_concurrency

    def status(self) -> dict[str, Any]:
        """Role-specific figures for the heartbeat and `soar status` (an LLM worker: its model
        version, tokens/s, requests inside the engine)."""
        return {}

    async def setup(self) -> None:
        """Acquire resources (sandbox pool, model); runs before the first fetch."""

    async def teardown(self) -> None:
        """Release them; runs after draining, also after a failed start."""

    async def handle(self, msg: In) -> Message | Sequence[Message] | None:
        """Process one input; returned messages are published (with dedup) before the ack."""
        raise NotImplementedError

    async def answer(self, query: Message) -> Message:
        """Reply to one request on `serves` (only actors that set `serves`)."""
        raise NotImplementedError

    async def main(self) -> None:
        """A role's own long-running work beside its inputs (the conductor's generation loop).

        Runs while the worker runs, and is cancelled with its fetching when the worker is
        asked to stop; when it returns, the worker stops. Most roles have none."""
        raise NotImplementedError

    @classmethod
    def has_main(cls) -> bool:
        return cls.main is not Actor.main

    def ids(self, msg: In) -> dict[str, Any]:
        """Ids bound to every log event while `msg` is handled."""
        return {k: getattr(msg, k) for k in ("task_id", "program_id", "request_id") if hasattr(msg, k)}


@dataclass(slots=True)
class Counters:
    ok: int = 0
    failed: int = 0
    dead_lettered: int = 0
    redelivered: int = 0
    handed_back: int = 0
    done_times: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def as_dict(self) -> dict[str, int]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "redelivered": self.redelivered,
            "handed_back": self.handed_back,
        }

    def rate(self, window: float = 60.0) -> float:
        now = time.monotonic()
        while self.done_times and self.done_times[0] < now - window:
            self.done_times.popleft()
        if not self.done_times:
            return 0.0
        span = min(window, max(1.0, now - self.done_times[0]))
        return len(self.done_times) / span


class ActorRunner:
    """Runs one actor: fetch loops, bounded concurrency, heartbeats, drain on stop."""

    def __init__(
        self,
        actor_cls: type[Actor[Any]],
        bus: Bus,
        *,
        config: Config | None = None,
        concurrency: int | None = None,
        topology: Topology | None = None,
        run_dir: Path | None = None,
        worker_id: str | None = None,
        partition: Partition | None = None,
        replay_from: int | None = None,
        heartbeat_interval: float = 3.0,
        drain_timeout: float = 30.0,
        fetch_timeout: float = 1.0,
        progress_interval: float = 10.0,
    ) -> None:
        self.actor_cls = actor_cls
        self.bus = bus
        self.topology = topology or Topology()
        config = config or Config()
        self.concurrency = max(1, concurrency or actor_cls.concurrency_for(config))
        self.worker_id = worker_id or make_worker_id(actor_cls.role)
        self.replay_from = replay_from
        self.heartbeat_interval = heartbeat_interval
        self.drain_timeout = drain_timeout
        self.fetch_timeout = fetch_timeout
        self.progress_interval = progress_interval
        self.counters = Counters()
        self.in_flight = 0
        self.peak_in_flight = 0
        """The most messages this worker ever held at once (never above `concurrency`)."""
        self.started_at = time.time()
        self.state = "starting"
        self.log = get_logger(actor=actor_cls.role)
        self.ctx = ActorContext(
            bus=bus,
            role=actor_cls.role,
            worker_id=self.worker_id,
            concurrency=self.concurrency,
            topology=self.topology,
            config=config,
            run_dir=run_dir,
            partition=partition,
            log=self.log,
        )
        self.actor = actor_cls(self.ctx)
        self.feeds: list[Feed] = []
        self._fetching = anyio.CancelScope()
        self._handlers: anyio.CancelScope | None = None
        self._aborted = False
        self._slots = anyio.Semaphore(self.concurrency)
        self._working: dict[int, tuple[Msg, float, float]] = {}
        self._load_ema = 0.0
        self.finished = anyio.Event()
        """Set once `run` has returned or failed (the worker is gone)."""

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin draining: fetching stops now; in-flight work gets `drain_timeout` to finish."""
        self.ctx.draining = True
        self._fetching.cancel()

    def abort(self) -> None:
        """Stop now: in-flight handlers are cancelled and their messages handed back at once."""
        self.request_stop()
        self._aborted = True
        if self._handlers is not None:
            self._handlers.cancel()

    @property
    def stopping(self) -> bool:
        return self.ctx.draining

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """start -> run -> drain -> stop. Returns once everything fetched is acked or nak'd."""
        bind(actor=self.actor_cls.role, worker_id=self.worker_id)
        self.log.info("actor starting", role=self.actor_cls.role, concurrency=self.concurrency)
        subs: list[Any] = []
        try:
            await self.actor.setup()
            for inp in self.actor.listens_to():
                if self.replay_from is not None and isinstance(inp, Events):
                    inp = dataclasses.replace(inp, replay_from=self.replay_from)
                feed = await inp.open(
                    self.bus,
                    self.topology,
                    role=self.actor_cls.role,
                    worker_id=self.worker_id,
                    partition=self.ctx.partition,
                )
                self.feeds.append(feed)
                subs.append(await self.bus.js.pull_subscribe_bind(feed.consumer, stream=feed.stream))
            if not self.feeds and not self.actor_cls.has_main():
                raise ValueError(f"actor {self.actor_cls.role!r} listens to nothing (set `inputs` or `main`)")
            self.state = "running"
            async with anyio.create_task_group() as services:
                services.start_soon(self._heartbeat_loop)
                services.start_soon(self._keepalive_loop)
                for feed in self.feeds:
                    await services.start(watch_max_deliveries, self.bus, feed, self.actor_cls.role)
                if self.actor_cls.serves:
                    # Answered until the end (after this worker's subscriptions, so unsubscribed first).
                    subs.extend(await self._serve(services, self.actor_cls.serves))
                task_status.started()
                self.log.info("actor running", inputs=[f.subject for f in self.feeds], worker=self.worker_id)
                async with anyio.create_task_group() as handlers:
                    self._handlers = handlers.cancel_scope
                    if self._aborted:
                        handlers.cancel_scope.cancel()
                    with self._fetching:
                        async with anyio.create_task_group() as fetchers:
                            for feed, sub in zip(self.feeds, subs[: len(self.feeds)], strict=True):
                                fetchers.start_soon(self._fetch_loop, feed, sub, handlers)
                            if self.actor_cls.has_main():
                                fetchers.start_soon(self._main)
                    # Fetching was cancelled (a stop): in-flight work has until the deadline.
                    self.state = "draining"
                    self.log.info("actor draining", in_flight=self.in_flight)
                    handlers.cancel_scope.deadline = anyio.current_time() + self.drain_timeout
                self.state = "stopped"
                services.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    with anyio.move_on_after(5):
                        try:
                            await sub.unsubscribe()
                        except Exception:
                            pass
                await self._deregister()
                with anyio.move_on_after(30):
                    await self.actor.teardown()
            self.log.info("actor stopped", **self.counters.as_dict())
            self.finished.set()

    async def _main(self) -> None:
        """The actor's own loop; its end is the worker's end (a stop cancels it first)."""
        await self.actor.main()
        self.log.info("actor finished its work")
        self.request_stop()

    # -- request/reply ------------------------------------------------------------------

    async def _serve(self, group: anyio.abc.TaskGroup, prefix: str) -> list[Any]:
        """Subscribe to the requests of this worker's shards and answer each in `group`.

        A queue group per role and partition: two workers owning the same shards share them.
        A request that cannot be decoded or answered gets an `error` reply naming why
        (never silence: the asker would wait out its timeout).
        """
        from soar_async.bus.topology import partition_filters
        from soar_async.messages import ArchiveAnswer

        part = self.ctx.partition
        subjects = [f"{prefix}.>"] if part is None else partition_filters(prefix, *part)
        queue = self.actor_cls.role if part is None else f"{self.actor_cls.role}-p{part[0]}of{part[1]}"

        async def one(m: Msg) -> None:
            try:
                query = decode(m.data)
                reply: Message = await self.actor.answer(query)
            except Exception as e:  # a bad question must not take the worker down
                self.log.warning("query failed", subject=m.subject, error=repr(e))
                reply = ArchiveAnswer(task_id="", what="", error=f"{type(e).__name__}: {e}")
            if m.reply:
                try:
                    await self.bus.nc.publish(m.reply, reply.encode())
                except Exception as e:
                    self.log.warning("could not send a reply", subject=m.subject, error=repr(e))

        async def cb(m: Msg) -> None:
            group.start_soon(one, m)

        return [await self.bus.nc.subscribe(subj, queue=queue, cb=cb) for subj in subjects]

    # -- the fetch loop -------------------------------------------------------------------

    async def _fetch_loop(self, feed: Feed, sub: Any, handlers: anyio.abc.TaskGroup) -> None:
        """Take free slots, fetch that many messages, start a handler for each; until cancelled."""
        backoff = Backoff(0.1, 2.0)
        errors = 0
        while True:
            await self.bus.wait_connected()  # no pull requests into an outage: they would pile up
            await self._slots.acquire()
            want = 1
            while want < self.concurrency:
                try:
                    self._slots.acquire_nowait()
                    want += 1
                except anyio.WouldBlock:
                    break
            msgs: list[Msg] = []
            try:
                # Shielded and bounded by fetch_timeout: a stop waits for the pull in flight rather
                # than drop messages the server already handed us (they would wait out ack_wait).
                with anyio.CancelScope(shield=True):
                    msgs = await sub.fetch(want, timeout=self.fetch_timeout)
                backoff.reset()
                errors = 0
            except TimeoutError:
                pass  # nothing to do right now: an idle pull is normal
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise
            except (nats.errors.Error, OSError) as e:
                errors += 1
                if self.bus.connected and (errors in (1, 10) or errors % 100 == 0):
                    # (While the connection is down this is expected; the outage itself is logged.)
                    self.log.warning("fetch failed, retrying", input=feed.subject, error=repr(e), attempts=errors)
                await backoff.sleep()
            finally:
                for _ in range(want - len(msgs)):
                    self._slots.release()
            if len(msgs) > want:
                # Never hold more than our slots: hand extras back at once for another worker.
                extra, msgs = msgs[want:], msgs[:want]
                for m in extra:
                    await self._settle(m, "nak", 0)
            for m in msgs:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                handlers.start_soon(self._process, feed, m)

    # -- one message ----------------------------------------------------------------------

    async def _process(self, feed: Feed, msg: Msg) -> None:
        settled = False
        try:
            try:
                deliveries = int(msg.metadata.num_delivered or 1)
            except Exception:
                deliveries = 1
            if deliveries > 1:
                self.counters.redelivered += 1
            try:
                obj = decode(msg.data, feed.message)
            except DecodeError as e:
                await self._reject(feed, msg, f"undecodable: {e.reason}", deliveries)
                settled = True
                return
            bind(**self.actor.ids(obj))
            _deliveries.set(deliveries)
            try:
                # Kept "in progress" until the outputs are stored too: a publish that retries
                # through an outage may outlast the ack wait, and the job must not be redelivered.
                self._working[id(msg)] = (msg, time.monotonic(), max(0.5, feed.ack_wait / 3))
                try:
                    out = await self.actor.handle(obj)
                    outs = [] if out is None else [out] if isinstance(out, Message) else list(out)
                    for o in outs:
                        await self.ctx.publish(o)
                finally:
                    self._working.pop(id(msg), None)
            except PermanentError as e:
                self.log.warning("permanent failure, dead-lettering", error=str(e))
                await self._reject(feed, msg, f"permanent: {e}", deliveries)
                settled = True
                return
            except PayloadTooLarge as e:
                self.log.error("output too large, dead-lettering input", error=str(e))
                await self._reject(feed, msg, f"output too large: {e}", deliveries)
                settled = True
                return
            except Exception as e:
                self.counters.failed += 1
                if deliveries >= feed.max_deliver:
                    self.log.error("failed on last delivery, dead-lettering", error=repr(e), deliveries=deliveries)
                    await self._reject(feed, msg, f"failed {deliveries} times, last: {e!r}", deliveries)
                else:
                    # Draining: hand it back at once for another worker; otherwise back off.
                    delay = 0.0 if self.stopping else backoff_delay(deliveries, 1.0, 30.0)
                    self.log.warning(
                        "handler failed, will retry", error=repr(e), deliveries=deliveries, retry_in=round(delay, 2)
                    )
                    await self._settle(msg, "nak", delay)
                settled = True
                return
            await self._settle(msg, "ack")
            settled = True
            self.counters.ok += 1
            self.counters.done_times.append(time.monotonic())
        finally:
            if not settled:
                # Cancelled (drain deadline, abort): hand the message back at once.
                with anyio.CancelScope(shield=True):
                    self.counters.handed_back += 1
                    await self._settle(msg, "nak", 0)
            self.in_flight -= 1
            self._slots.release()

    async def _settle(self, msg: Msg, how: str, delay: float | None = None) -> None:
        """ack, nak or term; a lost one only means a redelivery, which dedup absorbs.

        Acks are not confirmed (no ack_sync round trip per job): outputs are already stored,
        with their dedup ids, before the ack is sent.
        """
        try:
            with anyio.fail_after(10):
                if how == "ack":
                    await msg.ack()
                elif how == "nak":
                    await msg.nak(delay=delay or None)
                else:
                    await msg.term()
        except nats.errors.MsgAlreadyAckdError:
            pass
        except Exception as e:
            self.log.warning(f"{how} failed; the message will be redelivered", error=repr(e))

    async def _keepalive_loop(self) -> None:
        """Tell the server we are still working on long jobs, so it does not redeliver them.

        One loop for all in-flight messages (not a task per message: most jobs take
        milliseconds, and the bus's cost per job is what the benchmark watches).
        """
        while True:
            await anyio.sleep(0.25)
            now = time.monotonic()
            for msg, started, period in list(self._working.values()):
                if now - started >= period and int(now / period) != int((now - 0.25) / period):
                    try:
                        with anyio.move_on_after(5):
                            await msg.in_progress()
                    except Exception:
                        pass

    async def _reject(self, feed: Feed, msg: Msg, reason: str, deliveries: int) -> None:
        """Give up on a message for good: copy it to the dead letter, then terminate it."""
        await self._dead_letter(msg, reason, deliveries)
        await self._settle(msg, "term")

    async def _dead_letter(self, msg: Msg, reason: str, deliveries: int) -> None:
        """Copy the original bytes to `soar.dlq.<role>` with the reason in headers; never raises."""
        self.counters.dead_lettered += 1
        seq = ""
        try:
            seq = str(msg.metadata.sequence.stream)
        except Exception:
            pass
        self.log.error("dead letter", reason=reason, subject=msg.subject, stream_seq=seq, size=len(msg.data))
        try:
            await publish_dead_letter(
                self.bus,
                self.actor_cls.role,
                bytes(msg.data),
                source_subject=msg.subject,
                seq=seq,
                reason=reason,
                deliveries=deliveries,
                worker=self.worker_id,
                msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
            )
        except Exception as e:
            self.log.error("could not write dead letter", error=repr(e))

    # -- registry -------------------------------------------------------------------------

    def _sample_load(self) -> float:
        return self.in_flight / self.concurrency

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            worker_id=self.worker_id,
            role=self.actor_cls.role,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            concurrency=self.concurrency,
            in_flight=self.in_flight,
            load=round(self._load_avg(), 3),
            counters=self.counters.as_dict(),
            rate=round(self.counters.rate(), 3),
            started_at=self.started_at,
            ts=time.time(),
            state=self.state,
            info=self._status(),
        )

    def _status(self) -> dict[str, Any]:
        try:
            return dict(self.actor.status())
        except Exception as e:  # a figure for the dashboard must never stop the heartbeat
            return {"status_error": repr(e)}

    def _load_avg(self) -> float:
        return self._load_ema

    @property
    def registry_key(self) -> str:
        return f"{self.actor_cls.role}.{self.worker_id}"

    async def _heartbeat_loop(self) -> None:
        kv = None
        ema = 0.0
        ticks = 0
        next_beat = 0.0
        next_progress = anyio.current_time() + self.progress_interval
        last_counts: dict[str, int] = {}
        while True:
            # Sample load often, publish the heartbeat every interval.
            ema = 0.8 * ema + 0.2 * self._sample_load()
            self._load_ema = ema
            now = anyio.current_time()
            if now >= next_beat:
                next_beat = now + self.heartbeat_interval
                ticks += 1
                try:
                    with anyio.fail_after(5):
                        if kv is None:
                            kv = await self.bus.js.key_value(KV_WORKERS)
                        await kv.put(self.registry_key, self.heartbeat().encode())
                except Exception as e:
                    kv = None
                    if ticks % 10 == 1:
                        self.log.debug("heartbeat failed", error=repr(e))
            if now >= next_progress:
                # A progress event (to the log file and the log subject) when something changed.
                next_progress = now + self.progress_interval
                counts = self.counters.as_dict()
                if counts != last_counts:
                    last_counts = counts
                    self.log.info(
                        "progress",
                        in_flight=self.in_flight,
                        rate=round(self.counters.rate(), 2),
                        load=round(ema, 2),
                        **counts,
                    )
            await anyio.sleep(min(0.5, self.heartbeat_interval))

    async def _deregister(self) -> None:
        try:
            with anyio.fail_after(3):
                kv = await self.bus.js.key_value(KV_WORKERS)
                await kv.delete(self.registry_key)
        except Exception:
            pass
