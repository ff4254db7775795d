"""ed25519 identities from a 32-byte seed or a BIP-39 mnemonic, derived as ThreeFold clients do.

The Substrate derivation (substrate-bip39) turns the mnemonic's *entropy*, not its
BIP-39 seed, into a 32-byte mini secret: PBKDF2-HMAC-SHA512(entropy, "mnemonic" +
passphrase, 2048) truncated to 32 bytes. That mini secret is the ed25519 seed, or the
sr25519 mini secret, so the same mnemonic gives the same public key as the official
clients.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
from mnemonic import Mnemonic

_WORDS = Mnemonic("english")


class KeyError_(ValueError):
    """A key, seed or mnemonic that cannot be used; the message says why."""


def new_mnemonic(words: int = 24) -> str:
    strength = {12: 128, 15: 160, 18: 192, 21: 224, 24: 256}.get(words)
    if strength is None:
        raise KeyError_(f"a mnemonic has 12, 15, 18, 21 or 24 words, not {words}")
    return _WORDS.generate(strength)


def seed_from_mnemonic(mnemonic: str, passphrase: str = "") -> bytes:
    """The 32-byte mini secret Substrate derives from a BIP-39 mnemonic."""
    phrase = " ".join(mnemonic.split())
    if not _WORDS.check(phrase):
        raise KeyError_("mnemonic: not a valid BIP-39 English mnemonic (unknown word or checksum)")
    entropy = bytes(_WORDS.to_entropy(phrase))
    salt = ("mnemonic" + passphrase).encode()
    return hashlib.pbkdf2_hmac("sha512", entropy, salt, 2048)[:32]


def public_key_from_hex(text: str) -> bytes:
    """A 32-byte public key from hex (an optional 0x prefix is allowed)."""
    value = text.strip()
    if value.startswith(("0x", "0X")):
        value = value[2:]
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise KeyError_(f"public key: not hex: {text[:80]!r}") from None
    if len(key) != 32:
        raise KeyError_(f"public key: must be 32 bytes, got {len(key)}")
    return key


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def verify_sr25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """sr25519 (schnorrkel, signing context "substrate") verification."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    import sr25519

    try:
        return bool(sr25519.verify(signature, message, public_key))
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Identity:
    """An ed25519 key pair. `seed` is secret; everything else may be published."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise KeyError_(f"seed: must be 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_mnemonic(cls, mnemonic: str, passphrase: str = "") -> Identity:
        return cls(seed_from_mnemonic(mnemonic, passphrase))

    @classmethod
    def from_seed_hex(cls, text: str) -> Identity:
        value = text.strip().removeprefix("0x")
        try:
            return cls(bytes.fromhex(value))
        except ValueError:
            raise KeyError_("seed: not hex") from None

    # Built once: deriving the key pair costs about as much as a signature.
    @functools.cached_property
    def _signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @functools.cached_property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def public_hex(self) -> str:
        return self.public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def sign_sr25519(self, message: bytes) -> bytes:
        """Sign as an sr25519 key with the same mini secret (as the Substrate clients do)."""
        import sr25519

        return bytes(sr25519.sign(sr25519.pair_from_seed(self.seed), message))

    @property
    def sr25519_public_key(self) -> bytes:
        import sr25519

        return bytes(sr25519.pair_from_seed(self.seed)[0])

    @property
    def x25519_private(self) -> bytes:
        """The X25519 secret derived from the ed25519 key (for opening sealed data)."""
        sk = self.seed + self.public_key
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk)

    @property
    def x25519_public(self) -> bytes:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(self.public_key)


def write_key_file(path: Path, identity: Identity, mnemonic: str | None = None) -> None:
    """Write a key file readable by its owner only (mode 0600, created that way)."""
    data: dict[str, str] = {"seed": identity.seed.hex(), "public_key": identity.public_hex}
    if mnemonic:
        data["mnemonic"] = mnemonic
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_key_file(path: Path) -> Identity:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KeyError_(f"key file {path}: {e.strerror}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise KeyError_(f"key file {path}: not a zos key file (JSON object expected)") from None
    if isinstance(data.get("seed"), str):
        return Identity.from_seed_hex(data["seed"])
    if isinstance(data.get("mnemonic"), str):
        return Identity.from_mnemonic(data["mnemonic"])
    raise KeyError_(f"key file {path}: has neither 'seed' nor 'mnemonic'")
