"""The message bus: NATS connection (`Bus`), embedded server (`NatsServer`), layout (`topology`).

Actors do not use this directly; `soar_async.runtime` does the plumbing. Tools (status, logs,
submit, benchmarks) and tests use it to talk to a running system.
"""

from soar_async.bus.conn import Bus, BusConfig, BusError, PayloadTooLarge
from soar_async.bus.server import NatsServer, ServerError
from soar_async.bus.topology import Topology, provision

__all__ = [
    "Bus",
    "BusConfig",
    "BusError",
    "NatsServer",
    "PayloadTooLarge",
    "ServerError",
    "Topology",
    "provision",
]
