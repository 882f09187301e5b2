"""Reading the worker registry (the `soar_workers` KV bucket) without creating consumers.

`KeyValue.keys()` in nats-py opens a watcher (an ephemeral consumer) per call; polled every
second by `soar status` or a test, those pile up to the server's consumer limit. The stream
behind the bucket already knows its subjects, so we list keys from stream info and fetch each
with a direct get.
"""

from __future__ import annotations

import nats.js.errors

from soar_async.bus.conn import Bus
from soar_async.bus.topology import KV_WORKERS
from soar_async.messages import DecodeError, Heartbeat


async def kv_keys(bus: Bus, bucket: str) -> list[str]:
    prefix = f"$KV.{bucket}."
    try:
        info = await bus.js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    except nats.js.errors.NotFoundError:
        return []
    return sorted(s[len(prefix) :] for s in (info.state.subjects or {}))


async def live_workers(bus: Bus) -> list[Heartbeat]:
    """Latest heartbeat of every worker whose registry entry has not expired or been deleted."""
    kv = await bus.js.key_value(KV_WORKERS)
    out = []
    for key in await kv_keys(bus, KV_WORKERS):
        try:
            entry = await kv.get(key)
            if not entry.value:
                continue
            out.append(Heartbeat.decode(entry.value))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, DecodeError):
            continue
    return sorted(out, key=lambda h: (h.role, h.worker_id))
