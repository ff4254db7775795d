"""NATS JWTs (the claims of nats-io/jwt v2), as much of them as the auth callout needs.

A token is `base64url(header) . base64url(claims) . base64url(signature)`, unpadded; the
header is `{"typ":"JWT","alg":"ed25519-nkey"}` and the signature is ed25519 by the
issuer's key over the first two parts joined by the dot. The claims are JSON: `iss`
(the issuer's public NKey), `sub`, `aud`, `iat`, `exp` (unix seconds), `jti` (an id: the
base32 SHA-512/256 of the other standard claims) and `nats`, the typed part, with `type`
and `version` 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

from zos.identity.keys import KeyError_, verify_ed25519
from zos.identity.nkey import decode_public_nkey
from zos.registry.signing import RegistrySigner

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
MAX_TOKEN = 64 * 1024
_STANDARD = ("aud", "exp", "iat", "iss", "name", "nbf", "sub")


class JwtError(ValueError):
    """A token that does not parse or whose signature does not verify."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("not base64url") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode(claims: dict[str, Any], signer: RegistrySigner, issuer: str) -> str:
    """A token of `claims` issued (and signed) by `signer` as the NKey `issuer`."""
    body = {**claims, "iss": issuer, "iat": int(time.time())}
    standard = {k: body[k] for k in _STANDARD if body.get(k)}
    digest = hashlib.new("sha512_256", _json(standard)).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signed = f"{_b64(_json(HEADER))}.{_b64(_json(body))}"
    return f"{signed}.{_b64(signer.sign_raw(signed.encode()))}"


def decode(token: str, issuer_prefix: int) -> dict[str, Any]:
    """The claims of a token whose issuer is an NKey of `issuer_prefix` and signed it."""
    if len(token) > MAX_TOKEN:
        raise JwtError("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("not a JWT (three parts expected)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise JwtError("header or claims are not JSON") from None
    if not isinstance(header, dict) or str(header.get("alg", "")).lower() != HEADER["alg"]:
        raise JwtError("not an ed25519-nkey JWT")
    if not isinstance(claims, dict) or not isinstance(claims.get("nats"), dict):
        raise JwtError("claims without 'nats'")
    try:
        issuer = decode_public_nkey(claims.get("iss", ""), issuer_prefix)
    except KeyError_ as e:
        raise JwtError(f"issuer: {e}") from None
    signed = f"{parts[0]}.{parts[1]}".encode()
    if not verify_ed25519(issuer, signed, _unb64(parts[2])):
        raise JwtError("signature does not verify")
    return claims
