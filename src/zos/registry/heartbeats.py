"""Node heartbeats as signed statuses in a stream that keeps each node's last one.

A heartbeat is no registry transaction: each node appends its status, signed by its
own twin key, to its own subject `zos.heartbeat.<node id>` (nats-server lets only that
node publish there: `roles`). The stream ZOS_HEARTBEATS keeps the last message per
subject (max_msgs_per_subject 1), replicated like the registry's buckets, so a beat
costs JetStream one append and the registry nothing until it reads it: the rate scales
with the NATS cluster, not with a registry process.

Nodes send theirs with `RegistryClient.heartbeat`. A status is a blob in the registry's
signed format (`signing`: signature, dot, body), here under the node's twin key, with
context `heartbeat/<node id>`; the body is JSON `{"node_id", "at" (unix milliseconds),
"used" (Capacity)}`. A reader (`index`) takes it
only when the signature verifies with the key of the twin the node record names, its
node id is its subject's, and `at` is at most ALLOWED_SKEW ahead of the time the stream
stored it; a node's up/down and used capacity come from nothing else.
"""

from __future__ import annotations

import json
import time

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zos.bus.envelope import ALLOWED_SKEW
from zos.bus.errors import BusError, describe_error
from zos.bus.subjects import NODE_STATUS_PREFIX
from zos.registry.models import Capacity, Id
from zos.registry.signing import SIGNATURE_CHARS, RegistryKey, RegistrySigner

STREAM = "ZOS_HEARTBEATS"
MAX_STATUS = 1024  # bytes: a status is about 250
# What the stream keeps: each node's last status, of at most MAX_STATUS bytes.
LAST_PER_NODE = {
    "max_msgs_per_subject": 1,
    "max_msg_size": MAX_STATUS,
    "discard": DiscardPolicy.OLD,
}


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: Id
    at: int = Field(ge=0, lt=1 << 53)  # unix milliseconds, by the node's clock
    used: Capacity = Field(default_factory=Capacity)


def context(node_id: int) -> str:
    return f"heartbeat/{node_id}"


def sign(signer: RegistrySigner, node_id: int, used: Capacity, at_ms: int | None = None) -> bytes:
    """A node's signed status (`signer` holds the node's twin key)."""
    at = int(time.time() * 1000) if at_ms is None else at_ms
    body = Heartbeat(node_id=node_id, at=at, used=used).model_dump_json().encode()
    return signer.sign(context(node_id), body)


def unverified(blob: bytes) -> Heartbeat | None:
    """The status a blob claims, signature unchecked (to filter on before checking it)."""
    if len(blob) > MAX_STATUS or blob[SIGNATURE_CHARS : SIGNATURE_CHARS + 1] != b".":
        return None
    try:
        return Heartbeat.model_validate_json(blob[SIGNATURE_CHARS + 1 :])
    except ValidationError:
        return None


def open_status(node_key: RegistryKey, node_id: int, blob: bytes, stored_at: float) -> Heartbeat:
    """The status of `node_id` in `blob`, once checked: signed by `node_key` for this
    node, not dated ahead of `stored_at` (the stream's time, unix seconds) by more
    than ALLOWED_SKEW. BusError (bad_signature, invalid, expired) otherwise."""
    if len(blob) > MAX_STATUS:
        raise BusError("too_large", f"heartbeat of node {node_id} is over {MAX_STATUS} bytes")
    body = node_key.open(context(node_id), blob, f"heartbeat of node {node_id}")
    try:
        status = Heartbeat.model_validate_json(body)
    except ValidationError as e:
        raise BusError("invalid", f"heartbeat of node {node_id}: {describe_error(e)}") from None
    if status.node_id != node_id:
        raise BusError("invalid", f"node_id: {status.node_id} in node {node_id}'s heartbeat")
    if status.at / 1000 > stored_at + ALLOWED_SKEW:
        raise BusError("expired", f"heartbeat of node {node_id} is dated in the future")
    return status


async def setup_stream(js: JetStreamContext, replicas: int) -> None:
    """Create the stream if missing (idempotent; any service copy may do it)."""
    config = StreamConfig(name=STREAM, subjects=[f"{NODE_STATUS_PREFIX}*"], **LAST_PER_NODE)
    config.num_replicas, config.storage, config.allow_direct = replicas, StorageType.FILE, True
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(STREAM)


def stored(ack: bytes, node_id: int) -> dict[str, int]:
    """What JetStream answered to a status: its sequence, or why it was not stored."""
    try:
        answer = json.loads(ack)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("seq"), int):
        error = answer.get("error") if isinstance(answer, dict) else None
        why = error or ack[:200]
        raise BusError("unavailable", f"heartbeat of node {node_id} not stored: {why!r}")
    return {"node_id": node_id, "seq": answer["seq"]}
