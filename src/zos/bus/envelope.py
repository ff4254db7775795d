"""The signed envelope every bus message travels in.

Fields: `id` (32 hex chars, random), `source` and `destination` twin ids, `command`,
`payload` (bytes; sealed between the source and the destination twin when `sealed` is
true), `timestamp` and `expiry` (unix milliseconds), `reply_to` (the id of the request a
response answers, "" on requests) and `signature`.

The signature is ed25519 by the source twin over `signing_bytes()`: the canonical JSON
array `["zos-bus-2", id, source, destination, command, sealed, timestamp, expiry,
reply_to, sha256(payload) hex]` (no spaces, ASCII). Every field but the signature is
covered, so nothing can be altered or moved to another twin or command.

A sealed payload is a `crypto_box` with the key the two twins' static X25519 keys
share (`zos.identity.sealing`): nonce, ciphertext, tag. Only the destination (and the
source) can open it, and it opens only with the key of the twin the envelope names as
its source, so a payload copied into another twin's envelope does not open. Each side
derives the shared key once per peer (`zos.bus.keys`). (Protocol 1 sealed each payload
in an anonymous box, one ephemeral X25519 key and two exchanges per message.)

On the wire an envelope is JSON with `payload` and `signature` in base64.

A receiver refuses: an envelope over MAX_ENVELOPE bytes or a payload over MAX_PAYLOAD
(too_large), anything that does not parse (malformed), a timestamp more than
ALLOWED_SKEW in the future or an expiry in the past or more than MAX_TTL after the
timestamp (expired), an unknown source twin (unknown_twin), a bad signature
(bad_signature), a sealed payload that does not open with the source's key (malformed),
and an id it has already accepted from that source (replayed). The replay cache keeps
ids only until their expiry (plus the skew), so its memory is bounded by the message
rate times MAX_TTL, and by `max_entries` beyond that.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zos.bus.errors import BusError, describe_error
from zos.bus.keys import Keys
from zos.identity import SealError, verify_ed25519

PROTOCOL = "zos-bus-2"
MAX_PAYLOAD = 1 << 20  # bytes of payload as carried (after sealing)
MAX_ENVELOPE = (MAX_PAYLOAD * 4) // 3 + 4096  # base64 payload plus the other fields
ALLOWED_SKEW = 30.0  # seconds a timestamp may be ahead of the receiver's clock
MAX_TTL = 300.0  # seconds an envelope may live (expiry - timestamp)
DEFAULT_TTL = 60.0

COMMAND_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"


# Built once: json.dumps with arguments builds an encoder per call.
_signing_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return os.urandom(16).hex()


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    source: int = Field(ge=0, lt=1 << 53)
    destination: int = Field(ge=0, lt=1 << 53)
    command: str = Field(pattern=COMMAND_PATTERN)
    payload: bytes = Field(max_length=MAX_PAYLOAD)
    sealed: bool
    timestamp: int = Field(ge=0, lt=1 << 53)
    expiry: int = Field(ge=0, lt=1 << 53)
    reply_to: str = Field(default="", pattern=r"^([0-9a-f]{32})?$")
    signature: bytes = Field(default=b"", max_length=64)

    def signing_bytes(self) -> bytes:
        fields = [
            PROTOCOL,
            self.id,
            self.source,
            self.destination,
            self.command,
            self.sealed,
            self.timestamp,
            self.expiry,
            self.reply_to,
            hashlib.sha256(self.payload).hexdigest(),
        ]
        return _signing_json(fields).encode()

    @classmethod
    def create(
        cls,
        keys: Keys,
        source: int,
        destination: int,
        command: str,
        payload: bytes,
        *,
        seal_to: bytes | None = None,
        ttl: float = DEFAULT_TTL,
        reply_to: str = "",
    ) -> Envelope:
        """An envelope signed by `keys`, sealed between them and the destination twin when
        `seal_to` (the destination's ed25519 public key) is given."""
        if not 0 < ttl <= MAX_TTL:
            raise BusError("malformed", f"ttl must be in (0, {MAX_TTL}] seconds, got {ttl}")
        try:
            body = keys.seal(destination, seal_to, payload) if seal_to is not None else payload
        except SealError as e:
            raise BusError("malformed", f"cannot seal to twin {destination}: {e}") from None
        if len(body) > MAX_PAYLOAD:
            raise BusError("too_large", f"payload is {len(body)} bytes, limit {MAX_PAYLOAD}")
        ts = now_ms()
        env = cls(
            id=new_id(),
            source=source,
            destination=destination,
            command=command,
            payload=body,
            sealed=seal_to is not None,
            timestamp=ts,
            expiry=ts + int(ttl * 1000),
            reply_to=reply_to,
        )
        env.signature = keys.sign(env.signing_bytes())
        return env

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        if len(data) > MAX_ENVELOPE:
            raise BusError("too_large", f"envelope is {len(data)} bytes, limit {MAX_ENVELOPE}")
        try:
            return cls.model_validate_json(data)
        except ValidationError as e:
            first = e.errors()[0]
            if first["type"] == "bytes_too_long" and first["loc"] == ("payload",):
                raise BusError("too_large", f"payload over {MAX_PAYLOAD} bytes") from None
            raise BusError("malformed", f"envelope {describe_error(e)}") from None

    def verify(self, public_key: bytes) -> bool:
        return verify_ed25519(public_key, self.signing_bytes(), self.signature)

    def check_time(self, now: int | None = None) -> None:
        now = now_ms() if now is None else now
        skew = int(ALLOWED_SKEW * 1000)
        if self.timestamp > now + skew:
            raise BusError("expired", "timestamp is in the future beyond the allowed skew")
        if self.expiry < self.timestamp or self.expiry - self.timestamp > int(MAX_TTL * 1000):
            raise BusError("expired", f"expiry must be within {MAX_TTL:.0f}s of the timestamp")
        if self.expiry < now:
            raise BusError("expired", "envelope has expired")

    def open(self, keys: Keys, source_key: bytes) -> bytes:
        """The payload in clear; when sealed, opened by the destination's `keys` with the
        box key they share with the source twin, whose ed25519 key is `source_key`."""
        if not self.sealed:
            return self.payload
        try:
            return keys.open(self.source, source_key, self.payload)
        except SealError:
            raise BusError(
                "malformed",
                f"sealed payload cannot be opened: not sealed between twin {self.source} "
                f"and twin {self.destination}, or altered",
            ) from None

    def decode_payload(self, keys: Keys, source_key: bytes) -> Any:
        data = self.open(keys, source_key)
        if not data:
            return None
        if nests_too_deep(data):
            raise BusError("malformed", f"payload nests more than {MAX_JSON_DEPTH} levels deep")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BusError("malformed", "payload is not JSON") from None


# How deep a payload may nest ([ and {): checked before parsing, since the parser (and
# whatever walks its result) recurses once per level.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_DEPTH_STEP = [0] * 256
for _c in b"[{":
    _DEPTH_STEP[_c] = 1
for _c in b"]}":
    _DEPTH_STEP[_c] = -1


def nests_too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests brackets deeper than `limit`, outside strings (no parsing,
    no recursion: a running sum over the brackets, in C)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # cannot nest deeper than it has brackets
    # Escaped backslashes, then escaped quotes go first (as JSON reads escapes, left to
    # right); then only quotes and brackets matter, and what is between quotes is a string.
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = _JSON_STRING.sub(b"", text)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets), initial=0)) > limit


class ReplayCache:
    """Ids accepted per source twin, each kept until its expiry plus the allowed skew."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._seen: set[tuple[int, str]] = set()
        self._heap: list[tuple[int, int, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: int) -> None:
        horizon = now - int(ALLOWED_SKEW * 1000)
        while self._heap and self._heap[0][0] < horizon:
            _, source, env_id = heapq.heappop(self._heap)
            self._seen.discard((source, env_id))

    def check_and_add(self, source: int, env_id: str, expiry: int, now: int | None = None) -> None:
        now = now_ms() if now is None else now
        self._prune(now)
        key = (source, env_id)
        if key in self._seen:
            raise BusError("replayed", f"envelope {env_id} from twin {source} was already seen")
        if len(self._seen) >= self.max_entries:
            # Forgetting a live id would let it be replayed; refuse instead.
            raise BusError("busy", "too many envelopes in the replay window; try again later")
        self._seen.add(key)
        heapq.heappush(self._heap, (expiry, source, env_id))
