"""Signing writes to a hub: the client half of the hub's write protocol.

A twin signs method, path, time, a nonce and the body's hash. Headers: X-Zos-Twin (twin
id), X-Zos-Timestamp (unix seconds), X-Zos-Nonce (random hex), X-Zos-Content-Hash (hex
BLAKE2b-256 of the body), X-Zos-Signature (hex ed25519 signature over
`signing_message`). The hub checks them (`zos.hub.auth`); the http store and the hub
client sign with them, so the flist package needs nothing of the hub's.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from zos.identity import Identity

HEADER_TWIN = "X-Zos-Twin"
HEADER_TIME = "X-Zos-Timestamp"
HEADER_NONCE = "X-Zos-Nonce"
HEADER_HASH = "X-Zos-Content-Hash"
HEADER_SIG = "X-Zos-Signature"
HEADERS = (HEADER_TWIN, HEADER_TIME, HEADER_NONCE, HEADER_HASH, HEADER_SIG)


def body_digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=32).hexdigest()


def signing_message(method: str, path: str, timestamp: int, nonce: str, digest: str) -> bytes:
    """What is signed; `digest` is the hex BLAKE2b-256 of the request body."""
    return f"zos-hub-v1\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()


def sign_headers(
    identity: Identity, twin_id: int, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    nonce = os.urandom(16).hex()
    digest = body_digest(body)
    signature = identity.sign(signing_message(method, path, timestamp, nonce, digest))
    return {
        HEADER_TWIN: str(twin_id),
        HEADER_TIME: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_HASH: digest,
        HEADER_SIG: signature.hex(),
    }


@dataclass(frozen=True)
class HubSigner:
    """Who signs writes to a hub: a registered twin and its key."""

    identity: Identity
    twin_id: int

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_headers(self.identity, self.twin_id, method, path, body)
