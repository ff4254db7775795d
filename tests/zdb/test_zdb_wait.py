"""WAIT: a client is answered when another client runs a command in its namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from zdb_helpers import Connect, Err, Raw, refused

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient, encode


async def until(condition: Callable[[], object]) -> None:
    """Let the in-process server run until `condition` holds (no clock involved)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the server never got there")


async def waiting(zdb: ZdbServer, conn: Raw, *args: bytes) -> None:
    """Send a WAIT and return once the server holds it."""
    count = len(zdb.watchers)
    await conn.send(encode(b"WAIT", *args))
    await until(lambda: len(zdb.watchers) > count)


async def test_wait_is_answered_by_the_command_it_names(raw, zdb: ZdbServer) -> None:
    waiter, other = await raw(), await raw()
    await waiting(zdb, waiter, b"SET")
    assert await other.cmd(b"GET", b"k") is None  # another command: still waiting
    assert await other.cmd(b"SET", b"k", b"v") == b"k"
    assert await waiter.reply() == "SET"
    assert await waiter.cmd(b"GET", b"k") == b"v"  # the connection goes on
    # SETX is a command of its own, as in 0-db.
    await waiting(zdb, waiter, b"set")
    assert await other.cmd(b"SETX", b"k", b"w") == b"k"
    assert await other.cmd(b"SET", b"k", b"x") == b"k"
    assert await waiter.reply() == "SET"


async def test_wait_any_is_answered_by_every_command_even_a_failed_one(raw, zdb: ZdbServer) -> None:
    waiter, other = await raw(), await raw()
    await waiting(zdb, waiter, b"*")
    assert await other.cmd(b"DEL", b"missing") == Err("Key not found")
    assert await waiter.reply() == "DEL"
    await waiting(zdb, waiter, b"*")
    assert await other.cmd(b"NOSUCH") == Err("Command not supported")  # not a command
    assert await other.cmd(b"PING") == "PONG"
    assert await waiter.reply() == "PING"


async def test_wait_times_out(client: RespClient) -> None:
    with refused("Timeout"):
        await client.command(b"WAIT", b"PING", b"100")
    assert await client.command(b"PING") == "PONG"


async def test_wait_hears_only_its_namespace_and_not_itself(
    raw, admin: RespClient, connect: Connect, zdb: ZdbServer
) -> None:
    assert await admin.command(b"NSNEW", b"elsewhere") == "OK"
    elsewhere = await connect(ns=b"elsewhere")
    waiter = await raw()
    await waiting(zdb, waiter, b"SET", b"100")
    assert await elsewhere.command(b"SET", b"k", b"v") == b"k"
    assert await waiter.reply() == Err("Timeout")
    # Its own commands, sent behind the WAIT, are answered after it, in order.
    await waiter.send(encode(b"WAIT", b"PING", b"100") + encode(b"PING"))
    assert await waiter.reply() == Err("Timeout")
    assert await waiter.reply() == "PONG"
    # A client that moves into the namespace is heard there.
    await waiting(zdb, waiter, b"SET")
    assert await elsewhere.command(b"SELECT", b"default") == "OK"
    assert await elsewhere.command(b"SET", b"k", b"v") == b"k"
    assert await waiter.reply() == "SET"


async def test_wait_refuses_bad_arguments(client: RespClient, zdb: ZdbServer) -> None:
    with refused("Invalid arguments"):
        await client.command(b"WAIT")
    with refused("Invalid arguments"):
        await client.command(b"WAIT", b"PING", b"100", b"more")
    for name in (b"nonexisting", b"", b"PIN", b"\xff"):
        with refused("Unknown command to watch"):
            await client.command(b"WAIT", name)
    for timeout in (b"99", b"1800001", b"abc", b"-1", b"", b"1" * 17, b"100ms"):
        with refused("Invalid timeout"):
            await client.command(b"WAIT", b"PING", timeout)
    assert not zdb.watchers


async def test_a_client_that_hangs_up_while_waiting_is_let_go(raw, zdb: ZdbServer) -> None:
    sessions = len(zdb.sessions)
    waiter = await raw()
    await waiting(zdb, waiter, b"SET", b"1800000")
    assert len(zdb.sessions) == sessions + 1
    await waiter.close()
    await until(lambda: not zdb.watchers and len(zdb.sessions) == sessions)


async def test_many_waiters_are_answered_together(raw, zdb: ZdbServer) -> None:
    waiters = [await raw() for _ in range(20)]
    for w in waiters:
        await waiting(zdb, w, b"DEL")
    other = await raw()
    assert await other.cmd(b"SET", b"k", b"v") == b"k"
    assert await other.cmd(b"DEL", b"k") == "OK"
    assert [await w.reply() for w in waiters] == ["DEL"] * 20
    assert not zdb.watchers


async def test_requests_sent_while_waiting_are_answered_after_it(raw, zdb: ZdbServer) -> None:
    """More than one request's worth behind a WAIT: the server stops reading the
    client until the WAIT is answered, then answers the rest in order."""
    waiter, other = await raw(), await raw()
    await waiting(zdb, waiter, b"DEL", b"1800000")
    value = b"x" * 65536
    behind = b"".join(encode(b"SET", b"k%d" % i, value) for i in range(200))  # 12.8 MiB
    sending = asyncio.create_task(waiter.send(behind))
    await asyncio.sleep(0)
    assert await other.cmd(b"SET", b"d", b"v") == b"d"
    assert await other.cmd(b"DEL", b"d") == "OK"
    assert await waiter.reply() == "DEL"
    assert [await waiter.reply() for _ in range(200)] == [b"k%d" % i for i in range(200)]
    await sending
    assert await other.cmd(b"GET", b"k199") == value
