"""Signed hub write requests: a twin signs method, path, time, a nonce and the body's hash.

Headers: X-Zos-Twin (twin id), X-Zos-Timestamp (unix seconds), X-Zos-Nonce (random hex),
X-Zos-Signature (hex ed25519 signature over `signing_message`). The hub looks the twin's
key up, refuses stale times and replayed nonces, so a captured request cannot be reused.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping

from zos.identity import Identity, verify_ed25519

HEADER_TWIN = "X-Zos-Twin"
HEADER_TIME = "X-Zos-Timestamp"
HEADER_NONCE = "X-Zos-Nonce"
HEADER_SIG = "X-Zos-Signature"
MAX_SKEW = 300  # seconds a signed request stays valid either side of the hub's clock

KeyLookup = Callable[[int], Awaitable[bytes | None]]


class AuthError(Exception):
    """A write request that is not properly signed; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def signing_message(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    digest = hashlib.blake2b(body, digest_size=32).hexdigest()
    return f"zos-hub-v1\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()


def sign_headers(
    identity: Identity, twin_id: int, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    nonce = os.urandom(16).hex()
    signature = identity.sign(signing_message(method, path, timestamp, nonce, body))
    return {
        HEADER_TWIN: str(twin_id),
        HEADER_TIME: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIG: signature.hex(),
    }


class RequestVerifier:
    """Checks signed requests against `lookup(twin_id) -> public key or None`."""

    def __init__(self, lookup: KeyLookup, max_skew: int = MAX_SKEW) -> None:
        self.lookup = lookup
        self.max_skew = max_skew
        self._nonces: dict[str, float] = {}

    async def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> int:
        """The signing twin's id, or AuthError saying which rule failed."""
        missing = [
            h for h in (HEADER_TWIN, HEADER_TIME, HEADER_NONCE, HEADER_SIG) if h not in headers
        ]
        if missing:
            raise AuthError(401, f"unsigned request: missing header(s) {', '.join(missing)}")
        try:
            twin_id = int(headers[HEADER_TWIN])
            timestamp = int(headers[HEADER_TIME])
            signature = bytes.fromhex(headers[HEADER_SIG])
        except ValueError:
            raise AuthError(400, "twin id and timestamp must be integers, signature hex") from None
        nonce = headers[HEADER_NONCE]
        if not 16 <= len(nonce) <= 64:
            raise AuthError(400, "nonce must be 16 to 64 characters")
        now = time.time()
        if abs(now - timestamp) > self.max_skew:
            raise AuthError(401, f"stale request: timestamp is more than {self.max_skew}s off")
        key = await self.lookup(twin_id)
        if key is None:
            raise AuthError(403, f"twin {twin_id} is not registered")
        if not verify_ed25519(
            key, signing_message(method, path, timestamp, nonce, body), signature
        ):
            raise AuthError(403, f"bad signature for twin {twin_id}")
        self._forget_old(now)
        if nonce in self._nonces:
            raise AuthError(403, "replayed request: nonce already used")
        self._nonces[nonce] = timestamp + self.max_skew
        return twin_id

    def _forget_old(self, now: float) -> None:
        expired = [n for n, until in self._nonces.items() if until < now]
        for n in expired:
            del self._nonces[n]
