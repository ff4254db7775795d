"""Differential check: the same commands against the real 0-db and `zos zdb serve`.

Dev only (not collected by pytest; CI has no 0-db; the binary a release build, as
deployed: `make release`, since a debug build stops on STOP). Start both servers on free
ports in temporary directories, run every sequence below on both, and print each
reply that differs, side by side. Replies that legitimately differ (TIME, INFO and
NSINFO text, cursor bytes, nonces, timestamps) are compared by shape only.

    python tests/zdb/compare_with_0db.py [--zdb /tmp/0db/bin/zdb] [-k name] [-v]

Exit status 1 when a difference was found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from zdb_helpers import Err, read_any  # beside this script

ADMIN = "compare-admin"
REAL, OURS = 0, 1
SIDES = ("0-db", "zos")

# -- replies ---------------------------------------------------------------------------


CLOSED = "<connection closed>"
TIMEOUT = "<no reply>"


def encode(*args: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def sha1(nonce: str, password: str) -> bytes:
    return hashlib.sha1(f"{nonce}:{password}".encode()).hexdigest().encode()


# -- normalisers: what of a reply must match ---------------------------------------------


def exact(r: object) -> object:
    return r


def shape(r: object) -> object:
    """Only the type (and for arrays, the length and the shape of each item)."""
    if isinstance(r, list):
        return [shape(x) for x in r]
    if isinstance(r, Err):
        return r  # an error must still say the same
    return type(r).__name__


def kind(r: object) -> object:
    """Errors by kind only."""
    return "error" if isinstance(r, Err) else r


def scan_keys(r: object) -> object:
    """SCAN/RSCAN: the keys and sizes, not the cursor or the timestamps."""
    if isinstance(r, list) and len(r) == 2 and isinstance(r[1], list):
        return ["cursor", [(item[0], item[1]) for item in r[1]]]
    return r


def history(r: object) -> object:
    """HISTORY: whether there is a cursor, and the value; not the time."""
    if isinstance(r, list) and len(r) == 3:
        return ["cursor" if r[0] is not None else None, "timestamp", r[2]]
    return r


NSINFO_FIELDS = ("name", "entries", "public", "worm", "locked", "password")
NSINFO_FIELDS += ("data_size_bytes", "data_limits_bytes", "mode", "space_available")


def nsinfo(r: object) -> object:
    """NSINFO: the fields both servers print with the same meaning."""
    if not isinstance(r, bytes):
        return r
    found = dict(re.findall(r"^(\w+): (.*)$", r.decode(errors="replace"), re.M))
    return {k: found.get(k) for k in NSINFO_FIELDS}


def status_text(r: object) -> object:
    """A nonce: only that it is a status line of 16 hex digits or so."""
    return "nonce" if isinstance(r, str) and re.fullmatch(r"[0-9a-f]{8,64}", r) else r


# -- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def start_servers(
    zdb: str, tmp: Path, protect: bool = False
) -> tuple[list[subprocess.Popen], list[int]]:
    extra = ["--protect"] if protect else []
    ports = [free_port(), free_port()]
    real = subprocess.Popen(
        [
            zdb,
            "--listen",
            "127.0.0.1",
            "--port",
            str(ports[REAL]),
            "--data",
            str(tmp / "real" / "data"),
            "--index",
            str(tmp / "real" / "index"),
            "--admin",
            ADMIN,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ours = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zos.cli",
            "zdb",
            "serve",
            "--data",
            str(tmp / "ours"),
            "--listen",
            f"127.0.0.1:{ports[OURS]}",
            *extra,
        ],
        env=dict(os.environ, ZDB_ADMIN=ADMIN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = [real, ours]
    deadline = time.monotonic() + 20
    try:
        for proc, port in zip(procs, ports, strict=True):
            wait_port(port, proc, deadline)
    except Exception:
        stop_servers(procs)
        raise
    return procs, ports


def stop_servers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- one connection to each server ----------------------------------------------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed = False

    async def send(self, data: bytes, replies: int = 1, wait: float = 3.0) -> list[object]:
        """Send raw bytes; read `replies` replies (fewer if the server hangs up)."""
        out: list[object] = []
        if self.closed:
            return [CLOSED]
        try:
            self.writer.write(data)
            await self.writer.drain()
            for _ in range(replies):
                out.append(await asyncio.wait_for(read_any(self.reader), wait))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = True
            out.append(CLOSED)
        except TimeoutError:
            out.append(TIMEOUT)
        return out

    async def hung_up(self, wait: float = 1.0) -> bool:
        """Whether the server closed this connection (after its last reply)."""
        if self.closed:
            return True
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        self.closed = not data
        return self.closed

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


Args = tuple[bytes, ...] | Callable[[int], tuple[bytes, ...]]


@dataclass
class Run:
    """One sequence, run on both servers step by step."""

    name: str
    ports: list[int]
    verbose: bool
    conns: dict[object, list[Conn]] = field(default_factory=dict)
    diffs: list[str] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)
    steps: int = 0
    ns: bytes = b""

    async def conn(self, n: object = 0) -> list[Conn]:
        if n not in self.conns:
            pair = []
            for port in self.ports:
                r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 25)
                pair.append(Conn(r, w))
            self.conns[n] = pair
        return self.conns[n]

    async def close(self) -> None:
        for pair in self.conns.values():
            for c in pair:
                await c.close()
        self.conns.clear()

    def compare(
        self, what: str, got: list[object], norm: Callable[[object], object], known: str = ""
    ) -> None:
        """Record a difference; `known`: why it is deliberate (listed apart, not counted)."""
        self.steps += 1
        a, b = norm(got[REAL]), norm(got[OURS])
        if self.verbose:
            print(f"  {what}\n      0-db: {short(got[REAL])}\n      zos:  {short(got[OURS])}")
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):  # show only the fields that differ
                a = {k: v for k, v in a.items() if b.get(k) != v}
                b = {k: b.get(k) for k in a}
            elif norm is exact:
                a, b = got[REAL], got[OURS]
            text = f"{self.name}: {what}\n      0-db: {short(a)}\n      zos:  {short(b)}"
            if known:
                self.deviations.append(f"{text}\n      why:  {known}")
            else:
                self.diffs.append(text)

    async def cmd(
        self,
        *args: bytes | Callable[[int], tuple[bytes, ...]],
        conn: object = 0,
        norm=exact,
        known: str = "",
    ) -> list[object]:
        """One command on both servers; each side's reply, after comparing them."""
        pair = await self.conn(conn)
        got = []
        for side in (REAL, OURS):
            argv = args[0](side) if callable(args[0]) else args
            got.append((await pair[side].send(encode(*argv)))[0])
        argv = args[0](OURS) if callable(args[0]) else args
        self.compare(f"[{conn}] {describe(argv)}", got, norm, known)
        return got

    async def raw(
        self,
        data: bytes,
        replies: int = 1,
        conn: object = 0,
        norm=None,
        wait: float = 3.0,
        known: str = "",
    ) -> list[list[object]]:
        """Raw bytes; by default only the kind of each reply counts (the texts of
        protocol errors differ on purpose: ours say what was wrong)."""
        norm = norm or kind
        pair = await self.conn(conn)
        got = [await pair[side].send(data, replies, wait) for side in (REAL, OURS)]
        self.compare(f"[{conn}] raw {short(data)}", got, lambda r: [norm(x) for x in r], known)
        return got

    async def hangup(self, conn: object = 0, known: str = "") -> None:
        pair = await self.conn(conn)
        got = [await c.hung_up() for c in pair]
        self.compare(f"[{conn}] connection closed by the server?", got, exact, known)

    async def admin(self, conn: object = "admin") -> None:
        await self.cmd(b"AUTH", ADMIN.encode(), conn=conn)

    async def scan_all(self, reverse: bool = False, conn: object = 0, known: str = "") -> None:
        """Every key SCAN (or RSCAN) walks through, in order, on each side."""
        pair = await self.conn(conn)
        cmd = b"RSCAN" if reverse else b"SCAN"
        walked: list[object] = []
        for side in (REAL, OURS):
            keys: list[object] = []
            cursor: bytes | None = None
            for _ in range(100_000):
                argv = (cmd,) if cursor is None else (cmd, cursor)
                r = (await pair[side].send(encode(*argv)))[0]
                if isinstance(r, list) and len(r) == 2 and isinstance(r[1], list):
                    keys.extend((item[0], item[1]) for item in r[1])
                    cursor = r[0]
                    continue
                keys.append(r)  # the final error (or anything unexpected)
                break
            walked.append(keys)
        self.compare(f"[{conn}] {cmd.decode()} walk to the end", walked, exact, known)


def short(r: object, limit: int = 160) -> str:
    text = repr(r)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


def describe(argv: tuple[bytes, ...]) -> str:
    return " ".join(short(a, 40) for a in argv)


# -- deliberate deviations (each one is listed, not counted) -----------------------------

KSCAN_RELEASE = (
    "0-db's release builds answer 'Command disabled in release code'; we answer as its"
    " debug builds do (test_zdb_commands.py::test_kscan_lists_the_live_keys_with_a_prefix)"
)
WAIT_BLOCKS = (
    "deviation (commands.py WAIT): the connection waits for WAIT's answer; 0-db answers"
    " what the client sends meanwhile first, and WAIT's answer after them, out of order"
)
STRICT_TS = "deliberate: a timestamp must be digits (0-db's atoll() makes junk 0)"
CURSOR_PLACE = (
    "deviation (namespace.py): any 8-byte cursor is a place in write order, so a walk"
    " survives compaction; 0-db checks that it names an index entry"
)
FLUSH_BUG = "0-db bug: its FLUSH answers +OK and keeps every key (v2.0.7); ours empties"
FLUSH_RO = "deliberate: a read-only client (no password) cannot FLUSH; 0-db lets it"
NONCE = (
    "deliberate: a challenge answers once; 0-db keeps it after a SELECT SECURE (so a"
    " sniffed answer can be replayed until the next challenge)"
)
PRIVATE = "deliberate: a private namespace is not shown to a client outside it"
STRICT_PROTOCOL = (
    "deliberate: a malformed request ends the connection; 0-db answers an error and then"
    " keeps reading the same bytes (stuck: every later request gets the same error)"
)
STRICT_CRLF = "deliberate: a bulk string must end in CRLF; 0-db takes any two bytes"
BIG_VALUE = (
    "deliberate: a value over 8 MiB is read through and refused, the connection goes on;"
    " 0-db drops the connection"
)
NAMES = (
    "deliberate: namespace names are UTF-8 without control characters (they are"
    " directory names; 0-db takes any bytes and cuts at NUL)"
)

# -- the sequences ---------------------------------------------------------------------------

Sequence = Callable[[Run], Awaitable[None]]
SEQUENCES: list[tuple[str, Sequence, bool, bool]] = []


def seq(fresh: bool = True, protect: bool = False) -> Callable[[Sequence], Sequence]:
    """Register a sequence; `fresh`: its connection 0 starts in a new namespace of its own;
    `protect`: it runs against servers started with --protect."""

    def add(fn: Sequence) -> Sequence:
        SEQUENCES.append((fn.__name__, fn, fresh, protect))
        return fn

    return add


@seq(fresh=False)
async def ping_time_info(r: Run) -> None:
    await r.cmd(b"PING")
    await r.cmd(b"PING", b"extra")
    await r.cmd(b"ping")
    await r.cmd(b"TIME", norm=shape)
    await r.cmd(b"INFO", norm=shape)
    await r.cmd(b"NOSUCHCOMMAND")
    await r.cmd(b"DBSIZE", norm=shape)


@seq()
async def set_get(r: Run) -> None:
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"SET", b"k", b"v")  # identical: nil
    await r.cmd(b"SET", b"k", b"v2")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"GET", b"missing")
    await r.cmd(b"DBSIZE")
    await r.cmd(b"setx", b"k2", b"v")
    await r.cmd(b"get", b"k2")


@seq()
async def set_arguments(r: Run) -> None:
    await r.cmd(b"SET")
    await r.cmd(b"SET", b"k")
    await r.cmd(b"SET", b"", b"v")
    await r.cmd(b"SET", b"k", b"v", b"1", b"2")
    await r.cmd(b"SET", b"k", b"v", b"1234")  # timestamp: admin only
    await r.cmd(b"GET")
    await r.cmd(b"GET", b"")
    await r.cmd(b"GET", b"a", b"b")


@seq()
async def key_sizes(r: Run) -> None:
    await r.cmd(b"SET", b"k" * 255, b"v")
    await r.cmd(b"GET", b"k" * 255)
    await r.cmd(b"SET", b"k" * 256, b"v")
    await r.cmd(b"GET", b"k" * 256)
    await r.cmd(b"DEL", b"k" * 256)
    await r.cmd(b"EXISTS", b"k" * 256)
    await r.cmd(b"MGET", b"a", b"k" * 256)


@seq()
async def empty_and_binary_values(r: Run) -> None:
    await r.cmd(b"SET", b"e", b"")
    await r.cmd(b"GET", b"e")
    await r.cmd(b"LENGTH", b"e")
    await r.cmd(b"SET", b"e", b"")
    await r.cmd(b"SET", b"\r\n\x00key", b"\x00\r\nvalue\r\n\xff")
    await r.cmd(b"GET", b"\r\n\x00key")
    await r.cmd(b"EXISTS", b"\r\n\x00key")


@seq()
async def big_value(r: Run) -> None:
    await r.cmd(b"SET", b"big", b"x" * (8 * 1024 * 1024))
    await r.cmd(b"LENGTH", b"big")
    await r.cmd(b"GET", b"big", norm=lambda v: hashlib.sha1(v).hexdigest() if v else v)


@seq()
async def mget(r: Run) -> None:
    await r.cmd(b"SET", b"a", b"1")
    await r.cmd(b"SET", b"c", b"3")
    await r.cmd(b"MGET", b"a", b"b", b"c")
    await r.cmd(b"MGET")
    await r.cmd(b"MGET", b"")
    await r.cmd(b"DEL", b"a")
    await r.cmd(b"MGET", b"a", b"c")


@seq()
async def delete(r: Run) -> None:
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"DEL", b"never")
    await r.cmd(b"DEL")
    await r.cmd(b"DEL", b"")
    await r.cmd(b"DEL", b"k", b"1234")  # timestamp: admin only
    await r.cmd(b"DBSIZE")
    await r.cmd(b"SET", b"k", b"again")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"DBSIZE")


@seq()
async def exists_length_keytime_check(r: Run) -> None:
    await r.cmd(b"SET", b"k", b"value")
    for c in (b"EXISTS", b"LENGTH", b"CHECK"):
        await r.cmd(c, b"k")
        await r.cmd(c, b"missing")
        await r.cmd(c)
        await r.cmd(c, b"")
    await r.cmd(b"KEYTIME", b"k", norm=lambda v: "int" if isinstance(v, int) else v)
    await r.cmd(b"KEYTIME", b"missing")
    await r.cmd(b"DEL", b"k")
    for c in (b"EXISTS", b"LENGTH", b"CHECK", b"KEYTIME"):
        await r.cmd(c, b"k")


@seq()
async def admin_timestamps(r: Run) -> None:
    await r.admin(conn=0)
    await r.cmd(b"SET", b"k", b"v", b"1234")
    await r.cmd(b"KEYTIME", b"k")
    await r.cmd(b"SET", b"k", b"w", b"notanumber", known=STRICT_TS)
    await r.cmd(b"DEL", b"k", b"5678")
    await r.cmd(b"GET", b"k")


@seq()
async def scan_empty(r: Run) -> None:
    await r.cmd(b"SCAN")
    await r.cmd(b"RSCAN")
    await r.cmd(b"SCAN", b"12345678", known=CURSOR_PLACE)
    await r.cmd(b"SCAN", b"short")
    await r.cmd(b"SCAN", b"a", b"b", known="deliberate: extra arguments are refused")


@seq()
async def scan_walk(r: Run) -> None:
    for i in range(300):
        await r.cmd(b"SET", b"key%03d" % i, b"v%d" % i)
    for i in range(0, 300, 7):
        await r.cmd(b"SET", b"key%03d" % i, b"new%d" % i)  # moves to the end
    for i in range(0, 300, 11):
        await r.cmd(b"DEL", b"key%03d" % i)
    await r.scan_all()
    await r.scan_all(reverse=True)


@seq()
async def scan_first_page(r: Run) -> None:
    for i in range(5):
        await r.cmd(b"SET", b"k%d" % i, b"v")
    await r.cmd(b"SET", b"k1", b"changed")
    await r.cmd(b"DEL", b"k3")
    await r.cmd(b"SCAN", norm=scan_keys)
    await r.cmd(b"RSCAN", norm=scan_keys)


@seq()
async def keycur_scan(r: Run) -> None:
    for i in range(6):
        await r.cmd(b"SET", b"k%d" % i, b"v")
    cur = await r.cmd(b"KEYCUR", b"k2", norm=shape)
    await r.cmd(lambda side: (b"SCAN", cur[side]), norm=scan_keys)
    await r.cmd(lambda side: (b"RSCAN", cur[side]), norm=scan_keys)
    await r.cmd(b"KEYCUR", b"missing")
    await r.cmd(b"KEYCUR")
    last = await r.cmd(b"KEYCUR", b"k5", norm=shape)
    await r.cmd(lambda side: (b"SCAN", last[side]), norm=scan_keys)
    first = await r.cmd(b"KEYCUR", b"k0", norm=shape)
    await r.cmd(lambda side: (b"RSCAN", first[side]), norm=scan_keys)


@seq()
async def keycur_of_overwritten_and_deleted(r: Run) -> None:
    await r.cmd(b"SET", b"a", b"1")
    await r.cmd(b"SET", b"b", b"1")
    old = await r.cmd(b"KEYCUR", b"a", norm=shape)
    await r.cmd(b"SET", b"a", b"2")
    await r.cmd(b"SET", b"c", b"1")
    await r.cmd(lambda side: (b"SCAN", old[side]), norm=scan_keys)
    await r.cmd(b"DEL", b"b")
    await r.cmd(b"KEYCUR", b"b", norm=shape)


@seq()
async def history_walk(r: Run) -> None:
    await r.cmd(b"SET", b"h", b"one")
    await r.cmd(b"SET", b"h", b"two")
    await r.cmd(b"SET", b"h", b"three")
    got = await r.cmd(b"HISTORY", b"h", norm=history)
    for _ in range(3):
        prev = got
        got = await r.cmd(
            lambda side, p=prev: (b"HISTORY", b"h", p[side][0] or b"\0" * 8), norm=history
        )
    await r.cmd(b"HISTORY", b"h", b"\0" * 8)
    await r.cmd(b"HISTORY", b"missing")
    await r.cmd(b"HISTORY")
    await r.cmd(b"HISTORY", b"h", b"short")
    await r.cmd(b"HISTORY", b"h", b"x", b"y")


@seq()
async def history_wrong_key(r: Run) -> None:
    await r.cmd(b"SET", b"a", b"1")
    await r.cmd(b"SET", b"a", b"2")
    got = await r.cmd(b"HISTORY", b"a", norm=history)
    await r.cmd(b"SET", b"b", b"1")
    await r.cmd(lambda side: (b"HISTORY", b"b", got[side][0]), norm=history)


@seq()
async def history_after_delete(r: Run) -> None:
    await r.cmd(b"SET", b"h", b"one")
    await r.cmd(b"DEL", b"h")
    await r.cmd(b"HISTORY", b"h", norm=history)
    await r.cmd(b"SET", b"h", b"two")
    got = await r.cmd(b"HISTORY", b"h", norm=history)
    await r.cmd(lambda side: (b"HISTORY", b"h", got[side][0] or b"\0" * 8), norm=history)


@seq()
async def dbsize(r: Run) -> None:
    await r.cmd(b"DBSIZE")
    for i in range(10):
        await r.cmd(b"SET", b"k%d" % i, b"v")
    await r.cmd(b"SET", b"k1", b"other")
    await r.cmd(b"DEL", b"k2")
    await r.cmd(b"DBSIZE")
    await r.cmd(b"DBSIZE", b"extra")


@seq()
async def seq_mode(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-seq", conn="admin")
    await r.cmd(b"NSSET", b"cmp-seq", b"mode", b"seq", conn="admin")
    await r.cmd(b"SELECT", b"cmp-seq")
    for i in range(3):
        await r.cmd(b"SET", b"", b"value%d" % i)
    await r.cmd(b"GET", (1).to_bytes(8, "little"))
    await r.cmd(b"SET", (1).to_bytes(8, "little"), b"updated")
    await r.cmd(b"GET", (1).to_bytes(8, "little"))
    await r.cmd(b"SET", (1).to_bytes(8, "little"), b"updated")
    await r.cmd(b"SET", (99).to_bytes(8, "little"), b"nope")
    await r.cmd(b"SET", b"abc", b"nope")
    await r.cmd(b"DBSIZE")
    await r.cmd(b"NSINFO", b"cmp-seq", norm=nsinfo)
    await r.cmd(b"NSSET", b"cmp-seq", b"mode", b"user", conn="admin")
    await r.cmd(b"DEL", (0).to_bytes(8, "little"))
    await r.cmd(b"GET", (0).to_bytes(8, "little"))
    await r.cmd(b"SET", b"", b"after delete")
    await r.scan_all()
    await r.scan_all(reverse=True)
    await r.cmd(b"SELECT", b"default")
    await r.cmd(b"NSDEL", b"cmp-seq", conn="admin")


@seq()
async def seq_ids_as_0db_tests_them(r: Run) -> None:
    """0-db's own suite: new -> 0, overwrite of 0 -> 0, next new -> 2."""
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"SET", b"", b"world")
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"worldnewdata")
    await r.cmd(b"SET", b"", b"helloworld")
    await r.cmd(b"GET", (1).to_bytes(8, "little"))
    await r.cmd(b"SET", (1).to_bytes(8, "little"), b"spent by the update")
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"worldnewdata")  # unchanged: nil
    await r.cmd(b"SET", b"", b"after an unchanged one")
    await r.cmd(b"DEL", (3).to_bytes(8, "little"))
    await r.cmd(b"SET", b"", b"after a delete")
    await r.cmd(b"MGET", *[i.to_bytes(8, "little") for i in range(6)])
    await r.cmd(b"DBSIZE")
    await r.scan_all()
    cur = await r.cmd(b"KEYCUR", (2).to_bytes(8, "little"), norm=shape)
    await r.cmd(lambda side: (b"SCAN", cur[side]), norm=scan_keys)
    await r.cmd(lambda side: (b"RSCAN", cur[side]), norm=scan_keys)


@seq()
async def mode_change(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"mode", b"bogus", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"mode", b"user", conn="admin")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"mode", b"user", conn="admin")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")


@seq()
async def maxsize(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"maxsize", b"100", conn="admin")
    await r.cmd(b"SET", b"a", b"x" * 60)
    await r.cmd(b"SET", b"b", b"x" * 41)
    await r.cmd(b"SET", b"b", b"x" * 40)
    await r.cmd(b"SET", b"c", b"x")
    await r.cmd(b"SET", b"a", b"y" * 50)
    await r.cmd(b"SET", b"c", b"x" * 10)
    await r.cmd(b"SET", b"c", b"x" * 11)
    await r.cmd(b"DEL", b"a")
    await r.cmd(b"SET", b"c", b"x" * 60)
    await r.cmd(b"NSINFO", r.ns, norm=nsinfo)
    await r.cmd(
        b"NSSET",
        r.ns,
        b"maxsize",
        b"abc",
        conn="admin",
        known="deliberate: a size must be digits (0-db's atoll() makes junk 0: no limit)",
    )
    await r.cmd(b"NSSET", r.ns, b"maxsize", b"0", conn="admin")
    await r.cmd(b"SET", b"d", b"x" * 1000)


@seq()
async def worm(r: Run) -> None:
    await r.admin()
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"worm", b"1", conn="admin")
    await r.cmd(b"SET", b"new", b"v")
    await r.cmd(b"SET", b"k", b"other")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"DEL", b"missing")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"NSSET", r.ns, b"worm", b"0", conn="admin")
    await r.cmd(b"DEL", b"k")


@seq()
async def lock_and_freeze(r: Run) -> None:
    await r.admin()
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"lock", b"1", conn="admin")
    await r.cmd(b"SET", b"k", b"w")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"EXISTS", b"k")
    await r.cmd(b"SCAN", norm=scan_keys)
    await r.cmd(b"NSSET", r.ns, b"freeze", b"1", conn="admin")
    for c in (b"GET", b"EXISTS", b"LENGTH", b"CHECK", b"KEYTIME", b"KEYCUR", b"HISTORY"):
        await r.cmd(c, b"k")
    await r.cmd(b"MGET", b"k")
    await r.cmd(b"SCAN")
    await r.cmd(b"RSCAN")
    await r.cmd(b"SET", b"k", b"w")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"DBSIZE")
    await r.cmd(b"NSSET", r.ns, b"freeze", b"0", conn="admin")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"SET", b"k", b"w")


@seq()
async def lock_then_freeze_off(r: Run) -> None:
    """0-db keeps one lock state: freeze 0 also ends a lock."""
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"lock", b"1", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"freeze", b"1", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"freeze", b"0", conn="admin")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"lock", b"1", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"freeze", b"0", conn="admin")
    await r.cmd(b"SET", b"k", b"w")
    await r.cmd(b"NSINFO", r.ns, norm=nsinfo)


@seq()
async def lock_default(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", b"default", b"lock", b"1", conn="admin")
    await r.cmd(b"SET", b"k", b"v", conn="admin")
    await r.cmd(b"NSSET", b"default", b"lock", b"0", conn="admin")
    await r.cmd(b"NSSET", b"default", b"password", b"x", conn="admin")
    await r.cmd(b"NSSET", b"default", b"maxsize", b"10", conn="admin")
    await r.cmd(b"NSSET", b"default", b"public", b"0", conn="admin")
    await r.cmd(b"NSSET", b"default", b"worm", b"1", conn="admin")


@seq()
async def flush(r: Run) -> None:
    await r.admin()
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"FLUSH")  # public: refused
    await r.cmd(b"NSSET", r.ns, b"password", b"pw", conn="admin")
    await r.cmd(b"FLUSH")  # still public
    await r.cmd(b"NSSET", r.ns, b"public", b"0", conn="admin")
    await r.cmd(b"FLUSH")
    await r.cmd(b"GET", b"k", known=FLUSH_BUG)
    await r.cmd(b"DBSIZE", known=FLUSH_BUG)
    await r.cmd(b"SCAN", known=FLUSH_BUG)
    await r.cmd(b"SET", b"k2", b"v")


@seq()
async def flush_read_only(r: Run) -> None:
    """A client that came in without the password cannot flush a private namespace."""
    await r.admin()
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"password", b"pw", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"public", b"0", conn="admin")
    await r.cmd(b"SELECT", r.ns, conn="other")
    await r.cmd(b"NSSET", r.ns, b"public", b"1", conn="admin")
    await r.cmd(b"SELECT", r.ns, conn="ro")
    await r.cmd(b"NSSET", r.ns, b"public", b"0", conn="admin")
    await r.cmd(b"FLUSH", conn="ro", known=FLUSH_RO)
    await r.cmd(b"GET", b"k")


@seq(fresh=False)
async def flush_default(r: Run) -> None:
    await r.cmd(b"FLUSH")


@seq(fresh=False)
async def namespaces_admin(r: Run) -> None:
    await r.cmd(b"NSNEW", b"cmp-a")
    await r.cmd(b"NSDEL", b"cmp-a")
    await r.cmd(b"NSSET", b"cmp-a", b"public", b"0")
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-a", conn="admin")
    await r.cmd(b"NSNEW", b"cmp-a", conn="admin")
    await r.cmd(b"NSNEW", b"default", conn="admin")
    await r.cmd(b"NSNEW", conn="admin")
    await r.cmd(b"NSNEW", b"", conn="admin")
    await r.cmd(b"NSNEW", b"..", conn="admin")
    await r.cmd(b"NSNEW", b".", conn="admin")
    await r.cmd(b"NSNEW", b"a/b", conn="admin")
    await r.cmd(b"NSNEW", b"n" * 129, conn="admin")
    await r.cmd(b"NSNEW", b"x", b"y", conn="admin")
    await r.cmd(b"NSINFO", b"cmp-a", norm=nsinfo)
    await r.cmd(b"NSINFO", b"nope")
    await r.cmd(b"NSINFO")
    await r.cmd(b"NSSET", b"cmp-a", b"bogus", b"1", conn="admin")
    await r.cmd(b"NSSET", b"nope", b"public", b"1", conn="admin")
    await r.cmd(b"NSSET", b"cmp-a", b"public", b"x" * 64, conn="admin")
    await r.cmd(b"NSSET", b"cmp-a", b"public", conn="admin")
    await r.cmd(b"NSSET", b"cmp-a", b"password", b"", conn="admin")
    await r.cmd(b"NSDEL", b"default", conn="admin")
    await r.cmd(b"NSDEL", b"nope", conn="admin")
    await r.cmd(b"NSDEL", conn="admin")
    await r.cmd(b"SELECT", b"cmp-a", conn="admin")
    await r.cmd(b"NSDEL", b"cmp-a", conn="admin")
    await r.cmd(b"SELECT", b"default", conn="admin")
    await r.cmd(b"NSDEL", b"cmp-a", conn="admin")
    await r.cmd(b"NSINFO", b"cmp-a")


@seq(fresh=False)
async def nsdel_kicks_clients(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-gone", conn="admin")
    await r.cmd(b"SELECT", b"cmp-gone")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSDEL", b"cmp-gone", conn="admin")
    await r.cmd(b"GET", b"k")
    await r.hangup()


@seq(fresh=False)
async def select_rules(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-sel", conn="admin")
    await r.cmd(b"SELECT")
    await r.cmd(b"SELECT", b"nope")
    await r.cmd(b"SELECT", b"cmp-sel")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", b"cmp-sel", b"password", b"pw", conn="admin")
    await r.cmd(b"SELECT", b"cmp-sel", conn=1)  # public with a password: read only
    await r.cmd(b"GET", b"k", conn=1)
    await r.cmd(b"SET", b"k", b"w", conn=1)
    await r.cmd(b"DEL", b"k", conn=1)
    await r.cmd(b"SELECT", b"cmp-sel", b"wrong", conn=2)
    await r.cmd(b"SELECT", b"cmp-sel", b"pw", conn=2)
    await r.cmd(b"SET", b"k", b"w", conn=2)
    await r.cmd(b"SELECT", b"cmp-sel", b"pw", b"x", conn=2)
    await r.cmd(b"SELECT", b"cmp-sel", b"SECURE", b"x" * 40, conn=2)
    await r.cmd(b"SELECT", b"cmp-sel", b"a", b"b", b"c", conn=2)
    await r.cmd(b"SELECT", b"cmp-sel", b"p" * 256, conn=2)
    await r.cmd(b"NSSET", b"cmp-sel", b"public", b"0", conn="admin")
    await r.cmd(b"SELECT", b"cmp-sel", conn=3)
    await r.cmd(b"SELECT", b"cmp-sel", b"pw", conn=3)
    await r.cmd(b"GET", b"k", conn=3)
    await r.cmd(b"NSSET", b"cmp-sel", b"password", b"*", conn="admin")
    await r.cmd(b"SELECT", b"cmp-sel", conn=4)
    await r.cmd(b"SET", b"k", b"x", conn=4)
    await r.cmd(b"SELECT", b"cmp-sel", b"anything", conn=4)
    await r.cmd(b"SELECT", b"default", conn=4)
    for c in (0, 1, 2, 3, 4):
        await r.cmd(b"SELECT", b"default", conn=c)
    await r.cmd(b"NSDEL", b"cmp-sel", conn="admin")


@seq(fresh=False)
async def select_secure(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-sec", conn="admin")
    await r.cmd(b"NSSET", b"cmp-sec", b"password", b"pw", conn="admin")
    await r.cmd(b"NSSET", b"cmp-sec", b"public", b"0", conn="admin")
    await r.cmd(b"SELECT", b"cmp-sec", b"SECURE", b"0" * 40)
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text)
    await r.cmd(b"SELECT", b"cmp-sec", b"SECURE", b"short")
    await r.cmd(lambda side: (b"SELECT", b"cmp-sec", b"SECURE", sha1(nonce[side], "pw")))
    await r.cmd(b"SELECT", b"cmp-sec", b"OTHER", b"0" * 40)
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text)
    await r.cmd(b"SELECT", b"cmp-sec", b"SECURE", b"0" * 40)
    await r.cmd(
        lambda side: (b"SELECT", b"cmp-sec", b"SECURE", sha1(nonce[side], "pw")), known=NONCE
    )
    await r.cmd(b"SELECT", b"default")
    await r.cmd(b"NSDEL", b"cmp-sec", conn="admin")


@seq(fresh=False)
async def auth(r: Run) -> None:
    await r.cmd(b"AUTH")
    await r.cmd(b"AUTH", b"wrong")
    await r.cmd(b"AUTH", b"p" * 129)
    await r.cmd(b"AUTH", b"a", b"b", b"c")
    await r.cmd(b"AUTH", b"PLAIN", b"x")
    await r.cmd(b"AUTH", b"SECURE", b"0" * 40)
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text)
    await r.cmd(b"AUTH", b"SECURE", b"short")
    await r.cmd(lambda side: (b"AUTH", b"SECURE", sha1(nonce[side], ADMIN)))
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text)
    await r.cmd(b"AUTH", b"SECURE", b"0" * 40)
    await r.cmd(lambda side: (b"AUTH", b"SECURE", sha1(nonce[side], ADMIN)))
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text, conn=1)
    await r.cmd(lambda side: (b"AUTH", b"SECURE", sha1(nonce[side], ADMIN)), conn=1)
    await r.cmd(lambda side: (b"AUTH", b"SECURE", sha1(nonce[side], ADMIN)), conn=1)
    await r.cmd(b"AUTH", ADMIN.encode(), conn=2)
    await r.cmd(b"NSNEW", b"cmp-auth", conn=2)
    await r.cmd(b"NSDEL", b"cmp-auth", conn=2)


@seq(fresh=False)
async def nslist(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", b"cmp-list-pub", conn="admin")
    await r.cmd(b"NSNEW", b"cmp-list-priv", conn="admin")
    await r.cmd(b"NSSET", b"cmp-list-priv", b"password", b"pw", conn="admin")
    await r.cmd(b"NSSET", b"cmp-list-priv", b"public", b"0", conn="admin")
    await r.cmd(
        b"NSLIST", norm=lambda v: sorted(n for n in v if n.startswith(b"cmp-list")), known=PRIVATE
    )
    await r.cmd(b"NSLIST", conn="admin", norm=lambda v: sorted(n for n in v if b"list" in n))
    await r.cmd(b"NSINFO", b"cmp-list-priv", norm=nsinfo, known=PRIVATE)
    await r.cmd(
        b"NSLIST", b"extra", norm=lambda v: sorted(n for n in v if b"list" in n), known=PRIVATE
    )
    await r.cmd(b"NSDEL", b"cmp-list-pub", conn="admin")
    await r.cmd(b"NSDEL", b"cmp-list-priv", conn="admin")


@seq()
async def tenants_apart(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSNEW", r.ns + b"-b", conn="admin")
    await r.cmd(b"SELECT", r.ns + b"-b", conn=1)
    await r.cmd(b"SET", b"same", b"from a")
    await r.cmd(b"SET", b"same", b"from b", conn=1)
    await r.cmd(b"GET", b"same")
    await r.cmd(b"GET", b"same", conn=1)
    await r.cmd(b"DEL", b"same", conn=1)
    await r.cmd(b"GET", b"same")
    await r.cmd(b"SCAN", norm=scan_keys, conn=1)
    await r.cmd(b"SELECT", b"default", conn=1)
    await r.cmd(b"NSDEL", r.ns + b"-b", conn="admin")


@seq()
async def mget_many(r: Run) -> None:
    for i in range(0, 1023, 3):
        await r.cmd(b"SET", b"m%d" % i, b"v%d" % i)
    await r.cmd(b"MGET", *[b"m%d" % i for i in range(1023)])


@seq()
async def overwrite_sizes(r: Run) -> None:
    await r.cmd(b"SET", b"k", b"short")
    await r.cmd(b"SET", b"k", b"a much longer value")
    await r.cmd(b"LENGTH", b"k")
    await r.cmd(b"SET", b"k", b"")
    await r.cmd(b"LENGTH", b"k")
    await r.cmd(b"CHECK", b"k")
    await r.cmd(b"SET", b"k", b"short")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"DBSIZE")


@seq()
async def large_scan(r: Run) -> None:
    pair = await r.conn()
    for c in pair:  # pipelined: 2500 writes in one go
        await c.send(
            b"".join(encode(b"SET", b"s%05d" % i, b"x" * (i % 50)) for i in range(2500)), 2500
        )
    await r.cmd(b"DEL", b"s00010")
    await r.cmd(b"SET", b"s00020", b"moved")
    await r.scan_all()
    await r.scan_all(reverse=True)
    await r.cmd(b"DBSIZE")


@seq()
async def seq_mode_worm_and_history(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"SET", b"", b"first")
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"second")
    got = await r.cmd(b"HISTORY", (0).to_bytes(8, "little"), norm=history)
    await r.cmd(lambda side: (b"HISTORY", (0).to_bytes(8, "little"), got[side][0]), norm=history)
    await r.cmd(b"NSSET", r.ns, b"worm", b"1", conn="admin")
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"third")
    await r.cmd(b"SET", b"", b"new one")
    await r.cmd(b"DEL", (0).to_bytes(8, "little"))


@seq()
async def seq_mode_odd_keys(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"SET", b"", b"a")
    await r.cmd(b"SET", b"", b"b")
    await r.cmd(b"GET", b"\0\0\0\0")
    await r.cmd(b"GET", (0).to_bytes(8, "little") + b"x")
    await r.cmd(b"EXISTS", (1).to_bytes(8, "little"))
    await r.cmd(b"DEL", (7).to_bytes(8, "little"))
    await r.cmd(b"DEL", (0).to_bytes(8, "little"))
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"back")
    await r.cmd(b"GET", (0).to_bytes(8, "little"))
    await r.cmd(b"EXISTS", (0).to_bytes(8, "little"))
    await r.cmd(b"MGET", (0).to_bytes(8, "little"), (1).to_bytes(8, "little"), b"")
    await r.cmd(b"DBSIZE")


@seq()
async def seq_mode_maxsize(r: Run) -> None:
    await r.admin()
    await r.cmd(b"NSSET", r.ns, b"mode", b"seq", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"maxsize", b"10", conn="admin")
    await r.cmd(b"SET", b"", b"12345")
    await r.cmd(b"SET", b"", b"123456")
    await r.cmd(b"SET", (0).to_bytes(8, "little"), b"1234567890")
    await r.cmd(b"SET", b"", b"")


@seq(fresh=False)
async def stop(r: Run) -> None:
    await r.cmd(b"STOP")
    await r.cmd(b"STOP", b"now")
    await r.admin(conn=0)
    await r.cmd(b"STOP")
    await r.cmd(b"PING")


def kscan_keys(r: object) -> object:
    """KSCAN: the keys as a set (0-db lists them in hash order)."""
    if isinstance(r, list) and len(r) == 2 and isinstance(r[1], list):
        return [r[0], sorted(r[1])]
    return r


@seq()
async def kscan(r: Run) -> None:
    for key in (b"hello", b"help", b"he", b"abc"):
        await r.cmd(b"SET", key, b"v")
    await r.cmd(b"DEL", b"help")
    await r.cmd(b"KSCAN", b"h", norm=kscan_keys, known=KSCAN_RELEASE)
    await r.cmd(b"KSCAN", b"help", known=KSCAN_RELEASE)
    await r.cmd(b"KSCAN", known=KSCAN_RELEASE)
    await r.cmd(b"KSCAN", b"", known=KSCAN_RELEASE)
    await r.cmd(b"KSCAN", b"h", b"e", known=KSCAN_RELEASE)


@seq()
async def reload(r: Run) -> None:
    for i in range(20):
        await r.cmd(b"SET", b"k%d" % i, b"v%d" % i)
    await r.cmd(b"DEL", b"k3")
    await r.cmd(b"SET", b"k4", b"new four")
    await r.cmd(b"RELOAD", r.ns)  # not admin
    await r.admin()
    await r.cmd(b"RELOAD", r.ns, conn="admin")
    await r.cmd(b"GET", b"k4")
    await r.cmd(b"GET", b"k3")
    await r.cmd(b"DBSIZE")
    await r.scan_all()
    await r.cmd(b"SET", b"after", b"reload")
    await r.cmd(b"RELOAD", b"default", conn="admin")
    await r.cmd(b"RELOAD", b"cmp-no-such-namespace", conn="admin")
    await r.cmd(b"RELOAD", b"n" * 129, conn="admin")
    await r.cmd(b"RELOAD", conn="admin")
    await r.cmd(b"RELOAD", r.ns, b"OOPS", conn="admin")
    await r.cmd(b"RELOAD", b"", conn="admin")


async def wait_woken(r: Run, watch: bytes, *then: bytes) -> None:
    """Connection 0 WAITs on `watch`; connection 1 runs `then`; what 0 is answered."""
    waiters = await r.conn(0)
    for c in waiters:
        c.writer.write(encode(b"WAIT", watch, b"2000"))
        await c.writer.drain()
    await asyncio.sleep(0.2)  # both servers hold the WAIT by now
    await r.cmd(*then, conn=1)
    got = [await asyncio.wait_for(read_any(c.reader), 5) for c in waiters]
    r.compare(f"[0] WAIT {watch.decode()}, then [1] {describe(then)}", got, exact)


@seq()
async def wait(r: Run) -> None:
    await r.cmd(b"WAIT")
    await r.cmd(b"WAIT", b"PING", b"100", b"more")
    await r.cmd(b"WAIT", b"nonexisting")
    await r.cmd(b"WAIT", b"PING", b"99")
    await r.cmd(b"WAIT", b"PING", b"1800001")
    await r.cmd(b"WAIT", b"PING", b"abc")
    await r.cmd(b"WAIT", b"PING", b"1" * 17)
    await r.cmd(b"WAIT", b"PING", b"100")
    await wait_woken(r, b"SET", b"SET", b"k", b"v")  # [1] is in default: not heard
    await r.cmd(b"SELECT", r.ns, conn=1)
    await wait_woken(r, b"SET", b"SET", b"k", b"v")
    await wait_woken(r, b"set", b"SET", b"k", b"w")
    await wait_woken(r, b"SET", b"SETX", b"k", b"x")  # a command of its own: not heard
    await wait_woken(r, b"*", b"GET", b"k")
    await wait_woken(r, b"*", b"DEL", b"missing")
    await r.raw(encode(b"WAIT", b"PING", b"100") + encode(b"PING"), replies=2, known=WAIT_BLOCKS)


@seq()
async def lowercase_commands(r: Run) -> None:
    await r.cmd(b"set", b"k", b"v")
    await r.cmd(b"Get", b"k")
    await r.cmd(b"eXiStS", b"k")
    await r.cmd(b"del", b"k")
    await r.cmd(b"dbsize")


@seq()
async def password_change_while_inside(r: Run) -> None:
    await r.admin()
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"NSSET", r.ns, b"password", b"pw", conn="admin")
    await r.cmd(b"NSSET", r.ns, b"public", b"0", conn="admin")
    await r.cmd(b"GET", b"k")  # already in: stays in
    await r.cmd(b"SET", b"k", b"w")
    await r.cmd(b"SELECT", r.ns)
    await r.cmd(b"SELECT", r.ns, b"pw")
    await r.cmd(b"NSSET", r.ns, b"password", b"*", conn="admin")
    await r.cmd(b"SELECT", r.ns, conn=1)
    await r.cmd(b"GET", b"k", conn=1)


@seq()
async def public_namespace_info(r: Run) -> None:
    await r.cmd(b"NSINFO", r.ns, norm=nsinfo)
    await r.cmd(b"NSINFO", r.ns, norm=nsinfo, conn=1)
    await r.cmd(b"NSINFO", b"default", norm=nsinfo, conn=1)


@seq()
async def admin_delete_timestamp_history(r: Run) -> None:
    await r.admin(conn=0)
    await r.cmd(b"SET", b"k", b"one", b"1000")
    await r.cmd(b"SET", b"k", b"two", b"2000")
    await r.cmd(b"HISTORY", b"k", norm=history)
    await r.cmd(b"DEL", b"k", b"3000")
    await r.cmd(b"KEYTIME", b"k")
    await r.cmd(b"SET", b"k", b"three", b"4000")
    got = await r.cmd(b"HISTORY", b"k", norm=history)
    await r.cmd(lambda side: (b"HISTORY", b"k", got[side][0] or b"\0" * 8), norm=history)


@seq()
async def exists_after_readd(r: Run) -> None:
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"EXISTS", b"k")
    await r.cmd(b"GET", b"k")
    await r.cmd(b"SCAN", norm=scan_keys)
    await r.cmd(b"DBSIZE")


@seq(fresh=False)
async def select_default_and_back(r: Run) -> None:
    await r.cmd(b"SELECT", b"default")
    await r.cmd(b"SELECT", b"DEFAULT")
    await r.cmd(b"SELECT", b"default", b"ignored")
    await r.cmd(b"SELECT", b"n" * 129)


PROTECT_INFO = (
    "cosmetic: with --protect NSINFO default says 'password: no' (the admin password"
    " guards it but is not stored in the namespace's settings)"
)
# Arguments that name nothing: no namespace, password, timestamp or cursor.
JUNK = [b"\xff\xfe", b"\x00" * 8, b"k" * 300, b"", b"zz"]
ARGUMENT_COMMANDS = [
    b"PING", b"TIME", b"AUTH", b"SET", b"GET", b"MGET", b"DEL", b"EXISTS", b"CHECK",
    b"SCAN", b"RSCAN", b"KEYCUR", b"LENGTH", b"KEYTIME", b"HISTORY", b"DBSIZE",
    b"NSNEW", b"NSDEL", b"NSSET", b"NSINFO", b"SELECT", b"FLUSH", b"RELOAD", b"KSCAN",
    b"STOP",
]  # fmt: skip


async def junk_arguments(r: Run, conn: object) -> None:
    for name in ARGUMENT_COMMANDS:
        for count in range(5):
            args = [JUNK[(count + i) % len(JUNK)] for i in range(count)]
            # 0-db cuts a name at NUL: it creates (and deletes) "" where we refuse.
            known = NAMES if name in (b"NSNEW", b"NSDEL") else ""
            await r.cmd(name, *args, conn=conn, norm=kind_of_junk, known=known)


def kind_of_junk(r: object) -> object:
    """A junk command: what matters is that both refuse it, or both take it."""
    return "error" if isinstance(r, Err) else shape(r)


@seq()
async def junk_arguments_user(r: Run) -> None:
    await junk_arguments(r, 0)


@seq()
async def junk_arguments_admin(r: Run) -> None:
    await r.admin(conn=0)
    await junk_arguments(r, 0)


ADMIN_WRITES_DEFAULT = (
    "deliberate: with --protect an AUTHed admin may write in default without the"
    " password; 0-db wants SELECT default <admin password> from admins too"
)


@seq(fresh=False, protect=True)
async def protect_default(r: Run) -> None:
    await r.cmd(b"GET", b"k")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"DEL", b"k")
    await r.cmd(b"SELECT", b"default")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"SELECT", b"default", b"wrong")
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"SELECT", b"default", ADMIN.encode())
    await r.cmd(b"SET", b"k", b"v")
    await r.cmd(b"GET", b"k", conn=1)
    await r.cmd(b"NSINFO", b"default", norm=nsinfo, conn=1, known=PROTECT_INFO)
    await r.cmd(b"AUTH", ADMIN.encode(), conn=1)
    await r.cmd(b"SET", b"k2", b"v", conn=1, known=ADMIN_WRITES_DEFAULT)
    await r.cmd(b"SELECT", b"default", conn=1)
    await r.cmd(b"SET", b"k3", b"v", conn=1, known=ADMIN_WRITES_DEFAULT)
    await r.cmd(b"FLUSH", conn=1)
    await r.cmd(b"NSNEW", b"prot-ns", conn=1)
    await r.cmd(b"SELECT", b"prot-ns", conn=2)
    await r.cmd(b"SET", b"k", b"v", conn=2)
    await r.cmd(b"SELECT", b"default", conn=2)
    await r.cmd(b"SET", b"k", b"v", conn=2)
    await r.cmd(b"NSDEL", b"prot-ns", conn=1)


@seq(fresh=False, protect=True)
async def protect_select_secure(r: Run) -> None:
    nonce = await r.cmd(b"AUTH", b"SECURE", b"CHALLENGE", norm=status_text)
    await r.cmd(lambda side: (b"SELECT", b"default", b"SECURE", sha1(nonce[side], ADMIN)))
    await r.cmd(b"SET", b"s", b"v")
    await r.cmd(b"DEL", b"s")


# -- hostile bytes ---------------------------------------------------------------------------


HANGUP = None  # after the error the server must close the connection

# name: (bytes, then) with `then` HANGUP, or a PING on the same connection whose reply
# must match ("") or is a known deviation (its reason).
MALFORMED: dict[str, tuple[bytes, str | None]] = {
    "raw_inline": (b"PING\r\n", HANGUP),
    "raw_garbage": (b"\x00\xff garbage\r\n", HANGUP),
    "raw_claim_100mib": (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$104857600\r\nxxxx", HANGUP),
    "raw_zero_args": (b"*0\r\n", STRICT_PROTOCOL),
    "raw_negative_count": (b"*-1\r\n", ""),
    "raw_too_many_args": (encode(b"MGET", *[b"k"] * 1024), STRICT_PROTOCOL),
    "raw_non_digit_length": (b"*1\r\n$abc\r\nPING\r\n", STRICT_PROTOCOL),
    "raw_negative_length": (b"*1\r\n$-5\r\nPING\r\n", ""),
    "raw_not_bulk": (b"*1\r\n:4\r\nPING\r\n", STRICT_PROTOCOL),
}


def malformed(name: str, data: bytes, then: str | None) -> None:
    async def run(r: Run) -> None:
        await r.raw(data)
        if then is HANGUP:
            await r.hangup()
        else:
            await r.raw(encode(b"PING"), known=then)

    SEQUENCES.append((name, run, False, False))


for _name, (_data, _then) in MALFORMED.items():
    malformed(_name, _data, _then)


@seq(fresh=False)
async def raw_1024_args(r: Run) -> None:
    await r.raw(encode(*([b"MGET"] + [b"k"] * 1023)), norm=lambda v: shape(v))


@seq(fresh=False)
async def raw_value_too_big(r: Run) -> None:
    big = 8 * 1024 * 1024 + 1
    await r.raw(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % big + b"x" * big + b"\r\n", known=BIG_VALUE
    )
    await r.raw(encode(b"PING"), known=BIG_VALUE)


@seq(fresh=False)
async def raw_bulk_without_crlf(r: Run) -> None:
    await r.raw(b"*1\r\n$4\r\nPINGxx" + encode(b"PING"), replies=2, wait=1, known=STRICT_CRLF)


@seq(fresh=False)
async def raw_pipeline(r: Run) -> None:
    data = b"".join(encode(b"SET", b"p%d" % i, b"v%d" % i) for i in range(2000))
    data += b"".join(encode(b"GET", b"p%d" % i) for i in range(2000))
    await r.raw(data, replies=4000)


@seq(fresh=False)
async def raw_split_writes(r: Run) -> None:
    pair = await r.conn()
    data = encode(b"SET", b"split", b"value")
    for c in pair:
        for i in range(len(data)):
            c.writer.write(data[i : i + 1])
            await c.writer.drain()
    got = [await read_any(c.reader) for c in pair]
    r.compare("SET written one byte at a time", got, exact)


@seq(fresh=False)
async def namespace_names(r: Run) -> None:
    await r.admin()
    for name in (b"\xff\xfe", b"tab\tname", b"new\nline", b"sp ace", b"\x00nul", b"caf\xc3\xa9"):
        await r.cmd(b"NSNEW", name, conn="admin", known=NAMES)
        await r.cmd(b"SELECT", name, known=NAMES)
        await r.cmd(b"SELECT", b"default")
        await r.cmd(b"NSDEL", name, conn="admin", known=NAMES)


# -- running -----------------------------------------------------------------------------------


async def run_all(ports: list[int], only: str | None, verbose: bool, protect: bool) -> int:
    total_diffs, total_known, total_steps, total_sequences = 0, 0, 0, 0
    for i, (name, fn, fresh, protected) in enumerate(SEQUENCES):
        if (only and only not in name) or protected != protect:
            continue
        total_sequences += 1
        run = Run(name, ports, verbose)
        if verbose:
            print(f"== {name}")
        try:
            if fresh:
                run.ns = b"cmp%d" % i
                pair = await run.conn("setup")
                for c in pair:
                    for argv in ((b"AUTH", ADMIN.encode()), (b"NSNEW", run.ns)):
                        await c.send(encode(*argv))
                for c in await run.conn(0):
                    await c.send(encode(b"SELECT", run.ns))
            await fn(run)
        except Exception as e:  # a broken sequence is a finding too
            run.diffs.append(f"{name}: sequence failed: {type(e).__name__}: {e}")
        finally:
            await run.close()
        total_steps += run.steps
        for d in run.diffs:
            print(f"DIFF {d}")
        for d in run.deviations:
            print(f"KNOWN {d}")
        total_diffs += len(run.diffs)
        total_known += len(run.deviations)
        # Both servers must still be there after every sequence.
        for side, port in enumerate(ports):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(encode(b"PING"))
                assert await asyncio.wait_for(read_any(r), 5) == "PONG"
                w.close()
            except Exception as e:
                print(f"DIFF {name}: {SIDES[side]} no longer answers PING ({e!r})")
                total_diffs += 1
    print(
        f"{'--protect: ' if protect else ''}{total_sequences} sequences, {total_steps} steps:"
        f" {total_diffs} differences, {total_known} known deviations"
    )
    return total_diffs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zdb", default="/tmp/0db/bin/zdb", help="the real 0-db binary")
    p.add_argument("-k", dest="only", help="only sequences whose name contains this")
    p.add_argument("-v", "--verbose", action="store_true", help="print every reply")
    args = p.parse_args()
    if not Path(args.zdb).exists():
        print(f"{args.zdb}: not found (build 0-db first)", file=sys.stderr)
        return 2
    diffs = 0
    for protect in (False, True):
        with tempfile.TemporaryDirectory(prefix="zdb-compare-") as tmp:
            procs, ports = start_servers(args.zdb, Path(tmp), protect)
            try:
                diffs += asyncio.run(run_all(ports, args.only, args.verbose, protect))
            finally:
                stop_servers(procs)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
