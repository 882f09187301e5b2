"""Small actors for testing the runtime itself (not the sandbox): fast and scriptable.

`Echo` pulls from the exec queue; the request's `code` scripts its behaviour:
"sleep:S" waits S seconds, "fail" always raises, "flaky:N" fails its first N deliveries
(tracked per program id in this process), "permanent" raises PermanentError, "ok" answers
at once, "exit" kills the worker process if ECHO_CRASH=1, anything else takes 0.15 s.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import anyio

from soar_async.bus.topology import EVALUATED_ALL, EVT_EVALUATED, EVT_MODEL_UPDATED
from soar_async.messages import Evaluated, ExecRequest, ModelUpdated
from soar_async.runtime.actor import Actor, PermanentError
from soar_async.runtime.inputs import Broadcast, Events, Input, WorkQueue

_seen: dict[str, int] = {}


class Echo(Actor[ExecRequest]):
    role: ClassVar[str] = "echo"
    inputs: ClassVar[tuple[Input, ...]] = (WorkQueue("exec", ExecRequest),)
    default_concurrency: ClassVar[int] = 2

    async def handle(self, msg: ExecRequest) -> Any:
        code = msg.code
        if code.startswith("sleep:"):
            await anyio.sleep(float(code.split(":")[1]))
        elif code == "fail":
            raise RuntimeError("scripted failure")
        elif code == "permanent":
            raise PermanentError("scripted permanent failure")
        elif code == "exit" and os.environ.get("ECHO_CRASH") == "1":
            os._exit(9)  # the worker dies holding the message, as under kill -9
        elif code.startswith("flaky:"):
            n = _seen[msg.program_id] = _seen.get(msg.program_id, 0) + 1
            if n <= int(code.split(":")[1]):
                raise RuntimeError(f"flaky failure {n}")
        elif code != "ok":
            await anyio.sleep(0.15)  # anything else (e.g. a real program): pretend to run it
        return Evaluated(
            program_id=msg.program_id,
            task_id=msg.task_id,
            code=msg.code,
            outputs=list(msg.inputs or []),
            errors=[None] * len(msg.inputs or []),
            worker_id=self.ctx.worker_id,
        )


SEEN: list[tuple[str, str]] = []
"""(worker id, program id) of every event a Recorder or ModelWatcher handled, in order."""


class Recorder(Actor[Evaluated]):
    """Reads every Evaluated event from a durable position; a program id starting with
    "poison" always fails, "slow" takes 50 ms."""

    role: ClassVar[str] = "recorder"
    inputs: ClassVar[tuple[Input, ...]] = (
        Events((EVALUATED_ALL,), Evaluated, shard_prefix=EVT_EVALUATED, ack_wait=5.0, max_deliver=2),
    )

    async def handle(self, msg: Evaluated) -> None:
        if msg.program_id.startswith("poison"):
            raise RuntimeError("scripted failure on an event")
        if msg.program_id.startswith("slow"):
            await anyio.sleep(0.05)
        SEEN.append((self.ctx.worker_id, msg.program_id))


class ModelWatcher(Actor[ModelUpdated]):
    """Every worker sees every model version (a broadcast), the latest one first."""

    role: ClassVar[str] = "watcher"
    inputs: ClassVar[tuple[Input, ...]] = (Broadcast((EVT_MODEL_UPDATED,), ModelUpdated),)

    async def handle(self, msg: ModelUpdated) -> None:
        SEEN.append((self.ctx.worker_id, msg.version))
