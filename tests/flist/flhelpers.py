"""Test helpers: an independent writer of the rfs format (from reference/flist.md only:
plain sqlite3, hashlib, cramjam, cryptography) and a full listing of a tree to compare."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import cramjam
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REF_BLOCK = 512 * 1024


def ref_encrypt(plain: bytes) -> tuple[bytes, bytes, bytes]:
    """(id, key, ciphertext) by the reference block rules."""
    key = hashlib.blake2b(plain, digest_size=32).digest()
    cipher = AESGCM(key).encrypt(key[:12], bytes(cramjam.snappy.compress_raw(plain)), None)
    return hashlib.blake2b(cipher, digest_size=32).digest(), key, cipher


def ref_decrypt(block_id: bytes, key: bytes, cipher: bytes) -> bytes:
    assert hashlib.blake2b(cipher, digest_size=32).digest() == block_id
    return bytes(cramjam.snappy.decompress_raw(AESGCM(key).decrypt(key[:12], cipher, None)))


def ref_store(store: Path, cipher: bytes, block_id: bytes) -> None:
    h = block_id.hex()
    (store / h[:2]).mkdir(parents=True, exist_ok=True)
    (store / h[:2] / h).write_bytes(cipher)


class RefFlist:
    """Rows written by hand, exactly as the reference table describes them."""

    def __init__(self, path: Path, store: Path) -> None:
        self.store = store
        self.db = sqlite3.connect(path)
        self.db.executescript(
            """
            CREATE TABLE inode (ino INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER,
                name VARCHAR(255), size INTEGER, uid INTEGER, gid INTEGER, mode INTEGER,
                rdev INTEGER, ctime INTEGER, mtime INTEGER);
            CREATE INDEX parents ON inode (parent);
            CREATE INDEX names ON inode (name);
            CREATE TABLE extra (ino INTEGER PRIMARY KEY, data VARCHAR(4096));
            CREATE TABLE block (ino INTEGER, id VARCHAR(32), key VARCHAR(32));
            CREATE INDEX block_ino ON block (ino);
            CREATE TABLE tag (key VARCHAR(10) PRIMARY KEY, value VARCHAR(255));
            CREATE TABLE route (start integer, end integer, url VARCHAR(2048));
            """
        )
        self.root = self.inode(0, "/", stat.S_IFDIR | 0o755)
        self.db.execute("INSERT INTO route VALUES (0, 255, ?)", (f"dir://{store}",))

    def inode(
        self,
        parent: int,
        name: str,
        mode: int,
        size: int = 0,
        mtime: int = 1_600_000_000,
        uid: int = 0,
        gid: int = 0,
        rdev: int = 0,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (parent, name, size, uid, gid, mode, rdev, mtime, mtime),
        )
        return int(cur.lastrowid)

    def dir(self, parent: int, name: str, mode: int = 0o755, **kw) -> int:
        return self.inode(parent, name, stat.S_IFDIR | mode, **kw)

    def file(self, parent: int, name: str, data: bytes, mode: int = 0o644, **kw) -> int:
        ino = self.inode(parent, name, stat.S_IFREG | mode, size=len(data), **kw)
        for off in range(0, len(data), REF_BLOCK):
            block_id, key, cipher = ref_encrypt(data[off : off + REF_BLOCK])
            ref_store(self.store, cipher, block_id)
            self.db.execute("INSERT INTO block VALUES (?, ?, ?)", (ino, block_id, key))
        return ino

    def symlink(self, parent: int, name: str, target: str, **kw) -> int:
        ino = self.inode(parent, name, stat.S_IFLNK | 0o777, size=len(target), **kw)
        self.db.execute("INSERT INTO extra VALUES (?, ?)", (ino, target))
        return ino

    def tag(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO tag VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.db.commit()
        self.db.close()


def listing(root: Path) -> list[tuple]:
    """Names, types, modes, owners, sizes, mtimes, link targets, content hashes and
    hard-link groups (named by the group's first path) of a whole tree."""
    rows = []
    groups: dict[tuple[int, int], str] = {}
    paths = [Path(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            paths.append(Path(dirpath) / name)
    for p in sorted(paths, key=lambda q: str(q.relative_to(root))):
        st = os.lstat(p)
        rel = str(p.relative_to(root))
        kind = stat.S_IFMT(st.st_mode)
        size = st.st_size if kind in (stat.S_IFREG, stat.S_IFLNK) else None
        target = os.readlink(p) if kind == stat.S_IFLNK else None
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if kind == stat.S_IFREG else None
        group = None
        if kind == stat.S_IFREG and st.st_nlink > 1:
            group = groups.setdefault((st.st_dev, st.st_ino), rel)
        rows.append(
            (
                rel,
                oct(kind),
                oct(stat.S_IMODE(st.st_mode)),
                st.st_uid,
                st.st_gid,
                size,
                int(st.st_mtime),
                target,
                digest,
                group,
            )
        )
    return rows


def tree_files(root: Path) -> set[str]:
    """Every path under root (to check nothing appeared outside a target)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(str(Path(dirpath, name).relative_to(root)))
    return out
