"""WireGuard keys as the `network` workload carries them: 32-byte X25519 keys in base64."""

from __future__ import annotations

import base64
import binascii

from nacl.bindings import crypto_scalarmult_base

from zos.client.networks.errors import NetworkPlanError

KEY_SIZE = 32


def key_bytes(value: object, field: str) -> bytes:
    """The 32 bytes of a base64 WireGuard key; a NetworkPlanError naming `field` if not one."""
    try:
        raw = base64.b64decode(value, validate=True)  # type: ignore[arg-type]
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if len(raw) != KEY_SIZE:
        raise NetworkPlanError(field, f"{value!r} is not a base64 WireGuard key (32 bytes)")
    return raw


def check_key(value: object, field: str) -> str:
    """`value` as a canonical base64 WireGuard key (what `wg` prints)."""
    return base64.b64encode(key_bytes(value, field)).decode()


def private_key_from(random32: bytes) -> str:
    """A private key made of 32 random bytes, clamped as `wg genkey` does (the kernel
    keeps keys clamped, so what is stored is what the interface reports)."""
    if len(random32) != KEY_SIZE:
        raise ValueError(f"a private key needs {KEY_SIZE} random bytes, got {len(random32)}")
    raw = bytearray(random32)
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def public_key(private_key: str) -> str:
    """The base64 public key of a base64 private key (`wg pubkey`)."""
    raw = key_bytes(private_key, "private_key")
    return base64.b64encode(crypto_scalarmult_base(raw)).decode()
