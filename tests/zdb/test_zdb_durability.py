"""What survives: restarts, rotation across files, torn tails, kill -9 under load,
damaged bytes, a full disk, foreign files; seq mode's ids through all of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from zdb_helpers import walk

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient, RespError
from zos.zdb.datalog import HEADER, KIND_SET, MAGIC, DataLog, StorageError, crc32c_raw

ADMIN = "admin-secret"


def test_crc_is_0db_variant() -> None:
    # CRC32C with initial value 0 and no final XOR (reference/zdb.md).
    assert crc32c_raw(b"123456789") == 0x58E3FA20
    assert crc32c_raw(b"6789", crc32c_raw(b"12345")) == 0x58E3FA20


async def start(root: Path, **kw) -> tuple[ZdbServer, RespClient]:
    server = await ZdbServer(root, admin_password=ADMIN, **kw).start("127.0.0.1", 0)
    assert server.address is not None
    client = RespClient(*server.address, timeout=10)
    await client.command(b"AUTH", ADMIN.encode())
    return server, client


async def stop(server: ZdbServer, client: RespClient) -> None:
    await client.close()
    await server.stop()


def data_files(root: Path, ns: str = "default") -> list[Path]:
    return sorted((root / ns / "data").glob("d*.zdb"))


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root, file_limit=4096)
    for i in range(200):
        await c.command(b"SET", b"k%d" % i, b"v%d" % i * 10)
    await c.command(b"SET", b"k5", b"new five")
    await c.command(b"DEL", b"k7")
    await c.command(b"NSNEW", b"seq")
    await c.command(b"NSSET", b"seq", b"mode", b"seq")
    await c.command(b"NSSET", b"seq", b"password", b"pw")
    await c.command(b"NSSET", b"seq", b"public", b"0")
    await c.command(b"NSSET", b"seq", b"maxsize", b"100000")
    await c.command(b"SELECT", b"seq", b"pw")
    ids = [await c.command(b"SET", b"", b"item %d" % i) for i in range(3)]
    assert ids == [i.to_bytes(8, "little") for i in range(3)]
    await c.command(b"SELECT", b"default")
    before = await c.command(b"SCAN")
    await stop(server, c)
    assert len(data_files(root)) > 2  # 4 KiB files: the keys span several

    server, c = await start(root, file_limit=4096)
    try:
        assert await c.command(b"DBSIZE") == 199
        assert await c.command(b"GET", b"k5") == b"new five"
        assert await c.command(b"GET", b"k7") is None
        assert await c.command(b"GET", b"k199") == b"v199" * 10
        assert await c.command(b"SCAN") == before
        # Walk every key across the file boundaries, both ways.
        seen = [item[0] for item in await walk(c, b"SCAN")]
        expected = [b"k%d" % i for i in range(200) if i not in (5, 7)] + [b"k5"]
        assert seen == expected
        back = await c.command(b"RSCAN")
        assert [item[0] for item in back[1]] == expected[::-1]
        # History crosses files too.
        _, _, value = await c.command(b"HISTORY", b"k5")
        assert value == b"new five"

        info = (await c.command(b"NSINFO", b"seq")).decode()
        assert "mode: sequential" in info and "password: yes" in info and "public: no" in info
        assert "data_limits_bytes: 100000" in info
        with pytest.raises(RespError, match="Namespace protected and private"):
            await c.command(b"SELECT", b"seq")
        await c.command(b"SELECT", b"seq", b"pw")
        assert await c.command(b"GET", ids[1]) == b"item 1"
        assert await c.command(b"SET", b"", b"next") == (3).to_bytes(8, "little")
    finally:
        await stop(server, c)


async def test_torn_tail_is_cut_and_kept_aside(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root)
    for i in range(10):
        await c.command(b"SET", b"k%d" % i, os.urandom(1000))
    good = {i: await c.command(b"GET", b"k%d" % i) for i in range(10)}
    await stop(server, c)

    (path,) = data_files(root)
    size = path.stat().st_size
    # A crash in the middle of the last SET: its header and half its value are down.
    with open(path, "r+b") as f:
        f.seek(size - 1000 - HEADER.size - 2)
        whole = f.read()
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])
    # ... and, on another crash, blocks of zeros where the file grew.
    torn_size = path.stat().st_size

    server, c = await start(root)
    try:
        assert path.stat().st_size == size
        aside = list(path.parent.glob("*.torn-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == whole[: len(whole) // 2]
        assert torn_size - size == len(whole) // 2
        assert {i: await c.command(b"GET", b"k%d" % i) for i in range(10)} == good
        assert (
            f"stats_data_torn_bytes: {len(whole) // 2}"
            in (await c.command(b"NSINFO", b"default")).decode()
        )
        await c.command(b"SET", b"after", b"works")
    finally:
        await stop(server, c)

    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    server, c = await start(root)
    try:
        assert await c.command(b"GET", b"after") == b"works"
        assert await c.command(b"DBSIZE") == 11
    finally:
        await stop(server, c)


async def test_damaged_bytes_are_never_served(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root, file_limit=4096)
    for i in range(20):
        await c.command(b"SET", b"k%d" % i, b"%04d" % i * 100)
    await stop(server, c)
    first = data_files(root)[0]
    with open(first, "r+b") as f:  # flip one byte of k0's value, in an older file
        f.seek(len(MAGIC) + HEADER.size + 2 + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))

    server, c = await start(root, file_limit=4096)
    try:
        assert await c.command(b"CHECK", b"k0") == 0
        assert await c.command(b"CHECK", b"k1") == 1
        with pytest.raises(RespError, match="CRC mismatch"):
            await c.command(b"GET", b"k0")
        assert await c.command(b"GET", b"k19") == b"0019" * 100
    finally:
        await stop(server, c)


async def test_unreadable_older_file_is_reported_not_destroyed(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root, file_limit=4096)
    for i in range(40):
        await c.command(b"SET", b"k%d" % i, b"x" * 300)
    await stop(server, c)
    first = data_files(root)[0]
    content = first.read_bytes()
    # Garble the second entry's header: the rest of that file cannot be walked.
    second = len(MAGIC) + HEADER.size + 2 + 300
    garbled = content[:second] + b"\xee" * HEADER.size + content[second + HEADER.size :]
    first.write_bytes(garbled)

    server, c = await start(root, file_limit=4096)
    try:
        assert await c.command(b"GET", b"k0") == b"x" * 300
        assert await c.command(b"GET", b"k39") == b"x" * 300  # later files still load
        info = (await c.command(b"NSINFO", b"default")).decode()
        assert "stats_data_faults: 1" in info
    finally:
        await stop(server, c)
    assert first.read_bytes() == garbled  # kept for repair, not cut


def test_foreign_file_stops_the_server_with_its_name(tmp_path: Path) -> None:
    data = tmp_path / "z"
    (data / "default" / "data").mkdir(parents=True)
    (data / "default" / "settings.json").write_text("{}")
    foreign = data / "default" / "data" / "d00000000.zdb"
    foreign.write_bytes(b"this is not a zdb data file at all")
    proc = subprocess.run(
        ["zos", "zdb", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, PATH=f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"),
    )
    assert proc.returncode == 1
    assert f"{foreign}: not a zdb data file" in proc.stderr
    assert foreign.read_bytes() == b"this is not a zdb data file at all"


async def test_acknowledged_writes_survive_kill_9(zdb_proc) -> None:
    zdb_proc.start()
    acked: dict[bytes, bytes] = {}

    async def writer(n: int) -> None:
        c = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
        try:
            for i in range(100_000):
                key, value = b"w%d-%d" % (n, i), os.urandom(64 + i % 2000)
                if await c.command(b"SET", key, value) == key:
                    acked[key] = value
        except RespError:
            pass  # the server died under us: the write in flight was not acknowledged
        finally:
            await c.close()

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    while len(acked) < 3000:
        await asyncio.sleep(0.01)
    zdb_proc.kill()
    await asyncio.gather(*writers)

    zdb_proc.start()
    c = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
    try:
        size = await c.command(b"DBSIZE")
        assert len(acked) <= size <= len(acked) + 4  # at most the in-flight ones more
        missing = [k for k, v in acked.items() if await c.command(b"GET", k) != v]
        assert missing == []
    finally:
        await c.close()


@pytest.mark.root
async def test_full_disk_refuses_the_write_and_keeps_the_rest(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        server, c = await start(mnt / "z")
        stored = []
        try:
            with pytest.raises(RespError, match="Cannot write data right now"):
                for i in range(100):
                    await c.command(b"SET", b"k%d" % i, b"%03d" % i * 20_000)
                    stored.append(i)
            assert stored  # some fit before the disk filled
            # The failed write left no partial entry: the file ends at the last good one.
            with contextlib.suppress(RespError):
                await c.command(b"DEL", b"k0")  # may itself find no room
        finally:
            await stop(server, c)
        server, c = await start(mnt / "z")
        try:
            for i in stored[1:]:
                assert await c.command(b"GET", b"k%d" % i) == b"%03d" % i * 20_000
            assert list((mnt / "z/default/data").glob("*.torn-*")) == []
        finally:
            await stop(server, c)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_overwrites_do_not_grow_the_disk_without_bound(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root, file_limit=64 * 1024)
    try:
        for i in range(50):
            await c.command(b"SET", b"keep%d" % i, b"%02d" % i * 500)
        for round_ in range(200):  # 200 rounds x 20 keys x 1 KiB: 4 MiB written
            for k in range(20):
                await c.command(b"SET", b"hot%d" % k, b"%03d" % round_ * 341)
            await c.command(b"DEL", b"hot0")
        info = (await c.command(b"NSINFO", b"default")).decode()
        fields = dict(line.split(": ", 1) for line in info.splitlines()[1:])
        live, disk = int(fields["data_size_bytes"]), int(fields["data_disk_bytes"])
        assert int(fields["data_compactions"]) > 10
        # Garbage stays under max(live / 2, one file); plus the file being written.
        assert disk < live * 2 + 3 * 64 * 1024
        assert await c.command(b"GET", b"keep7") == b"07" * 500
        assert await c.command(b"GET", b"hot3") == b"199" * 341
        assert await c.command(b"GET", b"hot0") is None
        keys = {item[0] for item in await walk(c, b"SCAN")}
        assert keys == {b"keep%d" % i for i in range(50)} | {b"hot%d" % k for k in range(1, 20)}
    finally:
        await stop(server, c)


async def test_crash_between_copy_and_drop_keeps_the_latest(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await start(root, file_limit=4096)
    try:
        await c.command(b"SET", b"a", b"old a")
        await c.command(b"SET", b"b", b"only b")
        await c.command(b"DEL", b"a")
        await c.command(b"SET", b"a", b"new a" * 10)
        first = data_files(root)[0]
        saved = first.read_bytes()
        ns = server.namespaces["default"]
        ns.compact_oldest()
        assert not first.exists()
    finally:
        await stop(server, c)
    # A crash between copying and removing the old file: it is back beside the
    # copies, and replay must let the later entries win.
    first.write_bytes(saved)
    server, c = await start(root, file_limit=4096)
    try:
        assert await c.command(b"GET", b"a") == b"new a" * 10
        assert await c.command(b"GET", b"b") == b"only b"
        assert await c.command(b"DBSIZE") == 2
    finally:
        await stop(server, c)


# -- seq mode ids: 0-db's numbering across restarts, compaction and kill -9 ----------------


def seq_id(n: int) -> bytes:
    return n.to_bytes(8, "little")


async def seq_namespace(root: Path, **kw) -> tuple[ZdbServer, RespClient]:
    server, c = await start(root, **kw)
    if "ids" not in server.namespaces:
        await c.command(b"NSNEW", b"ids")
        await c.command(b"NSSET", b"ids", b"mode", b"seq")
    await c.command(b"SELECT", b"ids")
    return server, c


async def test_seq_ids_go_on_after_restarts_and_compaction(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await seq_namespace(root, file_limit=4096)
    values: dict[int, bytes] = {}
    next_id = compactions = 0
    try:
        for round_ in range(30):
            for _ in range(3):
                assert await c.command(b"SET", b"", b"new %d" % next_id) == seq_id(next_id)
                values[next_id] = b"new %d" % next_id
                next_id += 1
            for i in sorted(values)[:4]:  # updates: each one spends an id too
                values[i] = b"round %d of %d" % (round_, i) * 20
                assert await c.command(b"SET", seq_id(i), values[i]) == seq_id(i)
                next_id += 1
            last = max(values)
            assert await c.command(b"DEL", seq_id(last)) == "OK"  # the highest id goes
            del values[last]
            ns = server.namespaces["ids"]
            for _ in range(3):  # what the dropped files held must not be forgotten
                ns.compact_oldest()
            compactions += ns.compactions
            if round_ % 10 == 9:
                await stop(server, c)
                server, c = await seq_namespace(root, file_limit=4096)
        assert compactions > 0
    finally:
        await stop(server, c)
    server, c = await seq_namespace(root, file_limit=4096)
    try:
        assert await c.command(b"SET", b"", b"after") == seq_id(next_id)
        for i, value in values.items():
            assert await c.command(b"GET", seq_id(i)) == value
        assert await c.command(b"DBSIZE") == len(values) + 1
        # SCAN walks the ids in order, wherever compaction moved their values.
        walked = [item[0] for item in await walk(c, b"SCAN")]
        assert walked == [seq_id(i) for i in sorted(values)] + [seq_id(next_id)]
    finally:
        await stop(server, c)


async def test_seq_crash_inside_compaction_keeps_the_numbering(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await seq_namespace(root, file_limit=4096)
    try:
        for i in range(8):
            await c.command(b"SET", b"", b"%d" % i * 100)
        for i in range(5):
            await c.command(b"SET", seq_id(1), b"update %d" % i * 100)  # ids 8..12 spent
        await c.command(b"DEL", seq_id(7))
        first = data_files(root, "ids")[0]
        saved = first.read_bytes()
        server.namespaces["ids"].compact_oldest()
        assert not first.exists()
    finally:
        await stop(server, c)
    # The crash came after the copies and the id mark, before the file went.
    first.write_bytes(saved)
    server, c = await seq_namespace(root, file_limit=4096)
    try:
        assert await c.command(b"SET", b"", b"next") == seq_id(13)
        assert await c.command(b"GET", seq_id(1)) == b"update 4" * 100
        assert await c.command(b"GET", seq_id(7)) is None
    finally:
        await stop(server, c)
    # And a crash before the mark was written: the dropped file is all there still.
    (root / "ids" / "data" / "next-id").unlink()
    server, c = await seq_namespace(root, file_limit=4096)
    try:
        assert await c.command(b"SET", b"", b"next") == seq_id(14)
    finally:
        await stop(server, c)


async def test_seq_data_written_before_updates_spent_ids_stays_readable(tmp_path: Path) -> None:
    """Files written when an update spent no id (new 0, update 0, then new 1): every id
    stays readable, and new ids come after all of them, never one in use."""
    root = tmp_path / "z"
    server, c = await seq_namespace(root)
    await stop(server, c)
    log = DataLog(root / "ids" / "data")
    log.load(lambda entry: None)
    first = log.append(KIND_SET, seq_id(0), b"zero", None, 0)
    log.append(KIND_SET, seq_id(0), b"zero, updated", None, first.loc)
    log.append(KIND_SET, seq_id(1), b"one", None, 0)
    log.close()
    server, c = await seq_namespace(root)
    try:
        assert await c.command(b"MGET", seq_id(0), seq_id(1)) == [b"zero, updated", b"one"]
        assert await c.command(b"SET", b"", b"two") == seq_id(2)
        assert await c.command(b"SET", seq_id(1), b"one, updated") == seq_id(1)
        assert await c.command(b"SET", b"", b"four") == seq_id(4)
    finally:
        await stop(server, c)


async def test_seq_flush_starts_the_ids_again(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await seq_namespace(root, file_limit=4096)
    try:
        await c.command(b"NSSET", b"ids", b"password", b"pw")
        await c.command(b"NSSET", b"ids", b"public", b"0")
        await c.command(b"SELECT", b"ids", b"pw")
        for i in range(20):
            new = await c.command(b"SET", b"", b"%d" % i * 300)
            await c.command(b"SET", new, b"again %d" % i * 300)
        server.namespaces["ids"].compact_oldest()
        assert (root / "ids" / "data" / "next-id").exists()
        assert await c.command(b"FLUSH") == "OK"
        assert await c.command(b"SET", b"", b"first again") == seq_id(0)
    finally:
        await stop(server, c)
    # A FLUSH cut short after its rename: the old data is gone for good on start.
    (root / "ids" / ".flushed-data").mkdir()
    (root / "ids" / ".flushed-data" / "d00000000.zdb").write_bytes(MAGIC)
    server, c = await start(root, file_limit=4096)
    try:
        await c.command(b"SELECT", b"ids", b"pw")
        assert await c.command(b"SET", b"", b"second") == seq_id(1)
        assert not (root / "ids" / ".flushed-data").exists()
    finally:
        await stop(server, c)


async def test_a_damaged_id_mark_stops_the_namespace_with_its_name(tmp_path: Path) -> None:
    root = tmp_path / "z"
    server, c = await seq_namespace(root)
    await stop(server, c)
    mark = root / "ids" / "data" / "next-id"
    for damaged in ("twelve\n", "12\n", "12 0 0\n", "-1 0\n", f"{1 << 64} 0\n", ""):
        mark.write_text(damaged)
        with pytest.raises(StorageError, match=f"{mark}: expected NEXT-ID LOCATION"):
            await start(root)
        assert mark.read_text() == damaged


async def test_seq_ids_survive_kill_9(zdb_proc) -> None:
    """Writers add and update values in seq mode until kill -9, once compaction has run
    (small files): after it every acknowledged value is there, and the next id is the
    count of ids spent, give or take the writes in flight (an update in flight may have
    landed: its key then holds either value)."""
    zdb_proc.start("--mode", "seq", "--datasize", "65536")
    acked: dict[bytes, bytes] = {}
    in_flight: dict[bytes, bytes] = {}  # key -> the update sent when the server died
    spent = 0

    async def writer(n: int) -> None:
        nonlocal spent
        c = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
        mine: list[bytes] = []
        try:
            for i in range(100_000):
                value = os.urandom(64 + i % 700)
                key = mine[i % len(mine)] if i % 3 else b""  # two updates a new id
                if key:
                    in_flight[key] = value
                got = await c.command(b"SET", key, value)
                in_flight.pop(key, None)
                spent += 1
                acked[got] = value
                if not key:
                    mine.append(got)
        except (RespError, OSError, asyncio.IncompleteReadError):
            pass  # the server died under us: the write in flight was not acknowledged
        finally:
            await c.close()

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    probe = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
    try:
        while spent < 3000 or b"data_compactions: 0\n" in await probe.command(
            b"NSINFO", b"default"
        ):
            await asyncio.sleep(0.01)
    finally:
        await probe.close()
    zdb_proc.kill()
    await asyncio.gather(*writers)

    zdb_proc.start("--mode", "seq", "--datasize", "65536")
    c = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
    try:
        found = {k: await c.command(b"GET", k) for k in acked}
        missing = {k: v for k, v in found.items() if v not in (acked[k], in_flight.get(k))}
        assert missing == {}
        assert len(in_flight) <= 4
        new = int.from_bytes(await c.command(b"SET", b"", b"after"), "little")
        assert spent <= new <= spent + 4
    finally:
        await c.close()
