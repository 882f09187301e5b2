"""The actor runtime: an actor module writes `handle(msg)`; everything else lives here.

`Actor` (behaviour base class), `ActorRunner` (pull loop, acks, retries, dead letters,
heartbeats, drain), `serve` (a process hosting actors), roles (`soar worker --role`).
"""

from soar_async.runtime.actor import Actor, ActorContext, ActorRunner, PermanentError, TransientError

__all__ = ["Actor", "ActorContext", "ActorRunner", "PermanentError", "TransientError"]
