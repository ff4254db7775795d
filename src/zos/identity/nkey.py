"""A zos ed25519 key as a NATS NKey: the same 32 bytes, in NATS's text encoding.

An NKey is base32 (no padding) of a prefix byte, the raw key and a CRC-16 of both; the
prefix says the role: `U...` a user, `A...` an account, `S...` a seed. A twin's key is
its NATS user; the registry's key is also the account key that signs the users it lets
in (auth callout), so one key pair serves as both.
"""

from __future__ import annotations

import base64
import binascii

import nkeys

from zos.identity.keys import KeyError_

USER = nkeys.PREFIX_BYTE_USER
ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
SERVER = nkeys.PREFIX_BYTE_SERVER
_PREFIX_NAMES = {USER: "user", ACCOUNT: "account", SERVER: "server"}


def public_nkey(public_key: bytes, prefix: int = USER) -> str:
    """`U...` (user) or `A...` (account) for a 32-byte ed25519 public key."""
    if len(public_key) != 32:
        raise KeyError_(f"public key: must be 32 bytes, got {len(public_key)}")
    raw = bytes([prefix]) + public_key
    return base64.b32encode(raw + nkeys.crc16_checksum(raw)).decode().rstrip("=")


def seed_nkey(seed: bytes) -> str:
    """The `SU...` seed text nats-py signs the server's nonce with."""
    return nkeys.encode_seed(seed, USER).decode()


def decode_public_nkey(text: str, prefix: int = USER) -> bytes:
    """The ed25519 key of an NKey of the given role; KeyError_ naming what is wrong."""
    want = _PREFIX_NAMES.get(prefix, str(prefix))
    if not isinstance(text, str) or len(text) != 56 or not text.isascii():
        raise KeyError_(f"nkey: not a public {want} nkey")
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise KeyError_(f"nkey: not a public {want} nkey (not base32)") from None
    if raw[0] != prefix:
        raise KeyError_(f"nkey: not a public {want} nkey (prefix {text[0]})")
    if nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise KeyError_("nkey: checksum does not match")
    return raw[1:-2]
