"""The append-only data files of one namespace.

A file is an 8-byte magic followed by entries; an entry is a 28-byte header, the
key and the value. Header fields, little endian:

    crc u32 | kind u8 | keylen u8 | reserved u16 | length u32 | timestamp u32
    | previous u64 | back u32

`crc` is CRC32C (initial value 0, no final XOR, as 0-db computes it) over the rest
of the header, the key and the value, so a torn or garbled entry is found.
`previous` is the location of the key's entry before this one (0: none), which
HISTORY walks; `back` is the offset of the entry before this one in the same file
(0: the first), so the log can be read backwards and every header checked against
its neighbour. A location is `file id << 32 | offset`.

Nothing is ever rewritten in place; compaction copies the live entries of the oldest
file to the end of the newest and then removes the old file whole. On open, the
newest file is read in full and cut at the first entry that does not check (a write
torn by a crash); what was cut is kept beside it in a `.torn` file, never thrown away.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c

from zos.primitives.durable import sync_dir
from zos.zdb.protocol import MAX_KEY, MAX_VALUE

log = logging.getLogger(__name__)

MAGIC = b"ZOSZDB1\n"
HEADER = struct.Struct("<IBBHIIQI")
KIND_SET = 1
KIND_DELETE = 2
DEFAULT_FILE_LIMIT = 256 * 1024 * 1024
MIN_FILE_LIMIT = 4096
# Offsets are 32 bits; an entry larger than the limit goes alone in a fresh file.
MAX_FILE_LIMIT = (1 << 32) - 1 - HEADER.size - MAX_KEY - MAX_VALUE
_FILE = re.compile(r"^d(\d{8})\.zdb$")


def crc32c_raw(data: bytes, crc: int = 0) -> int:
    """CRC32C with initial value 0 and no final XOR (0-db's variant).

    The library computes the standard form (both inverted); inverting around it
    gives the raw register.
    """
    return crc32c.crc32c(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def location(file_id: int, offset: int) -> int:
    return file_id << 32 | offset


def split(loc: int) -> tuple[int, int]:
    return loc >> 32, loc & 0xFFFFFFFF


class StorageError(Exception):
    """The disk refused a write or holds something that is not ours."""


@dataclass(frozen=True, slots=True)
class Entry:
    loc: int
    kind: int
    key: bytes
    length: int
    timestamp: int
    previous: int
    back: int
    crc: int

    @property
    def size(self) -> int:
        return HEADER.size + len(self.key) + self.length


@dataclass
class LoadReport:
    entries: int = 0
    files: int = 0
    cut_bytes: int = 0  # torn tail moved aside
    faults: int = 0  # older files whose tail could not be read


class DataLog:
    def __init__(self, directory: Path, file_limit: int = DEFAULT_FILE_LIMIT) -> None:
        self.dir = directory
        if not MIN_FILE_LIMIT <= file_limit <= MAX_FILE_LIMIT:
            raise ValueError(f"data file limit must be {MIN_FILE_LIMIT}..{MAX_FILE_LIMIT} bytes")
        self.file_limit = file_limit
        self._fds: dict[int, int] = {}
        self._last: dict[int, int] = {}  # file id -> offset of its last entry (0: none)
        self.current = 0
        self.size = 0  # of the current file
        self.bytes_written = 0

    # -- opening -------------------------------------------------------------------

    def load(self, visit: Callable[[Entry], None]) -> LoadReport:
        """Open every file, hand each entry to `visit` in write order."""
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = sorted(int(m[1]) for p in self.dir.iterdir() if (m := _FILE.match(p.name)))
        report = LoadReport(files=len(ids))
        for i, file_id in enumerate(ids):
            newest = i == len(ids) - 1
            fd = os.open(self._path(file_id), os.O_RDWR | os.O_CLOEXEC)
            self._fds[file_id] = fd
            for entry in self._read_file(file_id, fd, newest, report):
                report.entries += 1
                visit(entry)
        if not ids:
            self._create(0)
        else:
            self.current = ids[-1]
            self.size = os.fstat(self._fds[self.current]).st_size
        return report

    def _read_file(
        self, file_id: int, fd: int, newest: bool, report: LoadReport
    ) -> Iterator[Entry]:
        size = os.fstat(fd).st_size
        if size < len(MAGIC) and newest and os.pread(fd, size, 0) == MAGIC[:size]:
            os.ftruncate(fd, 0)  # created, then the crash came before its magic was down
            os.pwrite(fd, MAGIC, 0)
            os.fsync(fd)
            self._last[file_id] = 0
            return
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            raise StorageError(f"{self._path(file_id)}: not a zdb data file")
        offset, back = len(MAGIC), 0
        while offset < size:
            entry = self._parse_at(file_id, fd, offset, size, back, verify=newest)
            if entry is None:
                if newest:
                    self._cut(file_id, fd, offset, size, report)
                else:
                    report.faults += 1
                    log.error(
                        "%s: unreadable entry at offset %d; %d bytes after it are not indexed",
                        self._path(file_id),
                        offset,
                        size - offset,
                    )
                break
            yield entry
            back, offset = offset, offset + entry.size
        self._last[file_id] = back

    def _parse_at(
        self, file_id: int, fd: int, offset: int, size: int, back: int, verify: bool
    ) -> Entry | None:
        raw = os.pread(fd, HEADER.size + MAX_KEY, offset)
        if len(raw) < HEADER.size:
            return None
        crc, kind, keylen, reserved, length, ts, previous, prev_off = HEADER.unpack_from(raw)
        end = offset + HEADER.size + keylen + length
        if (
            kind not in (KIND_SET, KIND_DELETE)
            or reserved
            or keylen == 0
            or length > MAX_VALUE
            or prev_off != back
            or end > size
        ):
            return None
        key = raw[HEADER.size : HEADER.size + keylen]
        if verify:
            value = os.pread(fd, length, offset + HEADER.size + keylen)
            if crc32c_raw(value, crc32c_raw(raw[4 : HEADER.size] + key)) != crc:
                return None
        return Entry(location(file_id, offset), kind, key, length, ts, previous, prev_off, crc)

    def _cut(self, file_id: int, fd: int, offset: int, size: int, report: LoadReport) -> None:
        tail = os.pread(fd, size - offset, offset)
        aside = self._path(file_id).with_suffix(f".torn-{int(time.time())}")
        aside.write_bytes(tail)
        os.ftruncate(fd, offset)
        os.fsync(fd)
        report.cut_bytes += len(tail)
        log.warning(
            "%s: cut %d bytes of a torn write at offset %d (kept in %s)",
            self._path(file_id),
            len(tail),
            offset,
            aside.name,
        )

    # -- writing -------------------------------------------------------------------

    def append(
        self, kind: int, key: bytes, value: bytes, timestamp: int | None, previous: int
    ) -> Entry:
        ts = int(time.time()) if timestamp is None else timestamp
        back = self._last.get(self.current, 0)
        need = HEADER.size + len(key) + len(value)
        if self.size + need > self.file_limit and self.size > len(MAGIC):
            self.rotate()
            back = 0
        head = HEADER.pack(0, kind, len(key), 0, len(value), ts, previous, back)
        crc = crc32c_raw(value, crc32c_raw(head[4:] + key))
        data = struct.pack("<I", crc) + head[4:] + key + value
        offset, fd = self.size, self._fds[self.current]
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, memoryview(data)[written:], offset + written)
        except OSError as e:
            # Leave no partial entry behind: the file ends where it ended before.
            try:
                os.ftruncate(fd, offset)
            except OSError:
                log.exception("could not cut a failed write; the next open will")
            raise StorageError(f"write failed: {e.strerror or e}") from None
        self.size += len(data)
        self.bytes_written += len(data)
        self._last[self.current] = offset
        return Entry(location(self.current, offset), kind, key, len(value), ts, previous, back, crc)

    def rotate(self) -> None:
        """Further writes go to a new file."""
        self._create(self.current + 1)

    @property
    def oldest(self) -> int:
        return min(self._fds)

    def remove_file(self, file_id: int) -> None:
        """Drop a whole file (compaction copied what was still live out of it)."""
        if file_id == self.current:
            raise StorageError("the file being written cannot be removed")
        os.close(self._fds.pop(file_id))
        self._last.pop(file_id, None)
        self._path(file_id).unlink()
        sync_dir(self.dir)

    def _create(self, file_id: int) -> None:
        fd = os.open(self._path(file_id), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.pwrite(fd, MAGIC, 0)
        if self.current in self._fds:
            os.fdatasync(self._fds[self.current])  # the old file is complete before the new
        os.fsync(fd)
        sync_dir(self.dir)  # the new name survives a crash too
        self._fds[file_id] = fd
        self._last[file_id] = 0
        self.current, self.size = file_id, len(MAGIC)

    def sync(self) -> None:
        if self.current in self._fds:
            os.fdatasync(self._fds[self.current])

    # -- reading -------------------------------------------------------------------

    def header(self, loc: int) -> Entry:
        file_id, offset = split(loc)
        fd = self._fds.get(file_id)
        if fd is None:
            raise StorageError(f"no data file {file_id}")
        raw = os.pread(fd, HEADER.size + MAX_KEY, offset)
        if len(raw) < HEADER.size:
            raise StorageError(f"no entry at {file_id}:{offset}")
        crc, kind, keylen, _, length, ts, previous, back = HEADER.unpack_from(raw)
        key = raw[HEADER.size : HEADER.size + keylen]
        return Entry(loc, kind, key, length, ts, previous, back, crc)

    def value(self, entry: Entry) -> bytes:
        """The entry's value, checked against its CRC: damaged bytes are never served."""
        value = self._checked(entry)
        if value is None:
            file_id, offset = split(entry.loc)
            raise StorageError(f"data at {file_id}:{offset} is damaged (CRC mismatch)")
        return value

    def verify(self, entry: Entry) -> bool:
        """Whether the entry's bytes on disk still match its CRC."""
        return self._checked(entry) is not None

    def _checked(self, entry: Entry) -> bytes | None:
        file_id, offset = split(entry.loc)
        fd = self._fds.get(file_id)
        if fd is None:
            return None
        keylen = len(entry.key)
        raw = os.pread(fd, HEADER.size + keylen + entry.length, offset)
        if len(raw) != HEADER.size + keylen + entry.length:
            return None
        view = memoryview(raw)
        crc = crc32c_raw(view[HEADER.size + keylen :], crc32c_raw(view[4 : HEADER.size + keylen]))
        if crc != entry.crc or struct.unpack_from("<I", raw)[0] != crc:
            return None
        return raw[HEADER.size + keylen :]

    # -- lifetime ------------------------------------------------------------------

    def disk_bytes(self) -> int:
        return sum(os.fstat(fd).st_size for fd in self._fds.values())

    def close(self) -> None:
        try:
            self.sync()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def _path(self, file_id: int) -> Path:
        return self.dir / f"d{file_id:08d}.zdb"
