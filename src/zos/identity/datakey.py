"""A deployment's data key in transit: sealed to the node that uses it, or to a twin.

The owner's client makes one data key per deployment (`new_data_key`: 32 random bytes,
what `zos.primitives.fscrypt` takes). It never travels inside the deployment (whose wire
format and hash stay ThreeFold's) but in a message of its own:

- **to a node** (`seal_for_node` / `open_for_node`): the JSON text
  `{"v": "zos-data-key-1", "node": <node twin>, "contract_id": C, "twin": <sender>,
  "nonce": <32 hex>, "timestamp": <unix ms>, "key": <base64>}`, ed25519-signed by the
  sender (over `v` bytes + the text) and sealed to the node's X25519 key. So a key is
  bound to one node, one deployment, one sender and one moment: the node refuses it
  sealed to another node, signed by another twin, for another contract, too old, or seen
  before (`nonce`).
- **to a twin** (`seal_copy` / `open_copy`): `v` bytes + contract id (8 bytes, big
  endian) + the key, sealed to the twin. The node keeps one such copy per twin who may
  unlock (the owner, each teammate) and cannot open any of them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from dataclasses import dataclass

from zos.identity.keys import Identity, verify_ed25519
from zos.identity.sealing import SealError, open_sealed, seal

VERSION = "zos-data-key-1"
KEY_SIZE = 32
MAX_AGE_MS = 300_000  # a key message older than this is refused (as a replay could be)
MAX_SKEW_MS = 30_000  # ... and one this far in the future
MAX_SEALED = 1024  # bytes of a sealed message or copy, base64 decoded


class DataKeyError(ValueError):
    """A refused key message or copy; the message names the field or rule."""


def new_data_key() -> bytearray:
    """A fresh data key (a bytearray the caller may zero when done)."""
    return bytearray(secrets.token_bytes(KEY_SIZE))


def b64decode(text: object, field: str) -> bytes:
    if not isinstance(text, str) or len(text) > 2 * MAX_SEALED:
        raise DataKeyError(f"{field}: base64 text of at most {MAX_SEALED} bytes expected")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataKeyError(f"{field}: not base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class KeyMessage:
    """A key message the node opened and whose signature it checked."""

    node: int
    contract_id: int
    twin: int
    nonce: str
    timestamp: int
    key: bytes


def seal_for_node(
    sender: Identity,
    sender_twin: int,
    node_twin: int,
    node_public: bytes,
    contract_id: int,
    key: bytes | bytearray,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """The key message for `node_twin` (ed25519 key `node_public`), base64."""
    text = json.dumps(
        {
            "v": VERSION,
            "node": node_twin,
            "contract_id": contract_id,
            "twin": sender_twin,
            "nonce": nonce or os.urandom(16).hex(),
            "timestamp": int(time.time() * 1000) if timestamp is None else timestamp,
            "key": b64encode(bytes(key)),
        },
        separators=(",", ":"),
    ).encode()
    signature = sender.sign(VERSION.encode() + text)
    body = json.dumps({"message": text.decode(), "signature": b64encode(signature)}).encode()
    return b64encode(seal(node_public, body))


def open_for_node(node: Identity, sealed: str, sender_key: bytes) -> KeyMessage:
    """Open a key message sealed to `node` and check it is signed by `sender_key`.

    Checks only what the message says about itself; the caller compares node, twin,
    contract, timestamp and nonce with what it expects.
    """
    raw = b64decode(sealed, "key")
    try:
        body = json.loads(open_sealed(node, raw))
        text = body["message"].encode()
        signature = base64.b64decode(body["signature"], validate=True)
        fields = json.loads(text)
    except SealError:
        raise DataKeyError(
            "key: cannot be opened by this node (sealed to another node's key, or altered)"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise DataKeyError("key: not a key message") from None
    if not verify_ed25519(sender_key, VERSION.encode() + text, signature):
        raise DataKeyError("key: not signed by the sending twin")
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise DataKeyError(f"key: not a {VERSION} message")
    ints = ("node", "contract_id", "twin", "timestamp")
    for name in ints:
        value = fields.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataKeyError(f"key: {name}: a non-negative integer expected")
    nonce = fields.get("nonce")
    if not isinstance(nonce, str) or len(nonce) != 32:
        raise DataKeyError("key: nonce: 32 hex characters expected")
    key = b64decode(fields.get("key"), "key.key")
    if len(key) != KEY_SIZE:
        raise DataKeyError(f"key: the data key must be {KEY_SIZE} bytes, got {len(key)}")
    return KeyMessage(
        node=fields["node"],
        contract_id=fields["contract_id"],
        twin=fields["twin"],
        nonce=nonce,
        timestamp=fields["timestamp"],
        key=key,
    )


def check_fresh(message: KeyMessage, now_ms: int | None = None) -> None:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if message.timestamp < now - MAX_AGE_MS:
        raise DataKeyError(
            f"key: timestamp: older than {MAX_AGE_MS // 1000} s (a replayed key message?)"
        )
    if message.timestamp > now + MAX_SKEW_MS:
        raise DataKeyError(f"key: timestamp: more than {MAX_SKEW_MS // 1000} s in the future")


def _copy_header(contract_id: int) -> bytes:
    return VERSION.encode() + contract_id.to_bytes(8, "big")


def seal_copy(recipient_public: bytes, contract_id: int, key: bytes | bytearray) -> str:
    """The key of deployment `contract_id`, sealed to a twin (what the node keeps), base64."""
    return b64encode(seal(recipient_public, _copy_header(contract_id) + bytes(key)))


def open_copy(identity: Identity, contract_id: int, sealed: str) -> bytearray:
    """Open a copy sealed to `identity`; refuses one made for another deployment."""
    try:
        plain = open_sealed(identity, b64decode(sealed, "copy"))
    except SealError:
        raise DataKeyError("copy: cannot be opened with this key (not sealed to you)") from None
    header = _copy_header(contract_id)
    if not plain.startswith(header) or len(plain) != len(header) + KEY_SIZE:
        raise DataKeyError(f"copy: not the data key of deployment {contract_id}")
    return bytearray(plain[len(header) :])
