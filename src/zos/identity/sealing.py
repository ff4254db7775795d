"""Sealing data to a twin: anonymous sealed boxes (X25519 + XSalsa20-Poly1305).

A twin publishes only its ed25519 key; the X25519 key to seal to is derived from it,
so anyone who knows a twin can seal to it and only the twin can open.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public

from zos.identity.keys import Identity


class SealError(ValueError):
    """Sealed data that cannot be opened (wrong key, truncated or altered)."""


def x25519_public_from_ed25519(ed25519_public: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError) as e:
        raise SealError(f"not a usable ed25519 public key: {e}") from None


def seal(recipient_ed25519_public: bytes, plaintext: bytes) -> bytes:
    box = nacl.public.SealedBox(
        nacl.public.PublicKey(x25519_public_from_ed25519(recipient_ed25519_public))
    )
    return box.encrypt(plaintext)


def open_sealed(identity: Identity, ciphertext: bytes) -> bytes:
    box = nacl.public.SealedBox(nacl.public.PrivateKey(identity.x25519_private))
    try:
        return box.decrypt(ciphertext)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        raise SealError(
            "sealed data cannot be opened with this key (wrong key or altered)"
        ) from None
