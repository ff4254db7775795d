"""Which deployments are encrypted, who may unlock them, and where their keys are.

The node keeps a deployment's data key only in the kernel: an `fscrypt-provisioning`
key in root's user keyring (`zos.primitives.keyring`), which no process can read back
and which a reboot empties, plus each filesystem's own keyring once the key unlocked
it. What the node writes to disk (`<data-dir>/keys.db`, sqlite, mode 0600) is only:
the key's identifier (a hash that names it, as every encrypted directory's policy does),
the owner, and one copy of the key per twin who may unlock, each sealed to that twin
(`zos.identity.datakey.seal_copy`): the node cannot open any of them.

A deployment with a record here and no key in the kernel is *locked*: the engine does
not build it (`locked`), nothing of it is removed, and it stays so until its owner or a
twin it was shared with sends the key again (`zos.node.api_keys`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from zos.identity.datakey import KEY_SIZE
from zos.node.errors import Refused
from zos.primitives import fscrypt, keyring

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    contract_id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL,
    identifier BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    contract_id INTEGER NOT NULL,
    twin INTEGER NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (contract_id, twin)
);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


class KeyStoreError(Refused):
    """A refused key operation."""


class Locked(KeyStoreError):
    def __init__(self, contract_id: int) -> None:
        super().__init__(
            "locked",
            f"deployment {contract_id} is locked: its data key is not on this node since it "
            "restarted; its owner (or a twin it is shared with) must unlock it",
        )


@dataclass(frozen=True)
class Entry:
    contract_id: int
    owner: int
    identifier: bytes
    copies: dict[int, str]  # twin -> its sealed copy of the key


class KeyStore:
    def __init__(self, data_dir: Path) -> None:
        path = data_dir / "keys.db"
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        path.chmod(0o600)
        # Default isolation: each `with self._db:` block is one transaction.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.chmod(0o600)
        # Keyring descriptions are machine-wide: this node's are told apart by its data dir.
        self._tag = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]

    def close(self) -> None:
        self._db.close()

    # --- what is recorded -----------------------------------------------------------------

    def entry(self, contract_id: int) -> Entry | None:
        row = self._db.execute(
            "SELECT owner, identifier FROM keys WHERE contract_id = ?", (contract_id,)
        ).fetchone()
        if row is None:
            return None
        copies = dict(
            self._db.execute(
                "SELECT twin, sealed FROM copies WHERE contract_id = ? ORDER BY twin",
                (contract_id,),
            ).fetchall()
        )
        return Entry(contract_id, row[0], bytes(row[1]), copies)

    def encrypted(self, contract_id: int) -> bool:
        return self.entry(contract_id) is not None

    def description(self, contract_id: int) -> str:
        return f"zos:{self._tag}:{contract_id}"

    def kernel_key(self, contract_id: int) -> fscrypt.KeyringKey | None:
        """The deployment's key as the kernel holds it; None when it has no key here.

        Raises Locked when it is encrypted and the kernel has no key (a reboot)."""
        entry = self.entry(contract_id)
        if entry is None:
            return None
        serial = keyring.find(self.description(contract_id))
        if serial is None:
            raise Locked(contract_id)
        return fscrypt.KeyringKey(serial, entry.identifier)

    def locked(self, contract_id: int) -> bool:
        if not self.encrypted(contract_id):
            return False
        return keyring.find(self.description(contract_id)) is None

    # --- changes ---------------------------------------------------------------------------

    def see_nonce(self, nonce: str, keep_for: float) -> None:
        """Record a key message's nonce; refuse one seen before (a replay)."""
        now = time.time()
        with self._db:
            self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            try:
                self._db.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, now + keep_for))
            except sqlite3.IntegrityError:
                raise KeyStoreError(
                    "replayed", "key: this key message was already used (a replay)"
                ) from None

    def give(
        self, contract_id: int, owner: int, key: bytes, copies: dict[int, str] | None = None
    ) -> bool:
        """Hand the kernel the key of deployment `contract_id`; whether it was locked.

        The first key of a deployment is recorded with `copies`; a later one must be the
        same key (its identifier), or it is refused and nothing changes.
        """
        if len(key) != KEY_SIZE:
            raise KeyStoreError("invalid", f"key: {KEY_SIZE} bytes expected, got {len(key)}")
        identifier = fscrypt.key_identifier(key)
        entry = self.entry(contract_id)
        if entry is not None and entry.identifier != identifier:
            raise KeyStoreError("forbidden", f"key: not the data key of deployment {contract_id}")
        was_locked = entry is None or self.locked(contract_id)
        serial = keyring.add(self.description(contract_id), key)
        try:
            if entry is None:
                with self._db:
                    self._db.execute(
                        "INSERT INTO keys VALUES (?, ?, ?, ?)",
                        (contract_id, owner, identifier, time.time()),
                    )
                    for twin, sealed in (copies or {}).items():
                        self._db.execute(
                            "INSERT OR REPLACE INTO copies VALUES (?, ?, ?)",
                            (contract_id, twin, sealed),
                        )
        except BaseException:
            keyring.invalidate(serial)
            raise
        return was_locked

    def share(self, contract_id: int, twin: int, sealed: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO copies VALUES (?, ?, ?)", (contract_id, twin, sealed)
            )

    def unshare(self, contract_id: int, twin: int) -> bool:
        with self._db:
            cur = self._db.execute(
                "DELETE FROM copies WHERE contract_id = ? AND twin = ?", (contract_id, twin)
            )
        return cur.rowcount > 0

    def forget_all(self) -> None:
        """The node leaves the grid (`zos node wipe`): every key and record of it goes."""
        for description in keyring.descriptions(f"zos:{self._tag}:"):
            keyring.forget(description)
        with self._db:
            self._db.execute("DELETE FROM copies")
            self._db.execute("DELETE FROM keys")

    def forget(self, contract_id: int) -> None:
        """The deployment is gone: its key leaves the kernel and its record the disk."""
        keyring.forget(self.description(contract_id))
        with self._db:
            self._db.execute("DELETE FROM copies WHERE contract_id = ?", (contract_id,))
            self._db.execute("DELETE FROM keys WHERE contract_id = ?", (contract_id,))
