"""The grid's registry: twins, farms, nodes and contracts in replicated JetStream KV.

`RegistryService` (run by `zos registry serve --nats URL --key-file F`) checks signed
transactions, answers queries and nats-server's auth callout; `RegistryClient` talks to
it and checks that every answer is signed by the registry key it pinned. See `tx` for
the wire format, `store` for the buckets, `service` for the checks every transaction
passes, `objects` for the rules of each object (one module each), `models` for the
entities, `signing` for what the registry signs, `callout` and `roles` for who may do
what on the bus.
"""

from zos.registry.client import RegistryClient
from zos.registry.models import *  # noqa: F403
from zos.registry.models import __all__ as _model_names
from zos.registry.service import RegistryService
from zos.registry.signing import RegistryKey
from zos.registry.tx import Transaction

__all__ = [
    "RegistryClient",
    "RegistryKey",
    "RegistryService",
    "Transaction",
    *_model_names,
]
