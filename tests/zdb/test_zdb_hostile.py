"""Hostile bytes on a raw socket: every case gets a clear error (or a cut connection),
and afterwards the server still answers everyone and nothing it held has changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from zdb_helpers import ADMIN, Connect, Err, Raw

from zos.zdb import ZdbServer
from zos.zdb.client import encode
from zos.zdb.commands import HANDLERS

MiB = 1024 * 1024
OpenRaw = Callable[..., Awaitable[Raw]]
Intact = Callable[[], Awaitable[None]]


@pytest.fixture
async def intact(zdb: ZdbServer, connect: Connect) -> Intact:
    """Data written before the attack; the returned check says the server still
    serves it, on a fresh connection, and no namespace came or went. (Some tests write
    to `default` on purpose; the private `victim` namespace nobody touches.)"""
    admin = await connect(admin=True)
    await admin.command(b"SET", b"keep", b"default value")
    await admin.command(b"NSNEW", b"victim")
    await admin.command(b"NSSET", b"victim", b"password", b"pw")
    await admin.command(b"NSSET", b"victim", b"public", b"0")
    await admin.command(b"SELECT", b"victim", b"pw")
    await admin.command(b"SET", b"keep", b"victim value")
    await admin.command(b"SET", b"\r\n\x00", b"\x00\r\n")
    namespaces = sorted(zdb.namespaces)
    on_disk = sorted(p.name for p in zdb.root.iterdir())
    assert zdb.address is not None
    address = zdb.address

    async def check() -> None:
        conn = await Raw.open(address)
        try:
            assert await conn.cmd(b"PING") == "PONG"
            assert await conn.cmd(b"GET", b"keep") == b"default value"
            assert await conn.cmd(b"SELECT", b"victim", b"pw") == "OK"
            assert await conn.cmd(b"MGET", b"keep", b"\r\n\x00") == [b"victim value", b"\x00\r\n"]
            assert await conn.cmd(b"DBSIZE") == 2
            assert await conn.cmd(b"CHECK", b"keep") == 1
        finally:
            await conn.close()
        assert sorted(zdb.namespaces) == namespaces
        assert sorted(p.name for p in zdb.root.iterdir()) == on_disk

    return check


async def refused_and_cut(conn: Raw, data: bytes) -> Err:
    """Send `data`: the server must answer one error and hang up."""
    await conn.send(data)
    reply = await conn.reply()
    assert isinstance(reply, Err), reply
    assert await conn.closed_by_server()
    return reply


MALFORMED = {
    "garbage": b"\x00\xff\xfe garbage\r\n",
    "inline command": b"PING\r\n",
    "inline set": b"SET k v\r\n",
    "negative count": b"*-1\r\n",
    "non-digit count": b"*abc\r\n",
    "count with a space": b"*1 \r\n$4\r\nPING\r\n",
    "empty array": b"*0\r\n",
    "huge count": b"*99999999999999999999\r\n",
    "1025 arguments": b"*1025\r\n",
    "negative length": b"*1\r\n$-1\r\n",
    "non-digit length": b"*1\r\n$abc\r\nPING\r\n",
    "plus sign length": b"*1\r\n$+4\r\nPING\r\n",
    "huge length": b"*1\r\n$99999999999999999999\r\n",
    "integer, not bulk": b"*1\r\n:4\r\nPING\r\n",
    "array inside": b"*1\r\n*1\r\n$4\r\nPING\r\n",
    "bulk without CRLF": b"*1\r\n$4\r\nPINGxx",
    "bulk with LF only": b"*1\r\n$4\r\nPING\n\n",
    "line too long": b"*1\r\n$" + b"1" * 100 + b"\r\n",
    "no line end at all": b"*" * 10_000,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request(raw: OpenRaw, intact: Intact, data: bytes) -> None:
    await refused_and_cut(await raw(), data)
    await intact()


async def test_1025_arguments(raw: OpenRaw, intact: Intact) -> None:
    await refused_and_cut(await raw(), encode(b"MGET", *[b"k"] * 1024))
    # 1024 is the most 0-db takes, and it works.
    conn = await raw()
    assert await conn.cmd(b"MGET", *[b"k%d" % i for i in range(1023)]) == [None] * 1023
    await intact()


async def test_value_over_8_mib_is_refused_and_the_connection_goes_on(
    raw: OpenRaw, intact: Intact
) -> None:
    conn = await raw()
    big = 8 * MiB + 1
    await conn.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % big + b"x" * big + b"\r\n")
    reply = await conn.reply()
    assert isinstance(reply, Err) and "8388608" in reply.text, reply
    assert await conn.cmd(b"PING") == "PONG"
    assert await conn.cmd(b"GET", b"big") is None
    # The whole request counts too: a big key on top of an 8 MiB value is too much.
    await conn.send(encode(b"SET", b"k" * MiB, b"x" * 8 * MiB))
    reply = await conn.reply()
    assert isinstance(reply, Err), reply
    assert await conn.cmd(b"SET", b"small", b"ok") == b"small"
    await intact()


async def test_too_large_request_amid_a_pipeline(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    big = 8 * MiB + 1
    conn.writer.write(
        encode(b"SET", b"a", b"1")
        + b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % big
        + b"x" * big
        + b"\r\n"
        + encode(b"PING")
        + encode(b"GET", b"a")
        + encode(b"GET", b"big")
    )
    replies = [await conn.reply() for _ in range(5)]
    await conn.writer.drain()
    assert replies[0] == b"a"
    assert isinstance(replies[1], Err)
    assert replies[2:] == ["PONG", b"1", None]
    await intact()


async def test_a_request_one_byte_at_a_time(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    data = encode(b"SET", b"slow", b"v\r\n" * 10) + encode(b"GET", b"slow")
    for i in range(len(data)):
        await conn.send(data[i : i + 1])
    assert [await conn.reply(), await conn.reply()] == [b"slow", b"v\r\n" * 10]
    await intact()


async def test_too_many_clients(tmp_path) -> None:
    server = await ZdbServer(tmp_path / "few", admin_password=ADMIN, max_clients=2).start(
        "127.0.0.1", 0
    )
    assert server.address is not None
    conns: list[Raw] = []
    try:
        for _ in range(2):
            conns.append(await Raw.open(server.address))
            assert await conns[-1].cmd(b"PING") == "PONG"
        extra = await Raw.open(server.address)
        conns.append(extra)
        assert await extra.reply() == Err("Too many clients")
        assert await extra.closed_by_server()
        # Room again once someone leaves.
        await conns[0].close()
        for _ in range(1000):  # the server sees the close on its next loop turn
            if len(server.sessions) < 2:
                break
            await asyncio.sleep(0.01)
        again = await Raw.open(server.address)
        conns.append(again)
        assert await again.cmd(b"PING") == "PONG"
    finally:
        for c in conns:
            await c.close()
        await server.stop()


async def test_a_client_that_never_reads_stalls_nobody(
    raw: OpenRaw, zdb: ZdbServer, intact: Intact
) -> None:
    """MGET of one 4 MiB value 1023 times is a 4 GiB reply: the server must write it
    as the client reads (it never does), and serve everyone else meanwhile."""
    writer = await raw()
    assert await writer.cmd(b"SET", b"big", b"b" * (4 * MiB)) == b"big"
    greedy = await raw(rcvbuf=64 * 1024)
    await greedy.send(encode(b"MGET", *[b"big"] * 1023))
    assert await greedy.reader.readuntil(b"\r\n") == b"*1023\r\n"
    other = await raw()
    for i in range(20):
        assert await other.cmd(b"SET", b"k%d" % i, b"v") == b"k%d" % i
        assert await other.cmd(b"GET", b"big") == b"b" * (4 * MiB)
    sessions = len(zdb.sessions)
    await greedy.close()  # the server notices on its next write and lets go
    for _ in range(1000):
        if len(zdb.sessions) < sessions:
            break
        await asyncio.sleep(0.01)
    assert len(zdb.sessions) == sessions - 1
    await intact()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM) since its last reset."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current RSS


async def test_pipelined_big_replies_are_not_held_in_memory(zdb_proc) -> None:
    """300 pipelined GETs of a 4 MiB value, never read: 1.2 GiB of replies that the
    server must hand out as the client takes them, not gather. Measured on the server
    process alone (`zos zdb serve`), from a peak reset just before the attack, so no
    earlier test or client memory can hide a regression."""
    zdb_proc.start()
    assert zdb_proc.proc is not None
    pid, address = zdb_proc.proc.pid, ("127.0.0.1", zdb_proc.port)
    writer = await Raw.open(address)
    greedy = await Raw.open(address, rcvbuf=64 * 1024)
    other = await Raw.open(address)
    try:
        assert await writer.cmd(b"SET", b"big", b"b" * (4 * MiB)) == b"big"
        assert await other.cmd(b"GET", b"big") == b"b" * (4 * MiB)  # its buffers warmed up
        reset_peak_rss(pid)
        before = peak_rss_kib(pid)
        await greedy.send(encode(b"GET", b"big") * 300)
        for _ in range(10):  # served meanwhile: the server has long read all 300
            assert await other.cmd(b"GET", b"big") == b"b" * (4 * MiB)
        grown = peak_rss_kib(pid) - before
        assert grown < 100 * 1024, f"peak memory of the server grew by {grown} KiB"
        await greedy.close()
        assert await other.cmd(b"GET", b"big") == b"b" * (4 * MiB)
    finally:
        for conn in (writer, greedy, other):
            await conn.close()


async def test_concurrent_writers(raw: OpenRaw, intact: Intact) -> None:
    conns = [await raw() for _ in range(10)]
    for n, conn in enumerate(conns):
        conn.writer.write(b"".join(encode(b"SET", b"c%d-%d" % (n, i), b"v") for i in range(300)))

    async def replies(n: int, conn: Raw) -> None:
        assert [await conn.reply() for _ in range(300)] == [b"c%d-%d" % (n, i) for i in range(300)]

    await asyncio.gather(*(replies(n, c) for n, c in enumerate(conns)))
    keys: list[bytes] = []
    cursor: list[bytes] = []
    while True:
        reply = await conns[0].cmd(b"SCAN", *cursor)
        if reply == Err("No more data"):
            break
        assert isinstance(reply, list), reply
        cursor = [reply[0]]
        keys += [k for k, _, _ in reply[1]]
    written = {b"c%d-%d" % (n, i) for n in range(10) for i in range(300)}
    assert sorted(k for k in keys if k != b"keep") == sorted(written)
    assert await conns[0].cmd(b"DBSIZE") == len(written) + 1
    await intact()


async def test_claimed_100_mib_cuts_the_connection(raw: OpenRaw, intact: Intact) -> None:
    other = await raw()
    assert await other.cmd(b"PING") == "PONG"
    await refused_and_cut(await raw(), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$104857600\r\nxxxx")
    assert await other.cmd(b"GET", b"k") is None  # an open connection is still served
    await intact()


@pytest.mark.parametrize(
    "cut",
    [
        b"*3",
        b"*3\r\n",
        b"*3\r\n$3\r\nSET\r\n$1",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc",  # all but the final CRLF
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$8388608\r\n" + b"x" * MiB,
    ],
)
async def test_connection_closed_mid_request(raw: OpenRaw, intact: Intact, cut: bytes) -> None:
    conn = await raw()
    await conn.send(cut)
    await conn.close()
    await intact()
    check = await raw()
    assert await check.cmd(b"GET", b"k") is None


async def test_10000_pipelined_commands_in_one_write(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    n = 5000
    requests = []
    for i in range(n):
        requests.append(encode(b"SET", b"p%d" % i, b"v%d" % i))
        requests.append(encode(b"GET", b"p%d" % i))
    conn.writer.write(b"".join(requests))  # read while it drains, or both sides block
    replies = [await conn.reply() for _ in range(2 * n)]
    await conn.writer.drain()
    expected = []
    for i in range(n):
        expected += [b"p%d" % i, b"v%d" % i]
    assert replies == expected
    assert await conn.cmd(b"DBSIZE") == n + 1  # and `keep`
    await intact()


async def test_oversized_and_empty_keys(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    long = b"k" * 256
    assert await conn.cmd(b"SET", long, b"v") == Err("Key too large")
    for args in (
        (b"GET", long),
        (b"EXISTS", long),
        (b"DEL", long),
        (b"LENGTH", long),
        (b"KEYTIME", long),
        (b"CHECK", long),
        (b"MGET", b"keep", long),
    ):
        assert await conn.cmd(*args) == Err("Invalid key"), args
    assert await conn.cmd(b"SET", b"k" * 255, b"v") == b"k" * 255  # the largest that fits
    assert await conn.cmd(b"DEL", b"k" * 255) == "OK"
    # Empty keys, in user mode.
    assert await conn.cmd(b"SET", b"", b"v") == Err("Invalid argument, key needed")
    for command in (b"GET", b"DEL", b"EXISTS", b"LENGTH"):
        assert await conn.cmd(command, b"") == Err("Invalid argument"), command
    assert await conn.cmd(b"MGET", b"") == [None]
    await intact()


async def test_unknown_commands(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    for name in (b"FLUSHALL", b"", b"\x00", b"\xff" * 300, b"G", b"GETX", b"CONFIG"):
        assert await conn.cmd(name, b"k") == Err("Command not supported"), name
    assert await conn.cmd(b"PING") == "PONG"
    await intact()


# Arguments that are no valid namespace name, password, timestamp or cursor.
JUNK = [b"", b"\xff\xfe", b"\x00" * 8, b"k" * 300, b"\r\n", b"\x08" + b"\x00" * 7]


async def test_every_command_with_any_argument_count(
    raw: OpenRaw, intact: Intact, zdb: ZdbServer
) -> None:
    """Each command with 0 to 5 junk arguments: a reply each time, never a hang-up or
    an internal error, from a read-only client and from an admin."""
    reader = await raw()
    assert await reader.cmd(b"NSSET", b"victim", b"public", b"1") == Err("Permission denied")
    writer = await raw()
    assert await writer.cmd(b"AUTH", ADMIN.encode()) == "OK"
    assert await writer.cmd(b"NSNEW", b"scratch") == "OK"
    assert await writer.cmd(b"SELECT", b"scratch") == "OK"
    assert await writer.cmd(b"SET", b"a", b"1") == b"a"
    namespaces = set(zdb.namespaces)
    replies = 0
    for conn in (reader, writer):
        for name in sorted(HANDLERS):
            for count in range(6):
                args = [JUNK[(count + i) % len(JUNK)] for i in range(count)]
                await conn.send(encode(name, *args))
                reply = await conn.reply()
                assert reply != Err("Internal Error"), (name, args)
                assert not (isinstance(reply, Err) and "Protocol" in reply.text), (name, args)
                assert await conn.cmd(b"PING") == "PONG", (name, args)
                replies += 1
    assert replies == 2 * 6 * len(HANDLERS)
    assert set(zdb.namespaces) == namespaces
    assert await writer.cmd(b"SELECT", b"default") == "OK"
    assert await writer.cmd(b"NSDEL", b"scratch") == "OK"
    await intact()


NAMES = {
    "not utf-8": (b"\xff\xfe", "This name is not allowed"),
    "dot dot": (b"..", "This name is not allowed"),
    "dot": (b".", "This name is not allowed"),
    "slash": (b"a/b", "This name is not allowed"),
    "parent path": (b"../default", "This name is not allowed"),
    "nul": (b"a\x00b", "This name is not allowed"),
    "line break": (b"a\r\nb", "This name is not allowed"),
    "staging prefix": (b".new-x", "This name is not allowed"),
    "129 bytes": (b"n" * 129, "Namespace too long"),
    "empty": (b"", "Invalid argument"),
}


@pytest.mark.parametrize("name,message", NAMES.values(), ids=NAMES.keys())
async def test_bad_namespace_names(
    raw: OpenRaw, intact: Intact, zdb: ZdbServer, name: bytes, message: str
) -> None:
    conn = await raw()
    assert await conn.cmd(b"AUTH", ADMIN.encode()) == "OK"
    assert await conn.cmd(b"NSNEW", name) == Err(message)
    for args in ((b"SELECT", name), (b"NSINFO", name), (b"NSSET", name, b"public", b"0")):
        reply = await conn.cmd(*args)
        assert isinstance(reply, Err), (args, reply)
    assert isinstance(await conn.cmd(b"NSDEL", name), Err)
    assert await conn.cmd(b"GET", b"keep") == b"default value"  # still in default
    assert not (zdb.root.parent / "b").exists()
    await intact()


async def test_default_namespace_stays(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    assert await conn.cmd(b"AUTH", ADMIN.encode()) == "OK"
    assert await conn.cmd(b"NSNEW", b"default") == Err("This name is not allowed")
    assert await conn.cmd(b"NSDEL", b"default") == Err("Cannot remove default namespace")
    assert await conn.cmd(b"NSSET", b"default", b"password", b"x") == Err(
        "Cannot update default namespace"
    )
    await intact()


async def test_longest_namespace_name(raw: OpenRaw, intact: Intact) -> None:
    conn = await raw()
    assert await conn.cmd(b"AUTH", ADMIN.encode()) == "OK"
    name = "é".encode() * 64  # 128 bytes
    assert await conn.cmd(b"NSNEW", name) == "OK"
    assert await conn.cmd(b"SELECT", name) == "OK"
    assert await conn.cmd(b"SET", b"k", b"v") == b"k"
    assert await conn.cmd(b"SELECT", b"default") == "OK"
    assert await conn.cmd(b"NSDEL", name) == "OK"
    await intact()


async def test_namespace_deleted_while_a_reply_streams(
    raw: OpenRaw, connect: Connect, intact: Intact
) -> None:
    """MGET streams its values; the namespace goes away half way: the reply stays a
    well-formed array, then the client learns its namespace is gone."""
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"doomed")
    value = b"v" * (4 * MiB)
    keys = [b"k%d" % i for i in range(8)]
    # A small receive buffer: 32 MiB of values cannot all be in flight when NSDEL comes.
    conn = await raw(rcvbuf=64 * 1024)
    assert await conn.cmd(b"SELECT", b"doomed") == "OK"
    for k in keys:
        assert await conn.cmd(b"SET", k, value) == k
    await conn.send(encode(b"MGET", *keys))
    assert await conn.reader.readuntil(b"\r\n") == b"*8\r\n"  # the reply has begun
    assert await admin.command(b"NSDEL", b"doomed") == "OK"
    items = [await conn.reply() for _ in keys]
    gone = Err("Your active namespace is not available anymore (probably removed).")
    assert items[0] == value  # on its way before the NSDEL
    assert items[-1] == gone  # held up by the small buffer
    assert all(v in (value, gone) for v in items), [
        v if isinstance(v, Err) else len(v) for v in items
    ]
    assert await conn.cmd(b"PING") == Err(
        "Your active namespace is not available anymore (probably removed)."
    )
    assert await conn.closed_by_server()
    await intact()


async def test_unix_socket(tmp_path) -> None:
    """The unix socket is served by the same code: garbage there is refused the same."""
    path = tmp_path / "zdb.sock"
    server = await ZdbServer(tmp_path / "u", admin_password=ADMIN).start(None, socket_path=path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        garbage = Raw(reader, writer)
        await refused_and_cut(garbage, b"\x00\xff garbage\r\n")
        await garbage.close()
        reader, writer = await asyncio.open_unix_connection(str(path))
        good = Raw(reader, writer)
        try:
            assert await good.cmd(b"SET", b"k", b"v") == b"k"
            assert await good.cmd(b"GET", b"k") == b"v"
        finally:
            await good.close()
    finally:
        await server.stop()
