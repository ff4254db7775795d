"""The argument and access rules of each command, each at its boundary: what the
mutation check (scripts/mutate) found no test for. Arity and length limits are part of
the protocol (0-db answers the same); the access ones guard tenants' data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from zdb_helpers import ADMIN, Connect, nsinfo, refused

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient
from zos.zdb.protocol import MAX_KEY


def answer(nonce: str, password: str) -> bytes:
    return hashlib.sha1(f"{nonce}:{password}".encode()).hexdigest().encode()


async def is_admin(c: RespClient) -> bool:
    try:
        await c.command(b"NSLIST")
        await c.command(b"NSNEW", b"probe-admin")
    except Exception:
        return False
    await c.command(b"NSDEL", b"probe-admin")
    return True


async def test_auth_with_the_wrong_shape_makes_nobody_admin(connect: Connect) -> None:
    c = await connect()
    for args in ((b"AUTH",), (b"AUTH", b"a", b"b", b"c")):
        with refused("Unexpected arguments"):
            await c.command(*args)
    with refused("Only SECURE extra method supported"):
        await c.command(b"AUTH", b"PLAIN", b"CHALLENGE")
    with refused("Access denied"):
        await c.command(b"AUTH", b"x" * 128)
    with refused("Password too long"):
        await c.command(b"AUTH", b"x" * 129)
    assert not await is_admin(c)


async def test_auth_secure_without_an_admin_password_is_disabled(tmp_path: Path) -> None:
    """No admin password to check against: a SECURE answer computed over nothing (the
    text 'None') must not make its sender admin."""
    server = await ZdbServer(tmp_path / "open").start("127.0.0.1", 0)
    assert server.address is not None
    c = RespClient(*server.address, timeout=10)
    try:
        nonce = await c.command(b"AUTH", b"SECURE", b"CHALLENGE")
        with refused("Authentication disabled"):
            await c.command(b"AUTH", b"SECURE", answer(nonce, "None"))
    finally:
        await c.close()
        await server.stop()


@pytest.mark.parametrize(
    "args",
    [
        (b"NSNEW",),
        (b"NSNEW", b"a", b"b"),
        (b"NSDEL",),
        (b"NSDEL", b"a", b"b"),
        (b"NSINFO",),
        (b"NSINFO", b"default", b"x"),
        (b"NSSET", b"ns", b"public"),
        (b"NSSET", b"ns", b"public", b"1", b"x"),
        (b"SET", b"k"),
        (b"SET", b"k", b"v", b"1", b"x"),
        (b"DEL",),
        (b"DEL", b"k", b"1", b"x"),
    ],
    ids=lambda a: b" ".join(a).decode(),
)
async def test_wrong_arity_is_refused(connect: Connect, args: tuple[bytes, ...]) -> None:
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"ns")
    with refused("Unexpected arguments"):
        await admin.command(*args)
    assert await admin.command(b"NSLIST") == [b"default", b"ns"]


async def test_select_arguments(connect: Connect) -> None:
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"ns")
    await admin.command(b"NSSET", b"ns", b"password", b"p" * 63)
    c = await connect()
    with refused("Invalid argument"):
        await c.command(b"SELECT")
    with refused("Too many arguments"):
        await c.command(b"SELECT", b"ns", b"SECURE", b"x", b"y")
    with refused("Access denied"):
        await c.command(b"SELECT", b"ns", b"x" * 255)
    with refused("Password too long"):
        await c.command(b"SELECT", b"ns", b"x" * 256)
    assert await c.command(b"SELECT", b"ns", b"p" * 63) == "OK"


async def test_nsset_values_and_properties(connect: Connect) -> None:
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"ns")
    with refused("Argument too long"):
        await admin.command(b"NSSET", b"ns", b"password", b"p" * 64)
    assert await admin.command(b"NSSET", b"ns", b"password", b"p" * 63) == "OK"
    with refused("Invalid property value (expected: a size in bytes)"):
        await admin.command(b"NSSET", b"ns", b"maxsize", b"12k")
    with refused("Invalid property"):
        await admin.command(b"NSSET", b"ns", b"owner", b"me")
    for prop, value in ((b"password", b"open"), (b"public", b"0"), (b"maxsize", b"1")):
        with refused("Cannot update default namespace"):
            await admin.command(b"NSSET", b"default", prop, value)
    info = nsinfo(await admin.command(b"NSINFO", b"default"))
    assert (info["password"], info["public"]) == ("no", "yes")
    assert await admin.command(b"NSSET", b"default", b"lock", b"1") == "OK"
    assert await admin.command(b"NSSET", b"default", b"lock", b"0") == "OK"


async def test_lock_and_freeze_replace_each_other(connect: Connect) -> None:
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"ns")
    await admin.command(b"SELECT", b"ns")
    await admin.command(b"NSSET", b"ns", b"lock", b"1")
    with refused("Namespace is temporarily locked (read-only)"):
        await admin.command(b"SET", b"k", b"v")
    await admin.command(b"NSSET", b"ns", b"freeze", b"1")  # replaces the lock
    with refused("Namespace is temporarily frozen (read-write disabled)"):
        await admin.command(b"GET", b"k")
    await admin.command(b"NSSET", b"ns", b"freeze", b"0")  # either set to 0 unlocks
    assert await admin.command(b"SET", b"k", b"v") == b"k"


async def test_nsdel_rules(connect: Connect) -> None:
    admin = await connect(admin=True)
    with refused("Cannot remove default namespace"):
        await admin.command(b"NSDEL", b"default")
    with refused("This namespace doesn't exists"):
        await admin.command(b"NSDEL", b"nope")
    await admin.command(b"NSNEW", b"ns")
    await admin.command(b"SELECT", b"ns")
    with refused("Cannot remove namespace you're currently using."):
        await admin.command(b"NSDEL", b"ns")
    assert await admin.command(b"NSLIST") == [b"default", b"ns"]


async def test_a_locked_namespace_is_not_flushed(connect: Connect) -> None:
    admin = await connect(admin=True)
    await admin.command(b"NSNEW", b"ns")
    await admin.command(b"NSSET", b"ns", b"password", b"pw")
    await admin.command(b"NSSET", b"ns", b"public", b"0")
    owner = await connect(ns=b"ns", password=b"pw")
    await owner.command(b"SET", b"k", b"v")
    await admin.command(b"NSSET", b"ns", b"lock", b"1")
    with refused("Namespace is temporarily locked (read-only)"):
        await owner.command(b"FLUSH")
    assert await owner.command(b"GET", b"k") == b"v"


async def test_key_length_limit_to_the_byte(connect: Connect) -> None:
    c = await connect()
    longest = b"k" * MAX_KEY
    assert await c.command(b"SET", longest, b"v") == longest
    with refused("Key too large"):
        await c.command(b"SET", longest + b"k", b"v")
    with refused("Invalid key"):
        await c.command(b"DEL", longest + b"k")
    assert await c.command(b"DEL", longest) == "OK"


async def test_admin_delete_checks_its_timestamp(connect: Connect) -> None:
    """DEL with a timestamp (an admin replaying another server's history): the time is
    checked like SET's, and a bad one deletes nothing."""
    admin = await connect(admin=True)
    await admin.command(b"SET", b"k", b"v", b"1000")
    assert await admin.command(b"KEYTIME", b"k") == 1000
    for bad in (b"later", b"%d" % (1 << 32)):
        with refused("Invalid timestamp"):
            await admin.command(b"DEL", b"k", bad)
    assert await admin.command(b"EXISTS", b"k") == 1
    assert await admin.command(b"DEL", b"k", b"2000") == "OK"
    assert await admin.command(b"EXISTS", b"k") == 0


async def test_namespace_settings_survive_a_restart(tmp_path: Path) -> None:
    """A password set on a namespace is on disk: after a restart the namespace is as
    closed as before (not open to anyone)."""
    root = tmp_path / "zdb"
    server = await ZdbServer(root, admin_password=ADMIN).start("127.0.0.1", 0)
    assert server.address is not None
    admin = RespClient(*server.address, timeout=10)
    try:
        await admin.command(b"AUTH", ADMIN.encode())
        await admin.command(b"NSNEW", b"ns")
        await admin.command(b"NSSET", b"ns", b"password", b"pw")
        await admin.command(b"NSSET", b"ns", b"public", b"0")
    finally:
        await admin.close()
        await server.stop()
    server = await ZdbServer(root, admin_password=ADMIN).start("127.0.0.1", 0)
    assert server.address is not None
    c = RespClient(*server.address, timeout=10)
    try:
        with refused("Namespace protected and private"):
            await c.command(b"SELECT", b"ns")
        assert await c.command(b"SELECT", b"ns", b"pw") == "OK"
    finally:
        await c.close()
        await server.stop()


async def test_an_admin_writes_the_protected_default_namespace(tmp_path: Path) -> None:
    server = await ZdbServer(tmp_path / "p", admin_password=ADMIN, protect=True).start(
        "127.0.0.1", 0
    )
    assert server.address is not None
    c = RespClient(*server.address, timeout=10)
    try:
        assert await c.command(b"AUTH", ADMIN.encode()) == "OK"
        assert await c.command(b"SELECT", b"default") == "OK"
        assert await c.command(b"SET", b"k", b"v") == b"k"
    finally:
        await c.close()
        await server.stop()
