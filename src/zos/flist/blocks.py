"""The rfs block rules: 512 KiB plain blocks, convergent encryption, content ids.

key = BLAKE2b-256(plain); ciphertext = AES-256-GCM(key, nonce=key[:12], snappy_raw(plain));
id = BLAKE2b-256(ciphertext). Identical plain blocks give identical ids everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cramjam
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from zos.flist.errors import BlockError

BLOCK_SIZE = 512 * 1024
ID_LEN = 32
KEY_LEN = 32
# Snappy's worst case is n + n/6 + 32, plus the 16-byte GCM tag; nothing bigger is a block.
MAX_CIPHERTEXT = BLOCK_SIZE + BLOCK_SIZE // 6 + 32 + 16


def blake2b256(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class Block:
    """A reference to one stored block: `id` addresses it, `key` decrypts it."""

    id: bytes
    key: bytes


def encrypt_block(plain: bytes | memoryview) -> tuple[Block, bytes]:
    """Encrypt one plain block; returns its reference and the ciphertext to store."""
    if len(plain) > BLOCK_SIZE:
        raise ValueError(f"a block holds at most {BLOCK_SIZE} bytes, got {len(plain)}")
    key = blake2b256(plain)
    compressed = bytes(cramjam.snappy.compress_raw(plain))
    cipher = AESGCM(key).encrypt(key[:12], compressed, None)
    return Block(blake2b256(cipher), key), cipher


def check_id(block_id: bytes, cipher: bytes) -> None:
    """Refuse ciphertext whose BLAKE2b-256 is not the id it was fetched under."""
    if len(cipher) > MAX_CIPHERTEXT:
        raise BlockError(f"block {block_id.hex()}: {len(cipher)} bytes is larger than any block")
    if blake2b256(cipher) != block_id:
        raise BlockError(f"block {block_id.hex()}: content hash does not match its id")


def decrypt_block(block: Block, cipher: bytes, *, id_checked: bool = False) -> bytes:
    """Verify and open one block: id = hash(cipher) (unless the caller just checked it),
    then the GCM tag. The tag already proves the bytes are the ones sealed under `key`,
    so the plain text is not hashed again (whoever wrote the flist chose it anyway)."""
    if not id_checked:
        check_id(block.id, cipher)
    try:
        compressed = AESGCM(block.key).decrypt(block.key[:12], cipher, None)
    except InvalidTag:
        raise BlockError(f"block {block.id.hex()}: does not decrypt with its key") from None
    try:
        plain = bytes(cramjam.snappy.decompress_raw(compressed))
    except Exception as e:  # cramjam raises its own DecompressionError
        raise BlockError(f"block {block.id.hex()}: not valid raw snappy ({e})") from None
    if len(plain) > BLOCK_SIZE:
        raise BlockError(f"block {block.id.hex()}: larger than {BLOCK_SIZE} bytes")
    return plain
