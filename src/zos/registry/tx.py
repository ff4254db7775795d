"""Registry transactions: every change to the registry is one, signed by its twin.

A transaction has an `id` (32 random hex chars), a `kind`, the signing `twin` (0 for
`register_twin`, whose body carries the new twin's public key and which that key signs),
a JSON `body`, a `timestamp` (unix milliseconds) and an ed25519 `signature` over the
canonical JSON `["zos-tx-1", id, kind, twin, timestamp, body]` (keys sorted, no spaces,
ASCII).

The service refuses a transaction whose timestamp is more than TX_MAX_AGE old or
ALLOWED_SKEW ahead, and records every accepted id in a KV bucket whose entries live
TX_ID_TTL (longer than TX_MAX_AGE + ALLOWED_SKEW), so a replay is refused for as long
as the transaction would otherwise be accepted.

Subjects (`zos.bus.subjects`): `register_twin` goes to `zos.registry.register.<key hex>`
(the only subject an unregistered key may use), every other transaction to
`zos.registry.tx`, and queries (not signed by the asker: everything in the registry is
public) to `zos.registry.query` as `{"query": name, "args": {...}, "nonce": hex}`. Every
answer is `{"ok": true, "result": ...}` or `{"ok": false, "error": {"code", "message"}}`,
signed by the registry for the request's nonce (a transaction's nonce is its id), see
`zos.registry.signing`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zos.bus.errors import BusError, describe_error
from zos.identity import Identity, verify_ed25519

TX_MAX_AGE = 120.0
ALLOWED_SKEW = 30.0
TX_ID_TTL = 300.0
MAX_TX_BYTES = 64 * 1024
NONCE = r"^[0-9a-f]{32}$"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    kind: str = Field(pattern=r"^[a-z_]{1,40}$")
    twin: int = Field(ge=0, lt=1 << 53)
    body: dict[str, Any]
    timestamp: int = Field(ge=0, lt=1 << 53)
    signature: str = Field(default="", pattern=r"^([0-9a-f]{128})?$")

    def signing_bytes(self) -> bytes:
        return canonical_json(
            ["zos-tx-1", self.id, self.kind, self.twin, self.timestamp, self.body]
        )

    @classmethod
    def build(cls, identity: Identity, twin: int, kind: str, body: dict[str, Any]) -> Transaction:
        tx = cls(
            id=new_nonce(),
            kind=kind,
            twin=twin,
            body=body,
            timestamp=int(time.time() * 1000),
        )
        tx.signature = identity.sign(tx.signing_bytes()).hex()
        return tx

    def verify(self, public_key: bytes) -> bool:
        if not self.signature:
            return False
        return verify_ed25519(public_key, self.signing_bytes(), bytes.fromhex(self.signature))

    def check_time(self, now: float | None = None) -> None:
        now_ms = int((time.time() if now is None else now) * 1000)
        if self.timestamp > now_ms + ALLOWED_SKEW * 1000:
            raise BusError("expired", "transaction timestamp is in the future beyond the skew")
        if self.timestamp < now_ms - TX_MAX_AGE * 1000:
            raise BusError("expired", f"transaction is older than {TX_MAX_AGE:.0f}s")

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Transaction:
        try:
            return cls.model_validate(body)
        except ValidationError as e:
            raise BusError("malformed", f"transaction {describe_error(e)}") from None


def parse_request(data: bytes, what: str) -> dict[str, Any]:
    """A request's JSON object, bounded in size; too_large or malformed otherwise."""
    if len(data) > MAX_TX_BYTES:
        raise BusError("too_large", f"{what} is {len(data)} bytes, limit {MAX_TX_BYTES}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BusError("malformed", f"{what} is not JSON") from None
    if not isinstance(body, dict):
        raise BusError("malformed", f"{what} must be a JSON object")
    return body


def new_nonce() -> str:
    return os.urandom(16).hex()


def ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}, separators=(",", ":")).encode()


def fail(error: BusError) -> bytes:
    return json.dumps({"ok": False, "error": error.to_dict()}, separators=(",", ":")).encode()


def read_answer(data: bytes) -> Any:
    """The result of a registry answer, or the BusError it carries."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BusError("malformed", "registry answer is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        raise BusError("malformed", "registry answer has no 'ok'")
    if not body["ok"]:
        raise BusError.from_dict(body.get("error"))
    return body.get("result")
