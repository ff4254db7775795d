"""The `.fl` metadata database (rfs schema) and its checks.

Writing follows rfs exactly (see reference/flist.md), plus one table rfs ignores:
`zos_hardlink(ino, target)` marks a name that is a hard link to another inode; the
link's own inode row also carries the same blocks, so rfs still reads its content.

Reading treats the file as hostile: every row is checked (names, types, parents,
modes, block counts, link targets) before anything uses it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zos.flist.blocks import BLOCK_SIZE, ID_LEN, KEY_LEN, Block
from zos.flist.errors import FlistError

SCHEMA = """
CREATE TABLE IF NOT EXISTS inode (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    name VARCHAR(255),
    size INTEGER,
    uid INTEGER,
    gid INTEGER,
    mode INTEGER,
    rdev INTEGER,
    ctime INTEGER,
    mtime INTEGER
);
CREATE INDEX IF NOT EXISTS parents ON inode (parent);
CREATE INDEX IF NOT EXISTS names ON inode (name);
CREATE TABLE IF NOT EXISTS extra (
    ino INTEGER PRIMARY KEY,
    data VARCHAR(4096)
);
CREATE TABLE IF NOT EXISTS block (
    ino INTEGER,
    id VARCHAR(32),
    key VARCHAR(32)
);
CREATE INDEX IF NOT EXISTS block_ino ON block (ino);
CREATE TABLE IF NOT EXISTS tag (
    key VARCHAR(10) PRIMARY KEY,
    value VARCHAR(255)
);
CREATE TABLE IF NOT EXISTS route (
    start integer,
    end integer,
    url VARCHAR(2048)
);
CREATE TABLE IF NOT EXISTS zos_hardlink (
    ino INTEGER PRIMARY KEY,
    target INTEGER
);
"""

ROOT_INO = 1
MAX_NAME_BYTES = 255
MAX_LINK_TARGET = 4095
# Bounds on a tree (a hostile flist can describe any shape in a few MB): directories
# nested deeper than this, or more names than this, are refused before anything is written.
MAX_DEPTH = 256
MAX_ENTRIES = 500_000
Kind = Literal["dir", "file", "symlink", "fifo"]
KINDS: dict[int, Kind] = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
}
SetuidPolicy = Literal["refuse", "strip"]


def check_name(name: object, where: str) -> str:
    """A single path component: no separators, no dot names, no NUL, at most 255 bytes."""
    if not isinstance(name, str) or not name:
        raise FlistError(f"{where}: name must be a non-empty string")
    if name in (".", ".."):
        raise FlistError(f"{where}: name {name!r} is not allowed ('.' and '..' escape the tree)")
    if "/" in name:
        raise FlistError(f"{where}: name {name!r} contains '/' (absolute or nested names)")
    if "\0" in name:
        raise FlistError(f"{where}: name contains a NUL byte")
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raise FlistError(f"{where}: name is not valid UTF-8") from None
    if len(raw) > MAX_NAME_BYTES:
        raise FlistError(f"{where}: name is longer than {MAX_NAME_BYTES} bytes")
    return name


@dataclass(slots=True)
class Entry:
    """One inode of an flist, checked. `path` is relative to the root ('' for the root)."""

    ino: int
    parent: int
    name: str
    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    ctime: int
    target: str | None = None
    blocks: list[Block] = field(default_factory=list)
    link_to: int | None = None  # hard link: the inode whose file this name shares

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)


@dataclass(frozen=True, slots=True)
class Route:
    start: int
    end: int
    url: str


@dataclass
class Flist:
    """A checked flist: entries with parents before children, tags and routes."""

    entries: list[Entry]
    tags: dict[str, str]
    routes: list[Route]

    @property
    def by_ino(self) -> dict[int, Entry]:
        return {e.ino: e for e in self.entries}

    @property
    def block_count(self) -> int:
        return sum(len(e.blocks) for e in self.entries if e.link_to is None)

    @property
    def unique_blocks(self) -> set[bytes]:
        return {b.id for e in self.entries for b in e.blocks}

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file" and e.link_to is None)


class FlistWriter:
    """Write a new `.fl`; the file appears at `path` only when `close()` succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._tmp.unlink(missing_ok=True)
        self._db = sqlite3.connect(self._tmp)
        self._db.executescript("PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF;" + SCHEMA)

    def inode(
        self,
        parent: int,
        name: str,
        *,
        size: int,
        uid: int,
        gid: int,
        mode: int,
        mtime: int,
        ctime: int | None = None,
        rdev: int = 0,
        target: str | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (parent, name, size, uid, gid, mode, rdev, mtime if ctime is None else ctime, mtime),
        )
        ino = int(cur.lastrowid or 0)
        if target is not None:
            self._db.execute("INSERT INTO extra (ino, data) VALUES (?, ?)", (ino, target))
        return ino

    def blocks(self, ino: int, blocks: list[Block]) -> None:
        self._db.executemany(
            "INSERT INTO block (ino, id, key) VALUES (?, ?, ?)",
            [(ino, b.id, b.key) for b in blocks],
        )

    def hardlink(self, ino: int, target: int) -> None:
        self._db.execute("INSERT INTO zos_hardlink (ino, target) VALUES (?, ?)", (ino, target))

    def tag(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO tag (key, value) VALUES (?, ?)", (key, value))

    def route(self, start: int, end: int, url: str) -> None:
        self._db.execute("INSERT INTO route (start, end, url) VALUES (?, ?, ?)", (start, end, url))

    def close(self) -> None:
        self._db.commit()
        self._db.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._tmp.unlink(missing_ok=True)


def _connect_readonly(path: Path, name: str) -> sqlite3.Connection:
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        raise FlistError(f"{name}: {e.strerror}") from None
    if header != b"SQLite format 3\0":
        raise FlistError(f"{name}: not an flist (not an SQLite database)")
    # immutable: never create a journal or lock file beside an untrusted input.
    uri = "file:" + urllib.parse.quote(str(Path(path).absolute())) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def _int(value: object, where: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise FlistError(f"{where}: must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def read_flist(path: Path, *, setuid: SetuidPolicy = "refuse", name: str | None = None) -> Flist:
    """Open and check an `.fl`; raise FlistError naming the first rule it breaks.

    `name`: what to call the file in errors (default: its path; a server passes the
    name its client knows, never a path of its own)."""
    name = str(path) if name is None else name
    db = _connect_readonly(path, name)
    try:
        return _read(db, setuid)
    except sqlite3.DatabaseError as e:
        raise FlistError(f"{name}: not a valid flist database ({e})") from None
    finally:
        db.close()


def _read(db: sqlite3.Connection, setuid: SetuidPolicy) -> Flist:
    check = db.execute("PRAGMA quick_check").fetchall()
    if check != [("ok",)]:
        raise FlistError(f"database is damaged or truncated: {check[0][0]!s:.200}")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = {"inode", "extra", "block", "tag", "route"} - tables
    if missing:
        raise FlistError(f"not an flist: missing table(s) {', '.join(sorted(missing))}")

    (count,) = db.execute("SELECT COUNT(*) FROM inode").fetchone()
    if count > MAX_ENTRIES:
        raise FlistError(f"the tree has {count} entries, more than the {MAX_ENTRIES} allowed")
    rows = db.execute(
        "SELECT ino, parent, name, size, uid, gid, mode, ctime, mtime FROM inode ORDER BY ino"
    ).fetchall()
    raw: dict[int, tuple] = {}
    children: dict[int, list[int]] = {}
    for row in rows:
        ino = _int(row[0], "inode.ino", 1)
        parent = row[1]
        if ino == ROOT_INO:
            continue
        parent = _int(parent, f"inode {ino}: parent", 1)
        raw[ino] = row
        children.setdefault(parent, []).append(ino)
    root_row = next((r for r in rows if r[0] == ROOT_INO), None)
    if root_row is None:
        raise FlistError("not an flist: no root inode (ino 1)")
    if not isinstance(root_row[6], int) or stat.S_IFMT(root_row[6]) != stat.S_IFDIR:
        raise FlistError("root inode (ino 1) is not a directory")

    targets = dict(db.execute("SELECT ino, data FROM extra").fetchall())
    blocks: dict[int, list[Block]] = {}
    for ino, bid, key in db.execute("SELECT ino, id, key FROM block ORDER BY rowid"):
        if not (isinstance(bid, bytes) and len(bid) == ID_LEN):
            raise FlistError(f"inode {ino}: block id must be a {ID_LEN}-byte blob")
        if not (isinstance(key, bytes) and len(key) == KEY_LEN):
            raise FlistError(f"inode {ino}: block key must be a {KEY_LEN}-byte blob")
        blocks.setdefault(ino, []).append(Block(bid, key))
    links: dict[int, int] = {}
    if "zos_hardlink" in tables:
        links = dict(db.execute("SELECT ino, target FROM zos_hardlink").fetchall())

    entries: list[Entry] = []
    root = _entry(root_row, ROOT_INO, 0, "/", "", targets, blocks, setuid)
    entries.append(root)
    queue = deque([(root, 0)])
    while queue:
        directory, depth = queue.popleft()
        seen: set[str] = set()
        for ino in children.pop(directory.ino, []):
            row = raw.pop(ino)
            name = check_name(row[2], f"inode {ino}")
            if name in seen:
                raise FlistError(f"inode {ino}: duplicate name {name!r} in one directory")
            seen.add(name)
            path = f"{directory.path}/{name}" if directory.path else name
            entry = _entry(row, ino, directory.ino, name, path, targets, blocks, setuid)
            entries.append(entry)
            if entry.kind == "dir":
                if depth + 1 > MAX_DEPTH:
                    raise FlistError(f"{path[:200]}: directories nested more than {MAX_DEPTH} deep")
                queue.append((entry, depth + 1))
    if children:
        parent, inos = next(iter(children.items()))
        if parent in raw:
            kind = "not reachable from the root (a cycle?)"
        elif parent in {e.ino for e in entries} or parent == ROOT_INO:
            kind = "not a directory"
        else:
            kind = "a missing inode"
        raise FlistError(f"inode {inos[0]}: its parent {parent} is {kind}")
    if raw:
        raise FlistError(f"inode {next(iter(raw))}: not reachable from the root")
    _check_links(entries, links)

    tags = {}
    for key, value in db.execute("SELECT key, value FROM tag"):
        if isinstance(key, str) and isinstance(value, str):
            tags[key] = value
    routes = []
    for start, end, url in db.execute("SELECT start, end, url FROM route ORDER BY rowid"):
        start = _int(start, "route.start", 0, 255)
        end = _int(end, "route.end", 0, 255)
        if not isinstance(url, str) or start > end:
            raise FlistError(f"route {start}-{end}: needs start <= end and a url")
        routes.append(Route(start, end, url))
    return Flist(entries, tags, routes)


def _entry(
    row: tuple,
    ino: int,
    parent: int,
    name: str,
    path: str,
    targets: dict,
    blocks: dict[int, list[Block]],
    setuid: SetuidPolicy,
) -> Entry:
    where = f"{path or '/'} (inode {ino})"
    mode = _int(row[6], f"{where}: mode", 0, 0o177777)
    fmt = stat.S_IFMT(mode)
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        raise FlistError(f"{where}: device nodes are not allowed in an flist")
    kind = KINDS.get(fmt)
    if kind is None:
        raise FlistError(f"{where}: file type {oct(fmt)} is not allowed (dir, file, symlink, fifo)")
    # setuid/setgid on anything but a directory lets a container user become its owner.
    if kind != "dir" and mode & (stat.S_ISUID | stat.S_ISGID):
        if setuid == "refuse":
            raise FlistError(f"{where}: setuid/setgid files are not allowed (mode {oct(mode)})")
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    size = _int(row[3], f"{where}: size", 0)
    entry = Entry(
        ino=ino,
        parent=parent,
        name=name,
        path=path,
        kind=kind,
        mode=mode,
        uid=_int(row[4], f"{where}: uid", 0, 2**32 - 1),
        gid=_int(row[5], f"{where}: gid", 0, 2**32 - 1),
        size=size,
        ctime=_int(row[7] or 0, f"{where}: ctime", -(2**62), 2**62),
        mtime=_int(row[8] or 0, f"{where}: mtime", -(2**62), 2**62),
        blocks=blocks.pop(ino, []),
    )
    if kind == "symlink":
        target = targets.get(ino)
        if isinstance(target, bytes):
            try:
                target = target.decode()
            except UnicodeDecodeError:
                target = None
        if not isinstance(target, str) or not target or "\0" in target:
            raise FlistError(f"{where}: symlink has no valid target")
        if len(target.encode()) > MAX_LINK_TARGET:
            raise FlistError(f"{where}: symlink target longer than {MAX_LINK_TARGET} bytes")
        entry.target = target
    if kind != "file" and entry.blocks:
        raise FlistError(f"{where}: only regular files have blocks")
    if kind == "file":
        expected = -(-size // BLOCK_SIZE)
        if len(entry.blocks) != expected:
            raise FlistError(
                f"{where}: size {size} needs {expected} block(s) of {BLOCK_SIZE} bytes,"
                f" the flist lists {len(entry.blocks)}"
            )
    return entry


def _check_links(entries: list[Entry], links: dict) -> None:
    by_ino = {e.ino: e for e in entries}
    for ino, target in links.items():
        link, dest = by_ino.get(ino), by_ino.get(target)
        if link is None or dest is None or link.kind != "file" or dest.kind != "file":
            raise FlistError(f"hard link {ino} -> {target}: both must be regular files")
        if links.get(target) is not None:
            raise FlistError(f"hard link {ino} -> {target}: target is itself a link")
        if dest.size != link.size or dest.blocks != link.blocks:
            raise FlistError(f"hard link {ino} -> {target}: content differs from its target")
        link.link_to = target


def walk_blocks(flist: Flist) -> Iterator[tuple[Entry, int, Block]]:
    """Every (file, block index, block) that has to be fetched to write the tree."""
    for e in flist.entries:
        if e.kind == "file" and e.link_to is None:
            for i, b in enumerate(e.blocks):
                yield e, i, b
