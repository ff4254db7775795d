"""Sealing data to a twin (X25519, XSalsa20-Poly1305), two ways.

A twin publishes only its ed25519 key; its X25519 key is derived from it.

- `seal` / `open_sealed`: an anonymous sealed box. Anyone who knows a twin can seal to it
  and only the twin can open; the box says nothing of who made it (stored secrets, data
  keys in transit, each also signed where the sender matters).
- `box_seal` / `box_open`: a `crypto_box` with the key two twins share,
  `shared_key(one's X25519 secret, the other's ed25519 key)`, that either can compute and
  nobody else can: a box made with it opens only for the other twin, and proves it was
  made by one of the two. The bus seals this way (one shared key per peer, cached,
  instead of an ephemeral key and two exchanges per message). The keys are static:
  whoever later learns either twin's secret key opens every box the two ever exchanged
  (no forward secrecy). Each box carries a random 24-byte nonce.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from zos.identity.keys import Identity

NONCE_SIZE = nacl.bindings.crypto_box_NONCEBYTES
TAG_SIZE = nacl.bindings.crypto_box_ZEROBYTES - nacl.bindings.crypto_box_BOXZEROBYTES
OVERHEAD = NONCE_SIZE + TAG_SIZE  # bytes a box adds to its plaintext


class SealError(ValueError):
    """Sealed data that cannot be opened (wrong key, truncated or altered), or a key
    that cannot seal."""


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


def shared_key(x25519_private: bytes, peer_ed25519_public: bytes) -> bytes:
    """The box key of this secret's twin and the twin of `peer_ed25519_public` (both
    compute the same one); SealError if the peer's key is not usable."""
    peer = x25519_public_from_ed25519(peer_ed25519_public)
    try:
        return nacl.bindings.crypto_box_beforenm(peer, x25519_private)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError):
        raise SealError("not a usable X25519 key (a low-order point)") from None


def box_seal(key: bytes, plaintext: bytes) -> bytes:
    """`plaintext` boxed with a shared key: nonce, then ciphertext and its tag."""
    nonce = nacl.utils.random(NONCE_SIZE)
    return nonce + nacl.bindings.crypto_box_easy_afternm(plaintext, nonce, key)


def box_open(key: bytes, data: bytes) -> bytes:
    if len(data) < OVERHEAD:
        raise SealError("sealed data is shorter than a nonce and a tag")
    try:
        return nacl.bindings.crypto_box_open_easy_afternm(data[NONCE_SIZE:], data[:NONCE_SIZE], key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        raise SealError(
            "sealed data cannot be opened with this key pair (other keys, or altered)"
        ) from None
