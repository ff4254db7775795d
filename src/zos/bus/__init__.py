"""The grid's message bus: signed, sealed envelopes between twins over NATS.

Nodes and users never talk directly: each twin serves commands on its own NATS subject
(`zos.twin.<id>`) and every request and response is an `Envelope` signed by its sender
and, by default, sealed between sender and receiver. Every connection proves its key to
nats-server (`connection`), which lets each key use only the subjects of its role
(`subjects`). See
`envelope` for the format and the checks, `keys` for a twin's keys and the box key it
shares with each peer, `client` for request/response, `router` for handlers, `resolver`
for twin keys.
"""

from zos.bus.client import BusClient
from zos.bus.connection import Connection, connect, default_nats_url
from zos.bus.envelope import (
    ALLOWED_SKEW,
    MAX_ENVELOPE,
    MAX_PAYLOAD,
    MAX_TTL,
    Envelope,
    ReplayCache,
)
from zos.bus.errors import BusError
from zos.bus.keys import Keys
from zos.bus.resolver import CachedResolver, KeyResolver, StaticResolver
from zos.bus.router import Handler, Request, Router
from zos.bus.subjects import twin_subject

__all__ = [
    "ALLOWED_SKEW",
    "MAX_ENVELOPE",
    "MAX_PAYLOAD",
    "MAX_TTL",
    "BusClient",
    "BusError",
    "CachedResolver",
    "Connection",
    "Envelope",
    "Handler",
    "KeyResolver",
    "Keys",
    "ReplayCache",
    "Request",
    "Router",
    "StaticResolver",
    "connect",
    "default_nats_url",
    "twin_subject",
]
