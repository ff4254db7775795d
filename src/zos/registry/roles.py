"""What nats-server lets each key do, by the key's role in the registry.

The auth callout (`zos.registry.callout`) writes these permissions into the user JWT it
returns for every connection; nats-server enforces them (subjects: `zos.bus.subjects`):

    role     publish                                     subscribe
    unknown  zos.registry.register.<key>                 _INBOX.<key>.>
    twin     + zos.twin.*, zos.registry.tx,              + zos.registry.keys
               zos.registry.query
    node     + zos.heartbeat.<node id> (its status)      + zos.twin.<twin id>,
             + replies to the requests it receives         zos.registry.events.<node id>

The registry service itself is a user of nats-server's own configuration with every
permission (it alone touches `$JS.API.>`, `$KV.>` and the registry's stream). Anything not
listed is refused: other keys' inboxes and subjects, `>`, `$SYS.>`, JetStream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from zos.bus.envelope import MAX_TTL
from zos.bus.subjects import (
    KEY_EVENTS,
    REGISTRY_QUERY,
    REGISTRY_TX,
    TWIN_PREFIX,
    inbox_prefix,
    node_events_subject,
    node_status_subject,
    register_subject,
    twin_subject,
)

# A node may answer a request once, for as long as an envelope may live.
RESPONSE_TTL_NS = int(MAX_TTL * 1e9)


@dataclass(frozen=True)
class Role:
    kind: Literal["unknown", "twin", "node"]
    public_key: bytes
    twin_id: int = 0
    node_id: int = 0

    def describe(self) -> str:
        if self.kind == "node":
            return f"node {self.node_id} (twin {self.twin_id})"
        if self.kind == "twin":
            return f"twin {self.twin_id}"
        return f"unregistered key {self.public_key.hex()[:16]}..."

    def permissions(self) -> dict[str, Any]:
        """The `pub`, `sub` (and for nodes `resp`) of a NATS user JWT."""
        pub = [register_subject(self.public_key)]
        sub = [f"{inbox_prefix(self.public_key)}.>"]
        if self.kind in ("twin", "node"):
            pub += [f"{TWIN_PREFIX}*", REGISTRY_TX, REGISTRY_QUERY]
            sub += [KEY_EVENTS]
        perms: dict[str, Any] = {"pub": {"allow": pub}, "sub": {"allow": sub}}
        if self.kind == "node":
            pub.append(node_status_subject(self.node_id))
            sub += [twin_subject(self.twin_id), node_events_subject(self.node_id)]
            perms["resp"] = {"max": 1, "ttl": RESPONSE_TTL_NS}
        return perms
