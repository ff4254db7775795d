"""Checking signed hub write requests (the signing half, and the headers, are in
`zos.flist.hubsign`, what the http store and the hub client use).

The hub looks the twin's key up, refuses stale times and replayed nonces, so a
captured request cannot be reused. The body's hash travels in a
header so the whole signature is checked before a byte of the body is read; the body
must then hash to it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping

from zos.flist.hubsign import (
    HEADER_HASH,
    HEADER_NONCE,
    HEADER_SIG,
    HEADER_TIME,
    HEADER_TWIN,
    HEADERS,
    signing_message,
)
from zos.identity import verify_ed25519

MAX_SKEW = 300  # seconds a signed request stays valid either side of the hub's clock

KeyLookup = Callable[[int], Awaitable[bytes | None]]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AuthError(Exception):
    """A write request that is not properly signed; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestVerifier:
    """Checks signed requests against `lookup(twin_id) -> public key or None`."""

    def __init__(self, lookup: KeyLookup, max_skew: int = MAX_SKEW) -> None:
        self.lookup = lookup
        self.max_skew = max_skew
        self._nonces: dict[str, float] = {}

    async def check_sender(self, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Headers present, time fresh, twin registered: (twin id, its key). Cheap, so it
        runs before a large body is read."""
        missing = [h for h in HEADERS if h not in headers]
        if missing:
            raise AuthError(401, f"unsigned request: missing header(s) {', '.join(missing)}")
        try:
            twin_id = int(headers[HEADER_TWIN])
            timestamp = int(headers[HEADER_TIME])
        except ValueError:
            raise AuthError(400, "twin id and timestamp must be integers") from None
        if abs(time.time() - timestamp) > self.max_skew:
            raise AuthError(401, f"stale request: timestamp is more than {self.max_skew}s off")
        try:
            key = await self.lookup(twin_id)
        except Exception as e:  # the registry is down or slow: not the caller's fault
            raise AuthError(503, f"cannot look up twin {twin_id}: {e}") from None
        if key is None:
            raise AuthError(403, f"twin {twin_id} is not registered")
        return twin_id, key

    async def verify(self, method: str, path: str, headers: Mapping[str, str]) -> int:
        """The signing twin's id, or AuthError saying which rule failed. Needs only the
        headers: the body is read afterwards, and must hash to X-Zos-Content-Hash."""
        twin_id, key = await self.check_sender(headers)
        nonce, digest = headers[HEADER_NONCE], headers[HEADER_HASH]
        if not 16 <= len(nonce) <= 64:
            raise AuthError(400, "nonce must be 16 to 64 characters")
        if not _HEX64.match(digest):
            raise AuthError(400, f"{HEADER_HASH} must be 64 lowercase hex (BLAKE2b-256)")
        try:
            signature = bytes.fromhex(headers[HEADER_SIG])
        except ValueError:
            raise AuthError(400, "signature must be hex") from None
        timestamp = int(headers[HEADER_TIME])
        if not verify_ed25519(
            key, signing_message(method, path, timestamp, nonce, digest), signature
        ):
            raise AuthError(403, f"bad signature for twin {twin_id}")
        self._forget_old(time.time())
        if nonce in self._nonces:
            raise AuthError(403, "replayed request: nonce already used")
        self._nonces[nonce] = timestamp + self.max_skew
        return twin_id

    def _forget_old(self, now: float) -> None:
        expired = [n for n, until in self._nonces.items() if until < now]
        for n in expired:
            del self._nonces[n]
