"""The node's crash-safe state: deployments as their owners asked, and every change.

sqlite in WAL mode with synchronous=FULL: a change is on disk when its transaction
returns, and a `kill -9` at any point leaves the last committed state. The store
holds plain JSON (what zos writes for a deployment); the engine owns its meaning.

Deployment states: `active` (should exist), `deleting` (must be taken down; a
restart finishes the job) and `deleted` (kept so `get` and `changes` still answer).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIVE, DELETING, DELETED = "active", "deleting", "deleted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    twin_id INTEGER NOT NULL,
    contract_id INTEGER NOT NULL UNIQUE,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (twin_id, contract_id)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    twin_id INTEGER NOT NULL,
    contract_id INTEGER NOT NULL,
    at REAL NOT NULL,
    workload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_contract ON changes (contract_id, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(Exception):
    pass


class DiskFull(StoreError):
    """The disk under the state database has no room: the change was not made."""


@dataclass(frozen=True)
class Record:
    twin_id: int
    contract_id: int
    state: str
    body: dict[str, Any]
    created: float
    updated: float


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Private from the start: sqlite gives the -wal and -shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        path.chmod(0o600)
        # One connection, used from the event loop's thread; autocommit off, explicit BEGIN.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for suffix in ("-wal", "-shm"):  # left by an older version with the umask's mode
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """All of `statements` or none; DiskFull when the disk has no room for them."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    db.execute(sql, params)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # sqlite may have rolled back already (a full disk)
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise DiskFull("the disk holding the node's state is full") from None
            raise

    @staticmethod
    def _change(twin: int, contract: int, workloads: Iterable[dict[str, Any]], at: float):
        for wl in workloads:
            yield (
                "INSERT INTO changes (twin_id, contract_id, at, workload) VALUES (?, ?, ?, ?)",
                (twin, contract, at, _dumps(wl)),
            )

    def add(
        self,
        twin_id: int,
        contract_id: int,
        body: dict[str, Any],
        changed: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Store a new deployment, recording `changed` workloads in the same transaction."""
        now = time.time()
        if self._row(contract_id) is not None:
            raise StoreError(f"a deployment with contract_id {contract_id} already exists")
        self._tx(
            [
                (
                    "INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?)",
                    (twin_id, contract_id, ACTIVE, _dumps(body), now, now),
                ),
                *self._change(twin_id, contract_id, changed, now),
            ]
        )

    def put(
        self,
        twin_id: int,
        contract_id: int,
        body: dict[str, Any],
        changed: Iterable[dict[str, Any]] = (),
        state: str | None = None,
    ) -> None:
        """Replace a deployment's body (and state), recording `changed` workloads in one go."""
        now = time.time()
        sets, params = "body = ?, updated = ?", [_dumps(body), now]
        if state is not None:
            sets += ", state = ?"
            params.append(state)
        self._tx(
            [
                (
                    f"UPDATE deployments SET {sets} WHERE twin_id = ? AND contract_id = ?",
                    (*params, twin_id, contract_id),
                ),
                *self._change(twin_id, contract_id, changed, now),
            ]
        )

    def _row(self, contract_id: int) -> Record | None:
        row = self._db.execute(
            "SELECT twin_id, contract_id, state, body, created, updated FROM deployments"
            " WHERE contract_id = ?",
            (contract_id,),
        ).fetchone()
        return None if row is None else Record(row[0], row[1], row[2], json.loads(row[3]), *row[4:])

    def get(self, contract_id: int) -> Record | None:
        return self._row(contract_id)

    def list(self, twin_id: int | None = None, states: Iterable[str] = (ACTIVE,)) -> list[Record]:
        wanted = tuple(states)
        sql = "SELECT twin_id, contract_id, state, body, created, updated FROM deployments"
        sql += f" WHERE state IN ({','.join('?' * len(wanted))})"
        params: list[Any] = list(wanted)
        if twin_id is not None:
            sql += " AND twin_id = ?"
            params.append(twin_id)
        rows = self._db.execute(sql + " ORDER BY contract_id", params).fetchall()
        return [Record(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]

    def changes(self, contract_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT workload FROM changes WHERE contract_id = ? ORDER BY seq", (contract_id,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._tx([("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))])
