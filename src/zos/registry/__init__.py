"""The grid's registry: twins, farms, nodes and contracts in replicated JetStream KV.

`RegistryService` (run by `zos registry serve --nats URL`) checks signed transactions
and answers queries; `RegistryClient` talks to it. See `tx` for the wire format,
`store` for the buckets, `service` for the rules, `models` for the entities.
"""

from zos.registry.client import RegistryClient
from zos.registry.models import (
    DOWN_AFTER,
    HEARTBEAT_PERIOD,
    MISSED_HEARTBEATS,
    Capacity,
    ContractEvent,
    Farm,
    JoinToken,
    Location,
    NameContract,
    Node,
    NodeContract,
    PublicConfig,
    Twin,
)
from zos.registry.service import RegistryService
from zos.registry.tx import Transaction

__all__ = [
    "DOWN_AFTER",
    "HEARTBEAT_PERIOD",
    "MISSED_HEARTBEATS",
    "Capacity",
    "ContractEvent",
    "Farm",
    "JoinToken",
    "Location",
    "NameContract",
    "Node",
    "NodeContract",
    "PublicConfig",
    "RegistryClient",
    "RegistryService",
    "Transaction",
    "Twin",
]
