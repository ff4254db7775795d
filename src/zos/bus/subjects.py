"""Every NATS subject zos uses, in one place: nats-server's permissions are built from them.

Keys appear in subjects as lowercase hex of the ed25519 public key.

    zos.twin.<twin id>                 requests to a twin (a node serves its own)
    _INBOX.<key hex>.>                 a connection's replies (its own inbox prefix)
    zos.registry.register.<key hex>    registration of that key (open to any key)
    zos.registry.tx                    signed transactions (registered twins)
    zos.registry.query                 queries (registered twins)
    zos.heartbeat.<node id>            that node's signed status, kept in a stream (that node only)
    zos.registry.events.<node id>      contract events pushed to that node (registry only)
    zos.registry.keys                  twin key changes, pushed to everyone (registry only)
    $SYS.REQ.USER.AUTH                 nats-server's auth callout (registry only)
"""

from __future__ import annotations

TWIN_PREFIX = "zos.twin."
INBOX_ROOT = "_INBOX"
REGISTRY_TX = "zos.registry.tx"
REGISTRY_QUERY = "zos.registry.query"
REGISTER_PREFIX = "zos.registry.register."
NODE_STATUS_PREFIX = "zos.heartbeat."
EVENTS_PREFIX = "zos.registry.events."
KEY_EVENTS = "zos.registry.keys"
AUTH_CALLOUT = "$SYS.REQ.USER.AUTH"
REGISTRY_QUEUE = "zos-registry"


def twin_subject(twin_id: int) -> str:
    return f"{TWIN_PREFIX}{twin_id}"


def inbox_prefix(public_key: bytes) -> str:
    return f"{INBOX_ROOT}.{public_key.hex()}"


def register_subject(public_key: bytes) -> str:
    return f"{REGISTER_PREFIX}{public_key.hex()}"


def node_status_subject(node_id: int) -> str:
    return f"{NODE_STATUS_PREFIX}{node_id}"


def node_events_subject(node_id: int) -> str:
    return f"{EVENTS_PREFIX}{node_id}"


def last_token(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]
