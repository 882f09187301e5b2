"""Connecting to NATS: from plain settings, with reconnect backoff and a timeout on every wait.

`Bus` is the one object actors hold: the core connection, its JetStream context, and the
publish path that enforces the server's max payload before anything is sent (a 10 MB message
must fail loudly at the publisher, naming its size and the limit, not disappear later).
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client, Server
from nats.js import JetStreamContext
from nats.js.api import PubAck

from soar_async.retry import backoff_delay, retry

DEFAULT_TIMEOUT = 5.0
"""Seconds any single request to the server may take before we give up on it (and retry)."""


class BusError(RuntimeError):
    """A bus operation failed for good (after its retries); the message says what and where."""


class PayloadTooLarge(BusError):
    """A message bigger than the server's max payload: store the blob, send a reference."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        self.subject, self.size, self.limit = subject, size, limit
        super().__init__(
            f"payload of {size} bytes for {subject!r} exceeds the server's max_payload of {limit} bytes; "
            "put large blobs in the object store and send a reference"
        )


@dataclass(slots=True)
class BusConfig:
    """Where the NATS servers are and how to authenticate; every field optional but `urls`.

    Credentials: user/password, a token, a `.creds` file (JWT + nkey), or an nkey seed
    file. TLS: a CA file to verify the server (and an optional client cert/key for mutual TLS);
    `tls://` URLs or any TLS setting turn it on.
    """

    urls: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    name: str = "soar"
    connect_timeout: float = 1.0
    request_timeout: float = DEFAULT_TIMEOUT
    reconnect_base: float = 0.1
    reconnect_max: float = 5.0
    source: str = ""
    """Where the URL came from, when that helps an error message (e.g. a stale run-dir file)."""

    @classmethod
    def from_url(cls, url: str | None, **kw: Any) -> BusConfig:
        """Settings from a comma-separated URL list; `nats://user:pass@host` credentials are honoured.

        Environment fallbacks, so a worker started by systemd or a script needs no flags for
        secrets: SOAR_NATS_URL, SOAR_NATS_USER, SOAR_NATS_PASSWORD, SOAR_NATS_TOKEN,
        SOAR_NATS_CREDS, SOAR_NATS_NKEY, SOAR_NATS_CA, SOAR_NATS_CERT, SOAR_NATS_KEY.
        """
        url = url or os.environ.get("SOAR_NATS_URL") or "nats://127.0.0.1:4222"
        urls = [u.strip() for u in url.split(",") if u.strip()]
        for u in urls:
            scheme = urlparse(u).scheme
            if scheme not in ("nats", "tls", "ws", "wss"):
                raise ValueError(f"bad NATS URL {u!r}: expected nats://host:port or tls://host:port")
        env = os.environ.get
        defaults: dict[str, Any] = {
            "user": env("SOAR_NATS_USER"),
            "password": env("SOAR_NATS_PASSWORD"),
            "token": env("SOAR_NATS_TOKEN"),
            "creds": env("SOAR_NATS_CREDS"),
            "nkey_seed": env("SOAR_NATS_NKEY"),
            "tls_ca": env("SOAR_NATS_CA"),
            "tls_cert": env("SOAR_NATS_CERT"),
            "tls_key": env("SOAR_NATS_KEY"),
        }
        defaults.update({k: v for k, v in kw.items() if v is not None})
        return cls(urls=urls, **defaults)

    def ssl_context(self) -> ssl.SSLContext | None:
        wants_tls = self.tls_ca or self.tls_cert or any(u.startswith(("tls://", "wss://")) for u in self.urls)
        if not wants_tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def redacted(self) -> str:
        """The URLs without secrets, for logs and errors."""
        out = []
        for u in self.urls:
            p = urlparse(u)
            out.append(f"{p.scheme}://{p.hostname}:{p.port}" if p.hostname else u)
        return ",".join(out)


def _reconnect_handler(cfg: BusConfig) -> Callable[[list[Server], dict[str, Any]], tuple[Server | None, float]]:
    """Pick the server tried least recently-failing, waiting with backoff on repeated failures.

    A server that just died has one failure; a healthy peer in the cluster has none and is
    tried at once, so failover is immediate while a lone restarting server is polled with
    growing, jittered delays instead of a tight loop.
    """

    def handler(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        best = min(servers, key=lambda s: (s.reconnects, random.random()))
        delay = 0.0 if best.reconnects == 0 else backoff_delay(best.reconnects, cfg.reconnect_base, cfg.reconnect_max)
        return best, delay

    return handler


class Online:
    """Connected or not, as an event to wait on (set and cleared by the client's callbacks).

    Also remembers since when the connection is down, for callers that give up after a while.
    """

    def __init__(self, connected: bool = False) -> None:
        self._event = anyio.Event()
        self.down_since: float | None = None if connected else time.monotonic()
        if connected:
            self._event.set()

    def set(self) -> None:
        self.down_since = None
        if not self._event.is_set():
            self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()
            self.down_since = time.monotonic()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def down_for(self) -> float:
        """Seconds since the connection was lost (0 while connected)."""
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    async def wait(self) -> None:
        await self._event.wait()


class Bus:
    """A connected NATS client plus JetStream; create with `await Bus.connect(cfg)`."""

    def __init__(
        self, nc: Client, cfg: BusConfig, state: dict[str, Any] | None = None, online: Online | None = None
    ) -> None:
        self.nc = nc
        self.cfg = cfg
        self.online = online or Online(connected=nc.is_connected)
        self.js: JetStreamContext = nc.jetstream(timeout=cfg.request_timeout)
        self._state: dict[str, Any] = state if state is not None else {"phase": "connected", "closing": False}
        """Shared with the client's callbacks: once closing, disconnects are not news."""

    @classmethod
    async def connect(
        cls,
        cfg: BusConfig,
        *,
        name: str | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> Bus:
        """Connect (bounded by `cfg.connect_timeout` per server) and keep reconnecting forever.

        The first connect fails fast with a one-line error (wrong URL, refused credentials);
        once connected, outages are ridden out by nats-py's reconnect loop with our backoff.
        `on_event(kind, detail)` hears 'disconnected', 'reconnected', 'error' for logging.
        """

        state: dict[str, Any] = {"phase": "connecting", "closing": False}
        online = Online()
        errors: list[str] = []
        connecting = anyio.CancelScope()

        async def error_cb(e: Exception) -> None:
            # One callback for the client's whole life: while the first connect runs it collects
            # the reasons (and stops at once on refused credentials); afterwards it reports.
            text = f"{type(e).__name__}: {e}".strip()
            if state["phase"] == "connecting":
                errors.append(text)
                if _is_auth_error(text):
                    connecting.cancel()
            elif on_event is not None and not state["closing"]:
                on_event("error", text)

        async def disconnected_cb() -> None:
            online.clear()
            if on_event is not None and state["phase"] == "connected" and not state["closing"]:
                on_event("disconnected", "")

        async def reconnected_cb() -> None:
            online.set()
            if on_event is not None and not state["closing"]:
                on_event("reconnected", str(nc.connected_url.netloc if nc.connected_url else ""))

        kw: dict[str, Any] = {
            "servers": cfg.urls,
            "name": name or cfg.name,
            "connect_timeout": cfg.connect_timeout,
            "reconnect_time_wait": 0.5,
            "reconnect_to_server_handler": _reconnect_handler(cfg),
            "error_cb": error_cb,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            "ping_interval": 10,
            "max_outstanding_pings": 3,
            # Reconnect forever once connected; the first connect is bounded by our own deadline
            # below, so a wrong URL or refused credentials fail in seconds with one line.
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            # Nothing is buffered while disconnected: a publish, pull request or ack then fails at
            # once and our own retries decide. Buffered pull requests would all reach the server on
            # reconnect and hand a worker far more messages than it has slots for.
            "pending_size": 0,
        }
        if cfg.user:
            kw["user"] = cfg.user
            kw["password"] = cfg.password or ""
        if cfg.token:
            kw["token"] = cfg.token
        if cfg.creds:
            kw["user_credentials"] = cfg.creds
        if cfg.nkey_seed:
            kw["nkeys_seed"] = cfg.nkey_seed
        ctx = cfg.ssl_context()
        if ctx is not None:
            kw["tls"] = ctx
            if cfg.tls_hostname:
                kw["tls_hostname"] = cfg.tls_hostname
        nc = Client()
        connected = False
        with connecting:
            connecting.deadline = anyio.current_time() + cfg.connect_timeout * max(1, len(cfg.urls))
            try:
                await nc.connect(**kw)
                connected = True
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}".strip())
        if not connected:
            await _close_quietly(nc)
            auth = [x for x in errors if _is_auth_error(x)]
            if auth:
                raise BusError(f"could not connect to NATS at {cfg.redacted()}: authorization refused ({auth[-1]})")
            why = errors[-1] if errors else "timed out"
            hint = f" (URL from {cfg.source})" if cfg.source else ""
            raise BusError(f"could not connect to NATS at {cfg.redacted()}{hint}: {why}")
        state["phase"] = "connected"
        online.set()
        return cls(nc, cfg, state, online)

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def wait_connected(self) -> None:
        """Until the client is connected (at once when it is): callers stop asking the server
        for work while it is away instead of queueing requests for when it comes back."""
        await self.online.wait()

    def check_size(self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Raise `PayloadTooLarge` if the message would exceed the server's max payload."""
        size = len(payload) + (sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12 if headers else 0)
        if size > self.max_payload:
            raise PayloadTooLarge(subject, size, self.max_payload)

    async def publish(self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Core NATS publish (fire and forget): logs, progress events, benchmarks."""
        self.check_size(subject, payload, headers)
        await self.nc.publish(subject, payload, headers=dict(headers) if headers else None)

    async def js_publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry_for: float = 60.0,
    ) -> PubAck:
        """Publish into a stream and wait for the server's ack, retrying through outages.

        `msg_id` sets the Nats-Msg-Id header: within the stream's duplicate window the server
        stores one copy however often we retry or redeliver, which is what makes actors
        idempotent downstream. Retries (with backoff) cover reconnects and leader elections
        for up to `retry_for` seconds; then `BusError`.
        """
        hdrs = dict(headers) if headers else {}
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        self.check_size(subject, payload, hdrs)

        async def once() -> PubAck:
            try:
                return await self.js.publish(
                    subject, payload, timeout=timeout or self.cfg.request_timeout, headers=hdrs or None
                )
            except nats.errors.MaxPayloadError:
                raise PayloadTooLarge(subject, len(payload), self.max_payload) from None

        return await retry(
            once,
            what=f"publish to {subject!r}",
            retry_if=_transient_publish_error,
            timeout=retry_for,
            base=0.05,
            cap=2.0,
            error=BusError,
        )

    async def close(self, timeout: float = 5.0) -> None:
        """Flush and close; bounded, so a dead server cannot hang shutdown."""
        self._state["closing"] = True
        await _close_quietly(self.nc, timeout)

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _is_auth_error(text: str) -> bool:
    low = text.lower()
    return "authoriz" in low or "authenticat" in low


def _transient_publish_error(e: BaseException) -> bool:
    """Worth publishing again: the connection or the stream leader is away, not a refusal."""
    if isinstance(e, PayloadTooLarge | nats.js.errors.BadRequestError):
        return False
    if isinstance(e, nats.js.errors.APIError):
        return e.code in (None, 503, 500, 408)
    return isinstance(e, nats.errors.Error | nats.js.errors.Error | TimeoutError | OSError)


async def _close_quietly(nc: Client, timeout: float = 5.0) -> None:
    with anyio.move_on_after(timeout):
        try:
            if not nc.is_closed:
                if nc.is_connected:
                    try:
                        await nc.flush(timeout=2)
                    except Exception:
                        pass
                await nc.close()
        except Exception:
            pass
