"""What the registry says carries its signature: answers, events, KV values, stream messages.

A signed blob is `<signature>.<body>`: the ed25519 signature of the registry's key in
base64url (86 characters), a dot, then the body's bytes as they are. The signature covers
`zos-registry-1`, a context and the SHA-256 of the body; the context binds the blob to
its place, so it cannot be moved to another request, key or subject:

    answer/<nonce>        the answer to the request that carried this nonce
    kv/<bucket>/<key>     a value in one of the registry's KV buckets
    stream/<subject>      a message the registry appended to its stream
    event/<subject>       an event the registry pushed on a subject

Nodes, clients and the hub check blobs against the registry key they pinned
(`RegistryKey`); a blob that is unsigned or signed by another key is refused with
`bad_signature` and logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging

import nacl.exceptions
import nacl.signing

from zos.bus.errors import BusError
from zos.identity import Identity

log = logging.getLogger(__name__)

SIGNATURE_CHARS = 86  # base64url of 64 bytes, unpadded


def _message(context: str, body: bytes) -> bytes:
    return (
        b"zos-registry-1\n" + context.encode() + b"\n" + hashlib.sha256(body).hexdigest().encode()
    )


class RegistrySigner:
    """The registry service's signing key."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.public_key = identity.public_key

    def sign_raw(self, message: bytes) -> bytes:
        return self.identity.sign(message)

    def sign(self, context: str, body: bytes) -> bytes:
        signature = self.sign_raw(_message(context, body))
        return base64.urlsafe_b64encode(signature).rstrip(b"=") + b"." + body


class RegistryKey:
    """The registry's public key as pinned by a node, client or hub."""

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise ValueError(f"registry key: must be 32 bytes, got {len(public_key)}")
        self.public_key = public_key
        self._verify = nacl.signing.VerifyKey(public_key)

    @property
    def hex(self) -> str:
        return self.public_key.hex()

    def open(self, context: str, blob: bytes, what: str = "registry answer") -> bytes:
        """The body of a blob the registry signed for `context`; BusError and a log line
        saying what was refused otherwise."""
        if blob[SIGNATURE_CHARS : SIGNATURE_CHARS + 1] == b".":
            body = blob[SIGNATURE_CHARS + 1 :]
            try:
                signature = base64.urlsafe_b64decode(blob[:SIGNATURE_CHARS] + b"==")
                self._verify.verify(_message(context, body), signature)
                return body
            except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
                reason = "not signed by the pinned registry key"
        else:
            reason = "unsigned"
        log.warning("refused %s (%s): %s %s", what, context, reason, self.hex[:16] + "...")
        raise BusError("bad_signature", f"{what} is {reason} ({self.hex[:16]}...)")

    def verify_raw(self, message: bytes, signature: bytes) -> bool:
        try:
            self._verify.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True
