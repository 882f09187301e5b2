"""`soar daemon`: the whole learning system in one process, or the conductor joining one.

Embedded (no NATS URL): a server with its store in the run directory and every actor here,
executors, an LLM worker, the search actors, the trainer and the conductor. Joining a system
(`--nats`): only the conductor starts here; the other roles are whoever is attached. Either
way the conductor's state is in the system's key-value store, so the same command on the
same run directory continues where a killed daemon stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from soar_async.arc import Task
from soar_async.bus.conn import Bus, BusConfig
from soar_async.config import Config
from soar_async.runtime.roles import SEARCH_ACTORS
from soar_async.runtime.system import ActorSpec, bring_up


async def run_daemon(
    config: Config,
    *,
    run_dir: Path,
    bus: BusConfig | None = None,
    executors: int | None = None,
    on_state: Callable[[object], None] | None = None,
    handle_signals: bool = True,
) -> object | None:
    """Run the conductor's generation loop until it is done (`daemon.generations`) or the
    process is stopped; the conductor's last state (None if it never saved one)."""
    from actors.conductor import load_state

    actors = [ActorSpec("conductor", 1)]
    if bus is None:
        from soar_async.sandbox import ensure_built

        await anyio.to_thread.run_sync(ensure_built)
        actors = [
            ActorSpec("executor", executors or config.sandbox.workers or None),
            ActorSpec("llm", None),
            ActorSpec("trainer", 1),
            *(ActorSpec(role, n) for role, n in SEARCH_ACTORS),
            *actors,
        ]
    async with bring_up(
        config, run_dir=run_dir, bus=bus, actors=actors, name="daemon", handle_signals=handle_signals
    ) as system:
        conductor = next(r for r in system.runners if r.actor_cls.role == "conductor")

        async def report() -> None:
            while True:
                await anyio.sleep(2.0)
                if on_state is not None:
                    state = await load_state(system.bus)
                    if state is not None:
                        on_state(state)

        async with anyio.create_task_group() as tg:
            tg.start_soon(report)
            await conductor.finished.wait()
            tg.cancel_scope.cancel()
        return await load_state(system.bus)


async def submit_tasks(bus: Bus, tasks: list[Task], *, source: str = "") -> int:
    """Hand tasks to a running daemon (continual mode): one durable `TaskSubmitted` each, kept
    in the event stream, so a conductor that is down right now reads them when it starts.
    Submitting the same task again changes nothing (dedup by its content)."""
    from soar_async.messages import TaskSubmitted

    for t in tasks:
        msg = TaskSubmitted(task_id=t.id, task=t.to_json(), source=source)
        await bus.js_publish(msg.subject(), msg.encode(), msg_id=msg.dedup_id())
    return len(tasks)
