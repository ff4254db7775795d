"""One namespace: its settings, its in-memory index and its data log.

Every rule that decides whether a write is allowed lives here, so the server only
translates between RESP and these calls. Errors carry 0-db's own reply text.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import struct
from array import array
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from zos.primitives.durable import sync_dir
from zos.zdb.datalog import (
    HEADER,
    KIND_DELETE,
    KIND_SET,
    DataLog,
    Entry,
    LoadReport,
    StorageError,
    location,
    split,
)
from zos.zdb.protocol import MAX_KEY

DEFAULT = "default"
MAX_NAME = 128
SEQ_KEY = struct.Struct("<Q")  # seq mode ids, as 0-db's 8-byte seqid_t
CURSOR = struct.Struct("<Q")  # SCAN/KEYCUR/HISTORY cursors: an entry's location (seq: id)
SETTINGS_FILE = "settings.json"
# Seq mode: "NEXT LOCATION", the next id as of a place in the log, written in the data
# directory before compaction drops a file (see _count_id).
ID_MARK_FILE = "next-id"
FLUSHED = ".flushed-data"  # a FLUSH's data directory, on its way out
COMPACT_FLOOR = 16 * 1024 * 1024
# NSINFO names the modes as 0-db does; NSSET takes the short names.
INFO_MODE = {"user": "userkey", "seq": "sequential"}
MODE_FROM_INFO = {v: k for k, v in INFO_MODE.items()}


class ZdbError(Exception):
    """A refused command; the message is the error reply."""


class Slot(NamedTuple):
    loc: int
    length: int
    timestamp: int
    crc: int


@dataclass
class Settings:
    password: str | None = None
    public: bool = True
    maxsize: int = 0  # bytes of live values; 0: no limit
    mode: str = "user"
    worm: bool = False
    lock: bool = False  # read only
    freeze: bool = False  # neither read nor write

    @classmethod
    def from_json(cls, data: dict) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def replace_file(path: Path, data: bytes) -> None:
    """Write a small file whole: after a crash it is the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)  # the rename itself survives a crash


def check_name(name: bytes) -> str:
    """A namespace name as a directory name, or the 0-db refusal."""
    if len(name) > MAX_NAME:
        raise ZdbError("Namespace too long")
    try:
        text = name.decode()
    except UnicodeDecodeError:
        raise ZdbError("This name is not allowed") from None
    if (
        not text
        or text in (".", "..")
        or "/" in text
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
    ):
        raise ZdbError("This name is not allowed")
    return text


class Namespace:
    def __init__(self, name: str, path: Path, file_limit: int, sync: bool = False) -> None:
        self.name = name
        self.path = path
        self.settings = Settings()
        self.sync_writes = sync
        self._file_limit = file_limit
        self.log = DataLog(path / "data", file_limit)
        self.index: dict[bytes, Slot] = {}
        self.order = array("Q")  # every entry's location, in write order
        self.ids = array("Q")  # seq mode: the live ids in order, as SCAN walks them
        self.datasize = 0
        self.next_seq = 0
        self._ids_counted_to = 0  # entries before this location are in next_seq already
        self.report = LoadReport()
        self.deleted = False
        # Bytes per data file that no live key points at (overwritten, deleted, and
        # the deletion records themselves): what compaction would give back.
        self.garbage: dict[int, int] = {}
        self.garbage_total = 0  # kept beside the dict: checked after every write
        self.compactions = 0
        self._compaction_stuck = False

    # -- lifetime ------------------------------------------------------------------

    @classmethod
    def open(
        cls, name: str, path: Path, file_limit: int, sync: bool = False, mode: str = "user"
    ) -> Namespace:
        ns = cls(name, path, file_limit, sync)
        settings = path / SETTINGS_FILE
        if settings.exists():
            ns.settings = Settings.from_json(json.loads(settings.read_text()))
        else:
            path.mkdir(parents=True, exist_ok=True)
            ns.settings.mode = mode
            ns.save_settings()
        shutil.rmtree(path / FLUSHED, ignore_errors=True)  # a FLUSH the crash cut short
        try:
            ns.next_seq, ns._ids_counted_to = ns._read_id_mark()
            ns.report = ns.log.load(ns._replay)
            if ns.settings.mode == "seq":
                ns.ids = array("Q", sorted(SEQ_KEY.unpack(k)[0] for k in ns.index))
        except BaseException:
            ns.log.close()  # the files opened so far; the caller sees the error
            raise
        return ns

    def _replay(self, entry: Entry) -> None:
        self.order.append(entry.loc)
        self._apply(entry)

    def _apply(self, entry: Entry) -> None:
        old = self.index.pop(entry.key, None)
        if old is not None:
            self.datasize -= old.length
            self._dead(old.loc, HEADER.size + len(entry.key) + old.length)
        if entry.kind == KIND_DELETE:
            self._dead(entry.loc, entry.size)
        else:
            self.index[entry.key] = Slot(entry.loc, entry.length, entry.timestamp, entry.crc)
            self.datasize += entry.length
            if self.settings.mode == "seq" and entry.loc >= self._ids_counted_to:
                self._count_id(entry)

    def _count_id(self, entry: Entry) -> None:
        """Seq mode: 0-db spends an id on every new value and on every update too
        (new -> 0, update of 0, next new -> 2), and so do we, live and on replay alike.

        An update is an entry with a `previous`; a new id's entry (or a compaction's
        copy, which has none) names its id. Compaction drops updates and deleted ids
        with their file, so before it does, the next id is written down with the
        place in the log it stands for (ID_MARK_FILE): replay starts from that count
        and counts only the entries after it.
        """
        if entry.previous:
            self.next_seq += 1
        elif len(entry.key) == SEQ_KEY.size:
            self.next_seq = max(self.next_seq, SEQ_KEY.unpack(entry.key)[0] + 1)

    def _dead(self, loc: int, size: int) -> None:
        file_id = split(loc)[0]
        self.garbage[file_id] = self.garbage.get(file_id, 0) + size
        self.garbage_total += size

    # -- compaction ----------------------------------------------------------------

    def compact_if_worth_it(self) -> None:
        """Keep the disk near the live data: once garbage passes half the live bytes
        (and a floor, so small namespaces do not compact on every write), compact
        oldest files first until it does not."""
        floor = min(self.log.file_limit, COMPACT_FLOOR)
        for _ in range(len(self.garbage) + 1):
            waste = self.garbage_total
            if self._compaction_stuck or waste <= max(self.datasize // 2, floor):
                return
            self.compact_oldest()

    def compact_oldest(self) -> None:
        """Copy the oldest file's live entries to the end of the log, then drop it.

        A crash before the drop leaves the copies after the originals, and replay
        lets the later entry win, so no step can lose a key. Cursors into the dropped
        file stop being valid, and a moved key's history starts again at its copy.
        """
        file_id = self.log.oldest
        if file_id == self.log.current:
            self.log.rotate()
        end = bisect.bisect_left(self.order, location(file_id + 1, 0))
        moved = array("Q")
        try:
            for loc in self.order[:end]:
                entry = self.log.header(loc)
                slot = self.index.get(entry.key)
                if entry.kind != KIND_SET or slot is None or slot.loc != loc:
                    continue
                try:
                    value = self._value(entry.key, slot)
                except ZdbError:
                    # Damaged bytes are not copied into a good file: keep this file as
                    # it is (CHECK reports the key) and stop compacting this namespace.
                    self._compaction_stuck = True
                    return
                copy = self.log.append(KIND_SET, entry.key, value, entry.timestamp, 0)
                self.index[entry.key] = Slot(copy.loc, copy.length, copy.timestamp, copy.crc)
                moved.append(copy.loc)
        finally:
            # Copies made so far are live wherever this stops; they sort after all.
            self.order.extend(moved)
        self.log.sync()  # the copies are on disk before the originals go
        if self.settings.mode == "seq":
            self._write_id_mark()  # the ids the file used stay used
        self.log.remove_file(file_id)
        del self.order[:end]
        self.garbage_total -= self.garbage.pop(file_id, 0)
        self.compactions += 1

    def save_settings(self) -> None:
        replace_file(self.path / SETTINGS_FILE, json.dumps(asdict(self.settings)).encode())

    def _write_id_mark(self) -> None:
        self._ids_counted_to = location(self.log.current, self.log.size)
        mark = b"%d %d\n" % (self.next_seq, self._ids_counted_to)
        replace_file(self.log.dir / ID_MARK_FILE, mark)

    def _read_id_mark(self) -> tuple[int, int]:
        path = self.log.dir / ID_MARK_FILE
        try:
            fields = path.read_bytes().split()
        except FileNotFoundError:
            return 0, 0
        if len(fields) != 2 or not all(f.isdigit() and int(f) < 1 << 64 for f in fields):
            raise StorageError(f"{path}: expected NEXT-ID LOCATION")
        return int(fields[0]), int(fields[1])

    def close(self) -> None:
        self.log.close()

    def destroy(self) -> None:
        self.deleted = True
        with contextlib.suppress(OSError):
            self.log.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def flush(self) -> None:
        """Drop every key (FLUSH): the data files go, the settings stay."""
        self.log.close()
        # One rename takes all the data away at once: a crash leaves all of it or none.
        shutil.rmtree(self.path / FLUSHED, ignore_errors=True)
        os.rename(self.path / "data", self.path / FLUSHED)
        shutil.rmtree(self.path / FLUSHED)
        self.log = DataLog(self.path / "data", self._file_limit)
        self.index.clear()
        self.order = array("Q")
        self.ids = array("Q")
        self.datasize = self.next_seq = self._ids_counted_to = 0
        self.garbage.clear()
        self.garbage_total = 0
        self._compaction_stuck = False
        self.report = self.log.load(self._replay)

    @property
    def fresh(self) -> bool:
        return len(self.order) == 0

    # -- access rules --------------------------------------------------------------

    def readable(self) -> None:
        if self.settings.freeze:
            raise ZdbError("Namespace is temporarily frozen (read-write disabled)")

    def writable(self) -> None:
        self.readable()
        if self.settings.lock:
            raise ZdbError("Namespace is temporarily locked (read-only)")

    # -- keys ----------------------------------------------------------------------

    def slot(self, key: bytes) -> Slot | None:
        self.readable()
        return self.index.get(key)

    def get(self, key: bytes) -> bytes | None:
        slot = self.slot(key)
        return None if slot is None else self._value(key, slot)

    def _value(self, key: bytes, slot: Slot) -> bytes:
        try:
            return self.log.value(Entry(slot.loc, KIND_SET, key, slot.length, 0, 0, 0, slot.crc))
        except (StorageError, OSError) as e:
            raise ZdbError(f"Internal Error ({e})") from None

    def set(self, key: bytes, value: bytes, timestamp: int | None = None) -> bytes | None:
        """Store `value`; the key it went under, or None when it was already there."""
        self.writable()
        if len(key) > MAX_KEY:
            raise ZdbError("Key too large")
        seq = self.settings.mode == "seq"
        if seq:
            existing = self.index.get(key) if key else None
            if key and existing is None:
                raise ZdbError("Invalid key, only update authorized")
        else:
            if not key:
                raise ZdbError("Invalid argument, key needed")
            existing = self.index.get(key)
        if existing is not None and self.settings.worm:
            raise ZdbError("Namespace is protected by worm mode")
        limit = self.settings.maxsize
        if limit and self.datasize + len(value) > limit + (existing.length if existing else 0):
            raise ZdbError("No space left on this namespace")
        if (
            existing is not None
            and existing.length == len(value)
            and self._value(key, existing) == value
        ):
            return None  # 0-db writes nothing and answers nil
        if seq and not key:
            key = SEQ_KEY.pack(self.next_seq)
        self._write(KIND_SET, key, value, timestamp, existing)
        if seq and existing is None:
            self.ids.append(SEQ_KEY.unpack(key)[0])  # the highest id yet
        return key

    def delete(self, key: bytes, timestamp: int | None = None) -> None:
        self.writable()
        existing = self.index.get(key)
        if existing is None:
            raise ZdbError("Key not found")
        if self.settings.worm:
            raise ZdbError("Cannot delete a key when namespace is in worm mode")
        self._write(KIND_DELETE, key, b"", timestamp, existing)
        if self.settings.mode == "seq":
            i = bisect.bisect_left(self.ids, SEQ_KEY.unpack(key)[0])
            del self.ids[i]

    def _write(
        self, kind: int, key: bytes, value: bytes, timestamp: int | None, existing: Slot | None
    ) -> None:
        try:
            entry = self.log.append(kind, key, value, timestamp, existing.loc if existing else 0)
            if self.sync_writes:
                self.log.sync()
        except (StorageError, OSError) as e:
            raise ZdbError(f"Cannot write data right now ({e})") from None
        self.order.append(entry.loc)
        self._apply(entry)
        try:
            self.compact_if_worth_it()
        except (StorageError, OSError):
            # The write itself is done; a compaction that failed (disk full) waits.
            self._compaction_stuck = True

    def check(self, key: bytes) -> bool | None:
        """Whether the value still matches its CRC; None for a missing key."""
        slot = self.slot(key)
        if slot is None:
            return None
        return self.log.verify(self.log.header(slot.loc))

    # -- walking -------------------------------------------------------------------

    def cursor(self, key: bytes) -> bytes:
        slot = self.slot(key)
        if slot is None:
            raise ZdbError("Key not found")
        return key if self.settings.mode == "seq" else CURSOR.pack(slot.loc)

    def _position(self, cursor: bytes) -> int:
        """Where an entry's location is, or would be, in write order."""
        if len(cursor) != CURSOR.size:
            raise ZdbError("Invalid key format")
        return bisect.bisect_left(self.order, CURSOR.unpack(cursor)[0])

    def _exact(self, cursor: bytes) -> int:
        i = self._position(cursor)
        if i == len(self.order) or self.order[i] != CURSOR.unpack(cursor)[0]:
            raise ZdbError("Invalid key format")
        return i

    def scan(
        self, cursor: bytes | None, reverse: bool = False, limit: int = 1024
    ) -> tuple[bytes, list[tuple[bytes, int, int]]]:
        """Live keys after (before, if `reverse`) the cursor, in write order (seq: id order)."""
        self.readable()
        if self.settings.mode == "seq":
            return self._scan_ids(cursor, reverse, limit)
        step = -1 if reverse else 1
        if cursor is None:
            i = len(self.order) - 1 if reverse else 0
        else:
            # Locations only grow, so a cursor whose entry compaction moved or dropped
            # still marks the place: the walk goes on from the next entry after it
            # (before it, in reverse). A key moved meanwhile may be seen twice, never
            # missed.
            i = self._position(cursor)
            if reverse:
                i -= 1
            elif i < len(self.order) and self.order[i] == CURSOR.unpack(cursor)[0]:
                i += 1
        found: list[tuple[bytes, int, int]] = []
        last = 0
        while 0 <= i < len(self.order) and len(found) < limit:
            loc = self.order[i]
            entry = self.log.header(loc)
            slot = self.index.get(entry.key)
            if entry.kind == KIND_SET and slot is not None and slot.loc == loc:
                found.append((entry.key, slot.length, slot.timestamp))
                last = loc
            i += step
        if not found:
            raise ZdbError("No more data")
        return CURSOR.pack(last), found

    def _scan_ids(
        self, cursor: bytes | None, reverse: bool, limit: int
    ) -> tuple[bytes, list[tuple[bytes, int, int]]]:
        """Seq mode: the live ids in order, as 0-db walks its index (an updated id keeps
        its place); the cursor is an id, any 8 bytes a place among them."""
        ids = self.ids
        if cursor is None:
            i = len(ids) - 1 if reverse else 0
        elif len(cursor) != CURSOR.size:
            raise ZdbError("Invalid key format")
        elif reverse:
            i = bisect.bisect_left(ids, CURSOR.unpack(cursor)[0]) - 1
        else:
            i = bisect.bisect_right(ids, CURSOR.unpack(cursor)[0])
        page = ids[max(i - limit + 1, 0) : i + 1][::-1] if reverse else ids[i : i + limit]
        if not page:
            raise ZdbError("No more data")
        found = []
        for n in page:
            slot = self.index[SEQ_KEY.pack(n)]
            found.append((SEQ_KEY.pack(n), slot.length, slot.timestamp))
        return SEQ_KEY.pack(page[-1]), found

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        """Live keys starting with `prefix`, in the order they were last written."""
        self.readable()
        return [key for key in self.index if key.startswith(prefix)]

    def history(self, key: bytes, cursor: bytes | None) -> tuple[bytes | None, int, bytes]:
        """One version of `key`: (cursor to the one before it, timestamp, value)."""
        self.readable()
        if cursor is None:
            slot = self.index.get(key)
            if slot is None:
                raise ZdbError("Key not found")
            entry = self.log.header(slot.loc)
        else:
            if len(cursor) != CURSOR.size:
                raise ZdbError("Invalid arguments")
            loc = CURSOR.unpack(cursor)[0]
            if loc == 0:
                raise ZdbError("No more history")
            self._exact(cursor)  # only locations this namespace wrote
            entry = self.log.header(loc)
            if entry.key != key:
                raise ZdbError("Invalid arguments (invalid key)")
        # A deletion record has no value: history goes on from the one it deleted.
        while entry.kind == KIND_DELETE:
            if not entry.previous:
                raise ZdbError("No more history")
            entry = self.log.header(entry.previous)
        before = CURSOR.pack(entry.previous) if entry.previous else None
        return before, entry.timestamp, self.log.value(entry)

    # -- figures -------------------------------------------------------------------

    @property
    def entries(self) -> int:
        return len(self.index)

    def info(self, admin: bool) -> str:
        s = self.settings
        lines = [
            "# namespace",
            f"name: {self.name}",
            f"entries: {self.entries}",
            f"public: {'yes' if s.public else 'no'}",
            f"worm: {'yes' if s.worm else 'no'}",
            f"locked: {'yes' if s.lock else 'no'}",
            f"frozen: {'yes' if s.freeze else 'no'}",
            f"password: {'yes' if s.password else 'no'}",
            f"data_size_bytes: {self.datasize}",
            f"data_size_mb: {self.datasize / 1048576:.2f}",
            f"data_limits_bytes: {s.maxsize}",
            f"data_disk_bytes: {self.log.disk_bytes()}",
            f"data_garbage_bytes: {self.garbage_total}",
            f"data_compactions: {self.compactions}",
            f"next_internal_id: 0x{self.next_seq:08x}",
            f"mode: {INFO_MODE[s.mode]}",
            f"stats_data_faults: {self.report.faults}",
            f"stats_data_torn_bytes: {self.report.cut_bytes}",
        ]
        if s.maxsize:
            lines.append(f"space_available: {max(s.maxsize - self.datasize, 0)}")
        free = shutil.disk_usage(self.path)
        lines.append(f"data_disk_freespace_bytes: {free.free}")
        lines.append(f"data_disk_freespace_mb: {free.free / 1048576:.2f}")
        if admin:
            lines.append(f"data_path: {self.log.dir}")
            lines.append(f"data_current_id: {self.log.current}")
            lines.append(f"data_current_offset: {self.log.size}")
        return "\n".join(lines) + "\n"
