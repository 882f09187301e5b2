"""Dead letters for messages whose worker died on their last allowed delivery.

The runner dead-letters a message itself when its handler fails on the last delivery. But a
worker killed while holding the last delivery never gets to: the server just stops
delivering, and the message would sit in the work queue forever, invisible. The server
announces this with a MAX_DELIVERIES advisory; every runner of the role listens, copies the
message to `soar.dlq.<role>` (with a dedup id, so N listeners write one copy) and deletes it
from the queue.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import nats.errors
import nats.js.errors

from soar_async.bus.conn import Bus, PayloadTooLarge
from soar_async.bus.topology import dead_letter_subject
from soar_async.logs import get_logger

if TYPE_CHECKING:
    from soar_async.runtime.inputs import Feed


def advisory_subject(stream: str, durable: str) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"


MSG_ID_HEADER = "Soar-Msg-Id"
"""Dead letters carry the original Nats-Msg-Id (e.g. `exec:<program id>`), so whoever waits
for a result can tell that this request will never produce one."""


async def publish_dead_letter(
    bus: Bus,
    role: str,
    data: bytes,
    *,
    source_subject: str,
    seq: str,
    reason: str,
    deliveries: int,
    worker: str = "",
    msg_id: str | None = None,
) -> None:
    """Copy a message's original bytes to `soar.dlq.<role>` with why, where from and which try.

    Deduplicated by stream sequence, so two workers dead-lettering the same message store it
    once. A payload too large to republish keeps its first KiB and says so.
    """
    headers = {
        "Soar-Reason": " ".join(reason.split())[:1000].encode("ascii", "replace").decode(),
        "Soar-Source-Subject": source_subject,
        "Soar-Actor": role,
        "Soar-Worker": worker,
        "Soar-Stream-Seq": seq,
        "Soar-Deliveries": str(deliveries),
    }
    if msg_id:
        headers[MSG_ID_HEADER] = msg_id
    # Per role: an event dead-lettered by two roles (the archive and a proposer) is two letters.
    dedup = f"dlq:{role}:{source_subject}:{seq}" if seq else None
    subject = dead_letter_subject(role)
    try:
        await bus.js_publish(subject, data, msg_id=dedup, headers=headers, retry_for=30)
    except PayloadTooLarge:
        headers["Soar-Truncated"] = str(len(data))
        await bus.js_publish(subject, data[:1024], msg_id=dedup, headers=headers, retry_for=30)


async def dead_letter_by_seq(bus: Bus, feed: Feed, role: str, seq: int, reason: str, deliveries: int) -> bool:
    """Copy stream message `seq` to the dead letter subject; remove it from a work queue.

    Returns False if the message is already gone (another worker did it, or it was acked).
    """
    try:
        with anyio.fail_after(10):
            raw = await bus.js.get_msg(feed.stream, seq)
    except (nats.js.errors.NotFoundError, nats.errors.TimeoutError, TimeoutError):
        return False
    await publish_dead_letter(
        bus,
        role,
        bytes(raw.data or b""),
        source_subject=raw.subject or feed.subject,
        seq=str(seq),
        reason=reason,
        deliveries=deliveries,
        msg_id=(raw.headers or {}).get("Nats-Msg-Id"),
    )
    if feed.remove_dead:
        try:
            with anyio.fail_after(10):
                await bus.js.delete_msg(feed.stream, seq)
        except (nats.js.errors.NotFoundError, nats.errors.TimeoutError, TimeoutError):
            pass
    return True


async def watch_max_deliveries(
    bus: Bus,
    feed: Feed,
    role: str,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled: dead-letter every message the server gives up on for this consumer.

    For an events consumer this copies the event (others still read it) and the server
    stops offering it to this consumer; a work-queue job is also removed from its queue.
    """
    log = get_logger(actor=role)
    send, receive = anyio.create_memory_object_stream[bytes](1000)

    async def on_advisory(msg: Any) -> None:
        try:
            send.send_nowait(bytes(msg.data))
        except anyio.WouldBlock:
            pass

    sub = await bus.nc.subscribe(advisory_subject(feed.stream, feed.consumer), cb=on_advisory)
    task_status.started()
    try:
        async with receive:
            async for data in receive:
                try:
                    adv = json.loads(data)
                    seq = int(adv["stream_seq"])
                    deliveries = int(adv.get("deliveries", 0))
                except (ValueError, KeyError, TypeError):
                    continue
                reason = (
                    f"max deliveries ({deliveries}) reached without an ack: the workers holding it died or "
                    "stopped answering"
                )
                try:
                    if await dead_letter_by_seq(bus, feed, role, seq, reason, deliveries):
                        log.error("dead letter", reason=reason, stream_seq=seq, subject=feed.subject)
                except Exception as e:
                    log.warning("could not dead-letter an abandoned message", stream_seq=seq, error=repr(e))
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await sub.unsubscribe()
            except Exception:
                pass
