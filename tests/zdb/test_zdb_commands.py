"""Every 0-db command against a real server over TCP: replies, modes and namespace rules."""

from __future__ import annotations

import time

import pytest
from zdb_helpers import ADMIN, Connect, Err, Raw, nsinfo, refused, walk

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient, RespError, encode
from zos.zdb.protocol import MAX_KEY

MiB = 1024 * 1024


def seq_id(n: int) -> bytes:
    return n.to_bytes(8, "little")


async def new_namespace(admin: RespClient, name: bytes, *settings: tuple[bytes, bytes]) -> None:
    assert await admin.command(b"NSNEW", name) == "OK"
    for prop, value in settings:
        assert await admin.command(b"NSSET", name, prop, value) == "OK"


async def info(admin: RespClient, name: bytes) -> dict[str, str]:
    text = await admin.command(b"NSINFO", name)
    assert isinstance(text, bytes)
    return nsinfo(text)


# -- server ------------------------------------------------------------------------------


async def test_ping_time_info(client: RespClient) -> None:
    assert await client.command(b"PING") == "PONG"
    assert await client.command(b"ping") == "PONG"
    sec, usec = await client.command(b"TIME")
    assert abs(int(sec) - time.time()) < 600
    assert 0 <= int(usec) < 1_000_000
    text = await client.command(b"INFO")
    assert b"server_name: 0-db (zdb)" in text


async def test_unknown_command(client: RespClient) -> None:
    with refused("Command not supported"):
        await client.command(b"FROB", b"k")
    assert await client.command(b"PING") == "PONG"


async def test_stop_is_refused_as_by_a_release_build(client: RespClient, admin: RespClient) -> None:
    for c in (client, admin):
        with refused("Unauthorized"):
            await c.command(b"STOP")
    assert await client.command(b"PING") == "PONG"


# -- keys --------------------------------------------------------------------------------


async def test_set_returns_the_key_and_get_reads_it(client: RespClient) -> None:
    assert await client.command(b"SET", b"k", b"v") == b"k"
    assert await client.command(b"GET", b"k") == b"v"
    assert await client.command(b"SET", b"k", b"v2") == b"k"
    assert await client.command(b"GET", b"k") == b"v2"
    assert await client.command(b"GET", b"missing") is None


async def test_set_of_the_same_value_writes_nothing(client: RespClient, admin: RespClient) -> None:
    assert await client.command(b"SET", b"k", b"same value") == b"k"
    before = await info(admin, b"default")
    assert await client.command(b"SET", b"k", b"same value") is None
    after = await info(admin, b"default")
    assert after["data_disk_bytes"] == before["data_disk_bytes"]
    assert after["entries"] == before["entries"] == "1"
    # Only one version was ever written.
    cursor, _, value = await client.command(b"HISTORY", b"k")
    assert (cursor, value) == (None, b"same value")


async def test_mget_mixes_present_and_missing(client: RespClient) -> None:
    await client.command(b"SET", b"a", b"1")
    await client.command(b"SET", b"c", b"3")
    await client.command(b"SET", b"d", b"4")
    await client.command(b"DEL", b"d")
    assert await client.command(b"MGET", b"a", b"b", b"c", b"d", b"a") == [
        b"1",
        None,
        b"3",
        None,
        b"1",
    ]
    with refused("Invalid arguments"):
        await client.command(b"MGET")


async def test_del(client: RespClient) -> None:
    await client.command(b"SET", b"k", b"v")
    assert await client.command(b"DEL", b"k") == "OK"
    assert await client.command(b"GET", b"k") is None
    assert await client.command(b"EXISTS", b"k") == 0
    with refused("Key not found"):
        await client.command(b"DEL", b"k")
    with refused("Key not found"):
        await client.command(b"DEL", b"never")
    # A deleted key comes back with a new SET.
    assert await client.command(b"SET", b"k", b"again") == b"k"
    assert await client.command(b"GET", b"k") == b"again"


async def test_exists_length_keytime_check(client: RespClient, admin: RespClient) -> None:
    await client.command(b"SET", b"k", b"value")
    assert await client.command(b"EXISTS", b"k") == 1
    assert await client.command(b"EXISTS", b"nope") == 0
    assert await client.command(b"LENGTH", b"k") == 5
    assert await client.command(b"LENGTH", b"nope") is None
    assert abs(await client.command(b"KEYTIME", b"k") - time.time()) < 600
    assert await client.command(b"KEYTIME", b"nope") is None
    assert await client.command(b"CHECK", b"k") == 1
    assert await client.command(b"CHECK", b"nope") is None
    # An admin may set the time of a write (replication does).
    assert await admin.command(b"SET", b"old", b"v", b"1234") == b"old"
    assert await admin.command(b"KEYTIME", b"old") == 1234
    for command in (b"EXISTS", b"LENGTH", b"KEYTIME", b"CHECK"):
        with refused("Unexpected arguments"):
            await client.command(command)


async def test_dbsize_counts_live_keys(client: RespClient) -> None:
    assert await client.command(b"DBSIZE") == 0
    for i in range(10):
        await client.command(b"SET", b"k%d" % i, b"v")
    await client.command(b"SET", b"k1", b"changed")
    await client.command(b"DEL", b"k2")
    assert await client.command(b"DBSIZE") == 9


# -- walking -------------------------------------------------------------------------------


async def test_scan_walks_every_live_key_once_in_write_order(
    client: RespClient, raw, zdb: ZdbServer
) -> None:
    # 2100 writes in one go, then overwrites and deletes: expected order is by last write.
    conn: Raw = await raw()
    n = 2100
    conn.writer.write(b"".join(encode(b"SET", b"key%05d" % i, b"x" * (i % 37)) for i in range(n)))
    assert [await conn.reply() for _ in range(n)] == [b"key%05d" % i for i in range(n)]
    order = [b"key%05d" % i for i in range(n)]
    sizes = {k: i % 37 for i, k in enumerate(order)}
    for i in range(0, n, 7):
        key = b"key%05d" % i
        await client.command(b"SET", key, b"new value")
        order.remove(key)
        order.append(key)
        sizes[key] = 9
    for i in range(0, n, 11):
        key = b"key%05d" % i
        await client.command(b"DEL", key)
        order.remove(key)

    items = await walk(client, b"SCAN")
    assert [k for k, _, _ in items] == order
    assert all(size == sizes[k] for k, size, _ in items)
    assert all(abs(ts - time.time()) < 600 for _, _, ts in items)
    backwards = await walk(client, b"RSCAN")
    assert [k for k, _, _ in backwards] == order[::-1]


async def test_scan_of_an_empty_namespace(client: RespClient) -> None:
    for command in (b"SCAN", b"RSCAN"):
        with refused("No more data"):
            await client.command(command)
    with refused("Invalid key format"):
        await client.command(b"SCAN", b"not a cursor")


async def test_keycur_then_scan_from_it(client: RespClient) -> None:
    keys = [b"k%d" % i for i in range(6)]
    for k in keys:
        await client.command(b"SET", k, b"v")
    cursor = await client.command(b"KEYCUR", b"k2")
    assert isinstance(cursor, bytes)
    assert [k for k, _, _ in await walk(client, b"SCAN", cursor)] == keys[3:]
    assert [k for k, _, _ in await walk(client, b"RSCAN", cursor)] == keys[:2][::-1]
    # From the last key there is nothing more.
    with refused("No more data"):
        await client.command(b"SCAN", await client.command(b"KEYCUR", b"k5"))
    with refused("Key not found"):
        await client.command(b"KEYCUR", b"missing")


async def test_kscan_lists_the_live_keys_with_a_prefix(
    client: RespClient, admin: RespClient, connect: Connect
) -> None:
    for key in (b"hello", b"help", b"he", b"abc", b"h\x00\xff"):
        await client.command(b"SET", key, b"v")
    await client.command(b"DEL", b"help")
    await client.command(b"SET", b"hello", b"moved to the end")
    assert await client.command(b"KSCAN", b"h") == [b"0", [b"he", b"h\x00\xff", b"hello"]]
    assert await client.command(b"KSCAN", b"hel") == [b"0", [b"hello"]]
    assert await client.command(b"KSCAN", b"abc") == [b"0", [b"abc"]]
    with refused("No keys match"):
        await client.command(b"KSCAN", b"help")
    with refused("No keys match"):
        await client.command(b"KSCAN", b"hello, and more")
    with refused("Unexpected arguments"):
        await client.command(b"KSCAN")
    with refused("Unexpected arguments"):
        await client.command(b"KSCAN", b"h", b"e")
    with refused("Invalid argument"):
        await client.command(b"KSCAN", b"")
    # Only the keys of the client's own namespace.
    await new_namespace(admin, b"other")
    other = await connect(ns=b"other")
    await other.command(b"SET", b"hop", b"v")
    assert await other.command(b"KSCAN", b"h") == [b"0", [b"hop"]]
    # Ids are no prefixes worth matching: 0-db refuses it in seq mode.
    await new_namespace(admin, b"ids", (b"mode", b"seq"))
    ids = await connect(ns=b"ids")
    await ids.command(b"SET", b"", b"v")
    with refused("Index running mode doesn't support this feature"):
        await ids.command(b"KSCAN", b"\x00")


async def test_kscan_of_many_keys_is_one_reply(raw) -> None:
    conn: Raw = await raw()
    keys = [b"many:%06d" % i for i in range(20_000)]
    await conn.send(b"".join(encode(b"SET", k, b"") for k in keys))
    assert [await conn.reply() for _ in keys] == keys
    assert await conn.cmd(b"SET", b"other", b"v") == b"other"
    assert await conn.cmd(b"KSCAN", b"many:") == [b"0", keys]


async def test_history_walks_back_through_every_version(client: RespClient) -> None:
    for value in (b"one", b"two", b"three"):
        await client.command(b"SET", b"h", value)
    seen = []
    cursor, ts, value = await client.command(b"HISTORY", b"h")
    seen.append(value)
    while cursor is not None:
        assert abs(int(ts) - time.time()) < 600
        cursor, ts, value = await client.command(b"HISTORY", b"h", cursor)
        seen.append(value)
    assert seen == [b"three", b"two", b"one"]
    with refused("No more history"):
        await client.command(b"HISTORY", b"h", b"\0" * 8)
    with refused("Key not found"):
        await client.command(b"HISTORY", b"nope")
    # A cursor of one key cannot read another key's versions.
    await client.command(b"SET", b"other", b"x")
    cursor, _, _ = await client.command(b"HISTORY", b"h")
    with refused("Invalid arguments (invalid key)"):
        await client.command(b"HISTORY", b"other", cursor)


# -- namespace modes and limits ---------------------------------------------------------------


async def test_seq_mode(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"seq", (b"mode", b"seq"))
    c = await connect(ns=b"seq")
    assert [await c.command(b"SET", b"", b"v%d" % i) for i in range(3)] == [
        seq_id(0),
        seq_id(1),
        seq_id(2),
    ]
    assert await c.command(b"GET", seq_id(1)) == b"v1"
    assert await c.command(b"SET", seq_id(1), b"updated") == seq_id(1)
    assert await c.command(b"GET", seq_id(1)) == b"updated"
    # As in 0-db, the update spent an id (3): the next new value gets 4. A SET of the
    # same value writes nothing and spends none; neither does a DEL.
    assert await c.command(b"SET", seq_id(1), b"updated") is None
    assert await c.command(b"SET", b"", b"v4") == seq_id(4)
    assert await c.command(b"DEL", seq_id(4)) == "OK"
    assert await c.command(b"SET", b"", b"v5") == seq_id(5)
    assert await c.command(b"DEL", seq_id(5)) == "OK"
    assert (await info(admin, b"seq"))["next_internal_id"] == "0x00000006"
    with refused("Invalid key, only update authorized"):
        await c.command(b"SET", seq_id(99), b"x")
    with refused("Invalid key, only update authorized"):
        await c.command(b"SET", b"name", b"x")
    assert await c.command(b"GET", seq_id(99)) is None
    assert await c.command(b"DBSIZE") == 3
    assert (await info(admin, b"seq"))["entries"] == "3"
    with refused("Cannot change mode of used namespace"):
        await admin.command(b"NSSET", b"seq", b"mode", b"user")


async def test_seq_ids_as_0db_hands_them_out(admin: RespClient, connect: Connect) -> None:
    """0-db's own suite: new -> 0, overwrite of 0 -> 0, next new -> 2."""
    await new_namespace(admin, b"ids", (b"mode", b"seq"))
    c = await connect(ns=b"ids")
    assert await c.command(b"SET", b"", b"world") == seq_id(0)
    assert await c.command(b"SET", seq_id(0), b"worldnewdata") == seq_id(0)
    assert await c.command(b"SET", b"", b"helloworld") == seq_id(2)
    assert await c.command(b"GET", seq_id(0)) == b"worldnewdata"
    assert await c.command(b"GET", seq_id(1)) is None  # spent by the overwrite, never given
    with refused("Invalid key, only update authorized"):
        await c.command(b"SET", seq_id(1), b"x")
    assert await c.command(b"DBSIZE") == 2


async def test_seq_scan_walks_the_ids_in_order(admin: RespClient, connect: Connect) -> None:
    """As 0-db: an updated id keeps its SCAN place; a cursor (KEYCUR's too) is an id."""
    await new_namespace(admin, b"walk", (b"mode", b"seq"))
    c = await connect(ns=b"walk")
    for i in range(5):
        await c.command(b"SET", b"", b"v%d" % i)
    assert await c.command(b"SET", seq_id(1), b"updated") == seq_id(1)  # spends 5
    assert await c.command(b"DEL", seq_id(3)) == "OK"
    assert await c.command(b"SET", b"", b"v6") == seq_id(6)
    assert [k for k, _, _ in await walk(c, b"SCAN")] == [seq_id(i) for i in (0, 1, 2, 4, 6)]
    assert [k for k, _, _ in await walk(c, b"RSCAN")] == [seq_id(i) for i in (6, 4, 2, 1, 0)]
    assert [item[:2] for item in await walk(c, b"SCAN")][1] == [seq_id(1), 7]
    cursor = await c.command(b"KEYCUR", seq_id(1))
    assert [k for k, _, _ in await walk(c, b"SCAN", cursor)] == [seq_id(i) for i in (2, 4, 6)]
    assert [k for k, _, _ in await walk(c, b"RSCAN", cursor)] == [seq_id(0)]
    # Any 8 bytes are a place among the ids: 3 (deleted) sits between 2 and 4.
    assert [k for k, _, _ in await walk(c, b"SCAN", seq_id(3))] == [seq_id(4), seq_id(6)]
    with refused("Invalid key format"):
        await c.command(b"SCAN", b"short")


async def test_mode_changes_only_on_a_fresh_namespace(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"m")
    assert await admin.command(b"NSSET", b"m", b"mode", b"seq") == "OK"
    assert await admin.command(b"NSSET", b"m", b"mode", b"user") == "OK"
    with pytest.raises(RespError, match=r"^Invalid property value"):
        await admin.command(b"NSSET", b"m", b"mode", b"bogus")
    c = await connect(ns=b"m")
    await c.command(b"SET", b"k", b"v")
    await c.command(b"DEL", b"k")
    # Even with no live key left, the namespace was used.
    with refused("Cannot change mode of used namespace"):
        await admin.command(b"NSSET", b"m", b"mode", b"seq")
    assert await c.command(b"SET", b"k2", b"v") == b"k2"


async def test_maxsize(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"small", (b"maxsize", b"100"))
    c = await connect(ns=b"small")
    assert await c.command(b"SET", b"a", b"x" * 60) == b"a"
    with refused("No space left on this namespace"):
        await c.command(b"SET", b"b", b"x" * 41)
    assert await c.command(b"GET", b"b") is None
    assert await c.command(b"SET", b"b", b"x" * 40) == b"b"  # exactly full
    with refused("No space left on this namespace"):
        await c.command(b"SET", b"c", b"x")
    # An overwrite counts only what it adds: smaller is fine, the same size too.
    assert await c.command(b"SET", b"a", b"y" * 50) == b"a"
    assert await c.command(b"SET", b"a", b"z" * 60) == b"a"
    with refused("No space left on this namespace"):
        await c.command(b"SET", b"a", b"z" * 61)
    assert await c.command(b"GET", b"a") == b"z" * 60
    # A delete frees its room.
    assert await c.command(b"DEL", b"a") == "OK"
    assert await c.command(b"SET", b"c", b"x" * 60) == b"c"
    fields = await info(admin, b"small")
    assert (fields["data_size_bytes"], fields["data_limits_bytes"]) == ("100", "100")


async def test_worm(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"w")
    c = await connect(ns=b"w")
    await c.command(b"SET", b"k", b"v")
    assert await admin.command(b"NSSET", b"w", b"worm", b"1") == "OK"
    assert await c.command(b"SET", b"new", b"v") == b"new"  # new keys are fine
    with refused("Namespace is protected by worm mode"):
        await c.command(b"SET", b"k", b"other")
    with refused("Cannot delete a key when namespace is in worm mode"):
        await c.command(b"DEL", b"k")
    assert await c.command(b"GET", b"k") == b"v"
    assert await admin.command(b"NSSET", b"w", b"worm", b"0") == "OK"
    assert await c.command(b"DEL", b"k") == "OK"


async def test_lock_allows_reads_freeze_allows_nothing(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"l")
    c = await connect(ns=b"l")
    await c.command(b"SET", b"k", b"v")
    assert await admin.command(b"NSSET", b"l", b"lock", b"1") == "OK"
    locked = "Namespace is temporarily locked (read-only)"
    with refused(locked):
        await c.command(b"SET", b"k", b"w")
    with refused(locked):
        await c.command(b"SET", b"new", b"w")
    with refused(locked):
        await c.command(b"DEL", b"k")
    assert await c.command(b"GET", b"k") == b"v"
    assert await c.command(b"EXISTS", b"k") == 1
    assert [k for k, _, _ in await walk(c, b"SCAN")] == [b"k"]

    assert await admin.command(b"NSSET", b"l", b"freeze", b"1") == "OK"
    frozen = "Namespace is temporarily frozen (read-write disabled)"
    for args in (
        (b"GET", b"k"),
        (b"MGET", b"k"),
        (b"EXISTS", b"k"),
        (b"LENGTH", b"k"),
        (b"KEYTIME", b"k"),
        (b"CHECK", b"k"),
        (b"KEYCUR", b"k"),
        (b"HISTORY", b"k"),
        (b"SCAN",),
        (b"RSCAN",),
        (b"KSCAN", b"k"),  # deliberate: 0-db's debug KSCAN lists a frozen namespace
        (b"SET", b"k", b"w"),
        (b"DEL", b"k"),
    ):
        with refused(frozen):
            await c.command(*args)
    # As in 0-db, lock and freeze are one state: unfreezing unlocks too.
    assert await admin.command(b"NSSET", b"l", b"freeze", b"0") == "OK"
    assert await c.command(b"GET", b"k") == b"v"
    assert await c.command(b"SET", b"k", b"w") == b"k"


async def test_lock_0_unlocks(admin: RespClient, connect: Connect) -> None:
    await new_namespace(admin, b"l0")
    c = await connect(ns=b"l0")
    assert await admin.command(b"NSSET", b"l0", b"lock", b"1") == "OK"
    with refused("Namespace is temporarily locked (read-only)"):
        await c.command(b"SET", b"k", b"v")
    assert await admin.command(b"NSSET", b"l0", b"lock", b"0") == "OK"
    assert await c.command(b"SET", b"k", b"v") == b"k"
    assert (await info(admin, b"l0"))["locked"] == "no"


async def test_a_key_longer_than_the_limit_is_refused(client: RespClient) -> None:
    longest = b"k" * MAX_KEY
    assert await client.command(b"SET", longest, b"v") == longest
    with refused("Key too large"):
        await client.command(b"SET", longest + b"k", b"v")
    with refused("Invalid key"):  # nor can any other command name it
        await client.command(b"EXISTS", longest + b"k")
    assert await client.command(b"GET", longest) == b"v"


async def test_flush(admin: RespClient, connect: Connect, client: RespClient) -> None:
    await new_namespace(admin, b"priv", (b"password", b"pw"), (b"public", b"0"))
    c = await connect(ns=b"priv", password=b"pw")
    for i in range(5):
        await c.command(b"SET", b"k%d" % i, b"v")
    assert await c.command(b"FLUSH") == "OK"
    assert await c.command(b"DBSIZE") == 0
    assert await c.command(b"GET", b"k1") is None
    with refused("No more data"):
        await c.command(b"SCAN")
    assert (await info(admin, b"priv"))["password"] == "yes"  # settings stay
    assert await c.command(b"SET", b"after", b"v") == b"after"
    assert await c.command(b"GET", b"after") == b"v"

    # Public namespaces (default included) cannot be flushed.
    await new_namespace(admin, b"pub", (b"password", b"pw"))
    p = await connect(ns=b"pub", password=b"pw")
    await p.command(b"SET", b"k", b"v")
    with refused("Flushing public namespace denied"):
        await p.command(b"FLUSH")
    assert await p.command(b"GET", b"k") == b"v"
    await client.command(b"SET", b"k", b"v")
    with refused("Flushing public namespace denied"):
        await client.command(b"FLUSH")
    assert await client.command(b"GET", b"k") == b"v"


async def test_reload_reads_a_namespace_again_from_its_files(
    admin: RespClient, connect: Connect, client: RespClient, zdb: ZdbServer
) -> None:
    await new_namespace(admin, b"r")
    c = await connect(ns=b"r")
    for i in range(50):
        await c.command(b"SET", b"k%d" % i, b"v%d" % i)
    await c.command(b"DEL", b"k7")
    await c.command(b"SET", b"k3", b"new three")
    before = await walk(c, b"SCAN")
    assert await admin.command(b"RELOAD", b"r") == "OK"
    # The client inside is still inside, and sees the same keys.
    assert await walk(c, b"SCAN") == before
    assert await c.command(b"GET", b"k3") == b"new three"
    assert await c.command(b"DBSIZE") == 49
    assert await c.command(b"SET", b"after", b"reload") == b"after"
    # What changed on disk meanwhile counts: a lock set in the settings file.
    settings = zdb.root / "r" / "settings.json"
    settings.write_text(settings.read_text().replace('"lock": false', '"lock": true'))
    assert await c.command(b"SET", b"k1", b"still open") == b"k1"
    assert await admin.command(b"RELOAD", b"r") == "OK"
    with refused("Namespace is temporarily locked (read-only)"):
        await c.command(b"SET", b"k1", b"x")
    assert await c.command(b"GET", b"k1") == b"still open"
    assert (await info(admin, b"r"))["locked"] == "yes"

    with refused("Permission denied"):
        await client.command(b"RELOAD", b"r")
    with refused("Namespace not found"):
        await admin.command(b"RELOAD", b"nope")
    with refused("Namespace too long"):
        await admin.command(b"RELOAD", b"n" * 129)
    with refused("Unexpected arguments"):
        await admin.command(b"RELOAD")
    with refused("Unexpected arguments"):
        await admin.command(b"RELOAD", b"r", b"OOPS")
    assert await admin.command(b"RELOAD", b"default") == "OK"


async def test_reload_of_unreadable_files_keeps_the_namespace(
    admin: RespClient, connect: Connect, zdb: ZdbServer
) -> None:
    await new_namespace(admin, b"r")
    c = await connect(ns=b"r")
    await c.command(b"SET", b"k", b"v")
    foreign = zdb.root / "r" / "data" / "d00000009.zdb"
    foreign.write_bytes(b"this is not a zdb data file at all")
    with pytest.raises(RespError, match=r"^Cannot reload namespace .*not a zdb data file"):
        await admin.command(b"RELOAD", b"r")
    assert await c.command(b"GET", b"k") == b"v"
    assert await c.command(b"SET", b"k2", b"v2") == b"k2"
    assert foreign.read_bytes() == b"this is not a zdb data file at all"
    foreign.unlink()
    assert await admin.command(b"RELOAD", b"r") == "OK"
    assert await c.command(b"MGET", b"k", b"k2") == [b"v", b"v2"]


async def test_nsdel_disconnects_the_clients_inside(admin: RespClient, raw, zdb: ZdbServer) -> None:
    await new_namespace(admin, b"gone")
    inside: Raw = await raw()
    assert await inside.cmd(b"SELECT", b"gone") == "OK"
    assert await inside.cmd(b"SET", b"k", b"v") == b"k"
    # Nobody removes the namespace they are in.
    assert await admin.command(b"SELECT", b"gone") == "OK"
    with refused("Cannot remove namespace you're currently using."):
        await admin.command(b"NSDEL", b"gone")
    assert await admin.command(b"SELECT", b"default") == "OK"
    assert await admin.command(b"NSDEL", b"gone") == "OK"

    assert await inside.cmd(b"GET", b"k") == Err(
        "Your active namespace is not available anymore (probably removed)."
    )
    assert await inside.closed_by_server()
    with refused("Namespace not found"):
        await admin.command(b"SELECT", b"gone")
    assert not (zdb.root / "gone").exists()
    # The name can be used again, and starts empty.
    await new_namespace(admin, b"gone")
    assert await admin.command(b"SELECT", b"gone") == "OK"
    assert await admin.command(b"GET", b"k") is None


# -- values ----------------------------------------------------------------------------------


async def test_empty_value(client: RespClient) -> None:
    assert await client.command(b"SET", b"e", b"") == b"e"
    assert await client.command(b"GET", b"e") == b""
    assert await client.command(b"EXISTS", b"e") == 1
    assert await client.command(b"LENGTH", b"e") == 0
    assert await client.command(b"SET", b"e", b"") is None


async def test_largest_value_round_trips(client: RespClient) -> None:
    value = bytes(range(256)) * (8 * MiB // 256)
    assert len(value) == 8 * MiB
    assert await client.command(b"SET", b"big", value) == b"big"
    assert await client.command(b"GET", b"big") == value
    assert await client.command(b"LENGTH", b"big") == 8 * MiB
    assert await client.command(b"CHECK", b"big") == 1


async def test_binary_keys_and_values(client: RespClient) -> None:
    key = b"\r\n\x00key\xff\r\n"
    value = b"\x00\r\n$3\r\n*1\r\n\xff" * 100
    assert await client.command(b"SET", key, value) == key
    assert await client.command(b"GET", key) == value
    assert await client.command(b"MGET", key, b"\x00") == [value, None]
    assert [k for k, _, _ in await walk(client, b"SCAN")] == [key]
    assert await client.command(b"DEL", key) == "OK"
    assert await client.command(b"GET", key) is None


async def test_scan_cursor_survives_compaction(tmp_path) -> None:
    server = await ZdbServer(tmp_path / "small", admin_password=ADMIN, file_limit=4096).start(
        "127.0.0.1", 0
    )
    assert server.address is not None
    c = RespClient(*server.address, timeout=10)
    try:
        n = 1500
        for i in range(n):
            await c.command(b"SET", b"k%05d" % i, b"v" * 50)
        cursor, page = await c.command(b"SCAN")
        assert len(page) < n  # a walk of more than one page, stopped half way
        # Others delete most keys meanwhile: the old files are all garbage, compacted away.
        for i in range(n - 100):
            await c.command(b"DEL", b"k%05d" % i)
        assert server.namespaces["default"].compactions > 0
        rest = [k for k, _, _ in await walk(c, b"SCAN", cursor)]
        assert sorted(rest) == [b"k%05d" % i for i in range(n - 100, n)]
    finally:
        await c.close()
        await server.stop()
