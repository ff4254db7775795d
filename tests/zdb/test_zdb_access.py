"""Who may do what: admin commands, AUTH (plain and SECURE), SELECT rules, tenants apart."""

from __future__ import annotations

import hashlib

import pytest
from zdb_helpers import ADMIN, Connect, nsinfo, refused

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient, RespError


def answer(nonce: str, password: str) -> bytes:
    return hashlib.sha1(f"{nonce}:{password}".encode()).hexdigest().encode()


async def private(admin: RespClient, name: bytes, password: bytes = b"pw") -> None:
    """A namespace with a password that is not public."""
    assert await admin.command(b"NSNEW", name) == "OK"
    assert await admin.command(b"NSSET", name, b"password", password) == "OK"
    assert await admin.command(b"NSSET", name, b"public", b"0") == "OK"


async def test_admin_commands_need_auth(client: RespClient, admin: RespClient) -> None:
    await admin.command(b"NSNEW", b"ns")
    await client.command(b"SET", b"k", b"v")
    for args in (
        (b"NSNEW", b"x"),
        (b"NSDEL", b"ns"),
        (b"NSSET", b"ns", b"public", b"0"),
        (b"NSSET", b"ns", b"password", b"mine"),
        (b"SET", b"k", b"w", b"1234"),
        (b"DEL", b"k", b"1234"),
    ):
        with refused("Permission denied"):
            await client.command(*args)
    # Nothing changed.
    assert b"x" not in await admin.command(b"NSLIST")
    fields = nsinfo(await admin.command(b"NSINFO", b"ns"))
    assert (fields["public"], fields["password"]) == ("yes", "no")
    assert await client.command(b"GET", b"k") == b"v"
    assert await client.command(b"KEYTIME", b"k") != 1234


async def test_auth_plain(client: RespClient) -> None:
    with refused("Access denied"):
        await client.command(b"AUTH", b"wrong")
    with refused("Access denied"):
        await client.command(b"AUTH", ADMIN.encode() + b"x")
    with refused("Permission denied"):
        await client.command(b"NSNEW", b"x")
    assert await client.command(b"AUTH", ADMIN.encode()) == "OK"
    assert await client.command(b"NSNEW", b"x") == "OK"


async def test_auth_secure(connect: Connect) -> None:
    c = await connect()
    with refused("No CHALLENGE requested, secure authentication not available"):
        await c.command(b"AUTH", b"SECURE", answer("anything", ADMIN))

    nonce = await c.command(b"AUTH", b"SECURE", b"CHALLENGE")
    assert isinstance(nonce, str) and nonce
    assert nonce != await c.command(b"AUTH", b"SECURE", b"CHALLENGE")  # each one new
    nonce = await c.command(b"AUTH", b"SECURE", b"CHALLENGE")
    # A malformed answer leaves the challenge standing, as in 0-db.
    with refused("Invalid hash length"):
        await c.command(b"AUTH", b"SECURE", b"abc")
    assert await c.command(b"AUTH", b"SECURE", answer(nonce, ADMIN)) == "OK"
    assert await c.command(b"NSNEW", b"via-secure") == "OK"

    # A challenge answers once: the same answer again is refused.
    again = await connect()
    nonce = await again.command(b"AUTH", b"SECURE", b"CHALLENGE")
    assert await again.command(b"AUTH", b"SECURE", answer(nonce, ADMIN)) == "OK"
    with refused("No CHALLENGE requested, secure authentication not available"):
        await again.command(b"AUTH", b"SECURE", answer(nonce, ADMIN))

    # A wrong hash is refused, and uses the challenge up.
    wrong = await connect()
    nonce = await wrong.command(b"AUTH", b"SECURE", b"CHALLENGE")
    with refused("Access denied"):
        await wrong.command(b"AUTH", b"SECURE", answer(nonce, "not the password"))
    with refused("No CHALLENGE requested, secure authentication not available"):
        await wrong.command(b"AUTH", b"SECURE", answer(nonce, ADMIN))
    with refused("Permission denied"):
        await wrong.command(b"NSNEW", b"x")

    # A nonce belongs to the connection that asked for it.
    other = await connect()
    with refused("No CHALLENGE requested, secure authentication not available"):
        await other.command(b"AUTH", b"SECURE", answer(nonce, ADMIN))


async def test_auth_disabled_without_admin_password(tmp_path) -> None:
    """No admin password: 0-db makes everyone admin and AUTH has nothing to check."""
    server = await ZdbServer(tmp_path / "open").start("127.0.0.1", 0)
    assert server.address is not None
    c = RespClient(*server.address, timeout=10)
    try:
        with refused("Authentication disabled"):
            await c.command(b"AUTH", b"anything")
        assert await c.command(b"NSNEW", b"x") == "OK"
    finally:
        await c.close()
        await server.stop()


async def test_select_private_namespace(admin: RespClient, connect: Connect) -> None:
    await private(admin, b"priv")
    # Admin or not, a namespace password is needed (as in 0-db).
    with refused("Namespace protected and private"):
        await admin.command(b"SELECT", b"priv")
    assert await admin.command(b"SELECT", b"priv", b"pw") == "OK"
    await admin.command(b"SET", b"k", b"secret")
    c = await connect()
    await c.command(b"SET", b"k", b"default value")
    with refused("Namespace protected and private"):
        await c.command(b"SELECT", b"priv")
    with refused("Access denied"):
        await c.command(b"SELECT", b"priv", b"wrong")
    with refused("Namespace not found"):
        await c.command(b"SELECT", b"nope")
    # Every refusal left the client where it was.
    assert await c.command(b"GET", b"k") == b"default value"
    assert await c.command(b"SELECT", b"priv", b"pw") == "OK"
    assert await c.command(b"GET", b"k") == b"secret"
    assert await c.command(b"SET", b"k2", b"mine") == b"k2"


async def test_select_public_namespace_with_password_is_read_only(
    admin: RespClient, connect: Connect
) -> None:
    await admin.command(b"NSNEW", b"pub")
    await admin.command(b"NSSET", b"pub", b"password", b"pw")
    await admin.command(b"SELECT", b"pub", b"pw")
    await admin.command(b"SET", b"k", b"v")
    reader = await connect(ns=b"pub")
    assert await reader.command(b"GET", b"k") == b"v"
    assert await reader.command(b"EXISTS", b"k") == 1
    for args in ((b"SET", b"k", b"w"), (b"SET", b"new", b"w"), (b"DEL", b"k")):
        with refused("Namespace is in read-only mode"):
            await reader.command(*args)
    assert await reader.command(b"GET", b"k") == b"v"
    assert await reader.command(b"EXISTS", b"new") == 0
    with refused("Access denied"):
        await reader.command(b"SELECT", b"pub", b"wrong")
    # The password makes the same client a writer.
    assert await reader.command(b"SELECT", b"pub", b"pw") == "OK"
    assert await reader.command(b"SET", b"k", b"w") == b"k"


async def test_select_secure(admin: RespClient, connect: Connect) -> None:
    await private(admin, b"sec", b"s3cret")
    c = await connect()
    with refused("No CHALLENGE requested, secure authentication not available"):
        await c.command(b"SELECT", b"sec", b"SECURE", answer("x", "s3cret"))
    nonce = await c.command(b"AUTH", b"SECURE", b"CHALLENGE")
    with refused("Access denied"):
        await c.command(b"SELECT", b"sec", b"SECURE", answer(nonce, "wrong"))
    with refused("No CHALLENGE requested, secure authentication not available"):
        await c.command(b"SELECT", b"sec", b"SECURE", answer(nonce, "s3cret"))
    nonce = await c.command(b"AUTH", b"SECURE", b"CHALLENGE")
    with refused("Only SECURE extra method supported"):
        await c.command(b"SELECT", b"sec", b"PLAIN", answer(nonce, "s3cret"))
    assert await c.command(b"SELECT", b"sec", b"SECURE", answer(nonce, "s3cret")) == "OK"
    assert await c.command(b"SET", b"k", b"v") == b"k"  # with the password: writable
    # The namespace password does not make anyone admin.
    with refused("Permission denied"):
        await c.command(b"NSNEW", b"x")


async def test_password_cleared_with_star(admin: RespClient, connect: Connect) -> None:
    await private(admin, b"p")
    assert await admin.command(b"NSSET", b"p", b"password", b"*") == "OK"
    c = await connect(ns=b"p")
    assert await c.command(b"SET", b"k", b"v") == b"k"


@pytest.mark.parametrize("value", [b"\xff\xfe", b"caf\xc3"])
async def test_password_must_be_text(admin: RespClient, value: bytes) -> None:
    await admin.command(b"NSNEW", b"p")
    with refused("Invalid property value (expected: UTF-8 text)"):
        await admin.command(b"NSSET", b"p", b"password", value)
    assert nsinfo(await admin.command(b"NSINFO", b"p"))["password"] == "no"


async def test_tenants_never_see_each_other(admin: RespClient, connect: Connect) -> None:
    await private(admin, b"alice", b"a-pw")
    await private(admin, b"bob", b"b-pw")
    alice = await connect(ns=b"alice", password=b"a-pw")
    bob = await connect(ns=b"bob", password=b"b-pw")
    assert await alice.command(b"SET", b"same", b"alice's") == b"same"
    assert await bob.command(b"SET", b"same", b"bob's") == b"same"
    await alice.command(b"SET", b"only-alice", b"x")
    assert await alice.command(b"GET", b"same") == b"alice's"
    assert await bob.command(b"GET", b"same") == b"bob's"
    assert await bob.command(b"MGET", b"same", b"only-alice") == [b"bob's", None]
    assert await bob.command(b"EXISTS", b"only-alice") == 0
    with refused("Key not found"):
        await bob.command(b"DEL", b"only-alice")
    with refused("Key not found"):
        await bob.command(b"KEYCUR", b"only-alice")
    assert (await bob.command(b"DBSIZE"), await alice.command(b"DBSIZE")) == (1, 2)
    _, page = await bob.command(b"SCAN")
    assert [k for k, _, _ in page] == [b"same"]
    # A cursor from one namespace never reaches into another.
    alice_cursor = await alice.command(b"KEYCUR", b"only-alice")
    try:
        _, page = await bob.command(b"SCAN", alice_cursor)
        assert all(k == b"same" for k, _, _ in page)
    except RespError as e:
        assert str(e) in ("No more data", "Invalid key format")
    with pytest.raises(RespError):
        await bob.command(b"HISTORY", b"only-alice", alice_cursor)
    assert await bob.command(b"DEL", b"same") == "OK"
    assert await alice.command(b"GET", b"same") == b"alice's"
    # FLUSH in one leaves the other whole.
    assert await bob.command(b"FLUSH") == "OK"
    assert await alice.command(b"DBSIZE") == 2


async def test_private_namespace_hidden_from_outsiders(admin: RespClient, connect: Connect) -> None:
    """A deliberate deviation from 0-db, which lists and describes every namespace."""
    await private(admin, b"hidden")
    await admin.command(b"NSNEW", b"open")
    outsider = await connect()
    names = await outsider.command(b"NSLIST")
    assert b"hidden" not in names
    assert b"open" in names and b"default" in names
    with refused("Namespace protected and private"):
        await outsider.command(b"NSINFO", b"hidden")
    assert nsinfo(await outsider.command(b"NSINFO", b"open"))["name"] == "open"
    # Admin sees everything; a client inside sees its own namespace.
    assert b"hidden" in await admin.command(b"NSLIST")
    assert nsinfo(await admin.command(b"NSINFO", b"hidden"))["public"] == "no"
    insider = await connect(ns=b"hidden", password=b"pw")
    assert b"hidden" in await insider.command(b"NSLIST")
    assert nsinfo(await insider.command(b"NSINFO", b"hidden"))["name"] == "hidden"
    # Non-admin clients never see where the data lives.
    assert "data_path" not in nsinfo(await insider.command(b"NSINFO", b"hidden"))
    assert "data_path" in nsinfo(await admin.command(b"NSINFO", b"hidden"))


async def test_protected_default_namespace(tmp_path) -> None:
    """--protect: `default` is read-only but with the admin password (0-db makes it the
    default namespace's password), or for an AUTHed admin."""
    server = await ZdbServer(tmp_path / "p", admin_password=ADMIN, protect=True).start(
        "127.0.0.1", 0
    )
    assert server.address is not None
    clients = [RespClient(*server.address, timeout=10) for _ in range(3)]
    tenant, owner, admin = clients
    try:
        with refused("Namespace is in read-only mode"):
            await tenant.command(b"SET", b"k", b"v")
        with refused("Access denied"):
            await tenant.command(b"SELECT", b"default", b"wrong")
        assert await tenant.command(b"SELECT", b"default") == "OK"
        with refused("Namespace is in read-only mode"):
            await tenant.command(b"SET", b"k", b"v")
        assert await owner.command(b"SELECT", b"default", ADMIN.encode()) == "OK"
        assert await owner.command(b"SET", b"k", b"v") == b"k"
        assert await tenant.command(b"GET", b"k") == b"v"
        nonce = await tenant.command(b"AUTH", b"SECURE", b"CHALLENGE")
        assert await tenant.command(b"SELECT", b"default", b"SECURE", answer(nonce, ADMIN)) == "OK"
        assert await tenant.command(b"SET", b"k2", b"v") == b"k2"
        assert await admin.command(b"AUTH", ADMIN.encode()) == "OK"
        assert await admin.command(b"DEL", b"k2") == "OK"
        # Other namespaces follow their own settings.
        assert await admin.command(b"NSNEW", b"ns") == "OK"
        fresh = RespClient(*server.address, timeout=10)
        clients.append(fresh)
        assert await fresh.command(b"SELECT", b"ns") == "OK"
        assert await fresh.command(b"SET", b"k", b"v") == b"k"
    finally:
        for c in clients:
            await c.close()
        await server.stop()
