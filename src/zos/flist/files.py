"""Small file helpers shared by the stores, the cache and the hub."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def hash_file(path: Path) -> str:
    """Hex BLAKE2b-256 of a file (how flists are named in the cache and on the hub)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary name beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
