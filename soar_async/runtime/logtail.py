"""Reading the system's structured logs back from the bus (the LOGS stream), as `soar logs` does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from soar_async.bus.conn import Bus


async def stream_logs(
    bus: Bus,
    *,
    follow: bool,
    actor: str | None,
    task: str | None,
    level: str,
    last: int,
    emit: Any,
    idle_exit: float | None = None,
    on_following: Callable[[], None] | None = None,
) -> int:
    """Hand matching events of the LOGS stream to `emit` as dicts: the last `last`, then new ones with
    `follow` (until cancelled, or `idle_exit` seconds without a message). Returns how many were emitted.
    `on_following()` runs once the history is shown and new events are being followed."""
    import nats.errors
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from soar_async.bus.topology import LOG, STREAM_LOGS, log_subject
    from soar_async.logs import LEVELS
    from soar_async.messages import DecodeError, LogEvent

    min_level = LEVELS.get(level.lower(), 20)
    subject = log_subject(actor) if actor else f"{LOG}.>"
    shown = 0
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
    live = False

    def go_live() -> bool:
        """Show the last `last` matching past events; then go on only when following."""
        nonlocal live, shown, history
        live = True
        for past in history[-last:] if last else []:
            emit(past)
            shown += 1
        history = []
        if follow and on_following is not None:
            on_following()
        return follow

    try:
        if last_seq == 0 and not go_live():
            return shown
        idle_since = anyio.current_time()
        while True:
            try:
                m = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                if not live and not go_live():
                    break
                if idle_exit is not None and anyio.current_time() - idle_since > idle_exit:
                    break
                continue
            idle_since = anyio.current_time()
            try:
                ev = LogEvent.decode(m.data)
            except DecodeError:
                continue
            if LEVELS.get(ev.level, 20) >= min_level and not (task and ev.task_id != task):
                d = ev.to_dict()
                d.pop("t", None)
                d.pop("v", None)
                if live:
                    emit(d)
                    shown += 1
                else:
                    history.append(d)
            if not live and m.metadata.sequence.stream >= last_seq and not go_live():
                break
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await sub.unsubscribe()
    return shown
