"""Flists through a real zdb: `zos flist pack --store zdb://...` into a `zos zdb serve`
namespace, then unpack from it, as a farmer's 0-db would be used."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from flhelpers import listing

from zos.cli import main
from zos.flist import BLOCK_SIZE, read_flist
from zos.zdb.client import RespClient


def small_tree(root: Path) -> None:
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "one").write_bytes(b"x")
    (root / "exact").write_bytes(os.urandom(BLOCK_SIZE))
    (root / "exact_plus").write_bytes(os.urandom(BLOCK_SIZE + 1))
    (root / "big").write_bytes(os.urandom(5 * 1024 * 1024 + 7))
    (root / "copy").write_bytes((root / "exact").read_bytes())
    (root / "d/e").mkdir(parents=True)
    (root / "d/link").symlink_to("../one")
    os.link(root / "one", root / "d/e/hard")
    os.chmod(root / "exact", 0o600)


def admin(port: int, *commands: tuple[bytes, ...], auth: bool = True) -> list:
    """Commands on one connection (the CLI under test runs its own event loop)."""

    async def run() -> list:
        c = RespClient("127.0.0.1", port, timeout=10)
        try:
            if auth:
                await c.command(b"AUTH", b"admin-secret")
            return [await c.command(*cmd) for cmd in commands]
        finally:
            await c.close()

    return asyncio.run(run())


def test_pack_and_unpack_through_zdb(zdb_proc, tmp_path: Path, capsys) -> None:
    zdb_proc.start()
    port = zdb_proc.port
    admin(
        port,
        (b"NSNEW", b"blocks"),
        (b"NSSET", b"blocks", b"password", b"pw"),
        (b"NSSET", b"blocks", b"public", b"0"),
    )
    src = tmp_path / "src"
    small_tree(src)
    fl = tmp_path / "t.fl"
    store = f"zdb://:pw@127.0.0.1:{port}/blocks"
    assert main(["flist", "pack", str(src), "-o", str(fl), "--store", store]) == 0

    flist = read_flist(fl)
    ids = {b.id for e in flist.entries for b in e.blocks}
    info = (admin(port, (b"NSINFO", b"blocks")))[0].decode()
    assert f"entries: {len(ids)}\n" in info  # identical blocks were stored once
    # The password never goes into the flist: only where the blocks are.
    assert [r.url for r in flist.routes] == [f"zdb://127.0.0.1:{port}/blocks"]

    out = tmp_path / "out"
    assert main(["flist", "unpack", str(fl), str(out), "--store", store]) == 0
    assert listing(out) == listing(src)

    # Packing again writes nothing: each SET of an identical block answers nil.
    before = (admin(port, (b"NSINFO", b"blocks")))[0]
    assert (
        main(["flist", "pack", str(src), "-o", str(tmp_path / "again.fl"), "--store", store]) == 0
    )
    after = (admin(port, (b"NSINFO", b"blocks")))[0]
    disk = [line for line in before.split(b"\n") if line.startswith(b"data_disk_bytes")]
    assert disk and disk[0] in after

    # The blocks outlive the server: restart it and unpack again.
    zdb_proc.stop()
    zdb_proc.start()
    out2 = tmp_path / "out2"
    assert main(["flist", "unpack", str(fl), str(out2), "--store", store]) == 0
    assert listing(out2) == listing(src)


def test_zdb_store_refusals(zdb_proc, tmp_path: Path, capsys) -> None:
    zdb_proc.start()
    port = zdb_proc.port
    admin(
        port,
        (b"NSNEW", b"shared"),
        (b"NSSET", b"shared", b"password", b"pw"),  # public: read-only without it
        (b"NSNEW", b"private"),
        (b"NSSET", b"private", b"password", b"pw"),
        (b"NSSET", b"private", b"public", b"0"),
    )
    src = tmp_path / "src"
    small_tree(src)

    def pack(store: str) -> int:
        return main(["flist", "pack", str(src), "-o", str(tmp_path / "x.fl"), "--store", store])

    capsys.readouterr()
    assert pack(f"zdb://:wrong@127.0.0.1:{port}/private") == 1
    assert "Access denied" in capsys.readouterr().err
    assert pack(f"zdb://127.0.0.1:{port}/private") == 1
    assert "Namespace protected and private" in capsys.readouterr().err
    assert pack(f"zdb://127.0.0.1:{port}/shared") == 1
    assert "read-only" in capsys.readouterr().err
    assert pack(f"zdb://127.0.0.1:{port}/missing") == 1
    assert "Namespace not found" in capsys.readouterr().err
    infos = admin(port, (b"DBSIZE",), (b"NSINFO", b"shared"), (b"NSINFO", b"private"))
    assert b"entries: 0\n" in infos[1] and b"entries: 0\n" in infos[2]

    # A block whose bytes were changed in the store is refused on unpack.
    good = f"zdb://:pw@127.0.0.1:{port}/private"
    assert pack(good) == 0
    flist = read_flist(tmp_path / "x.fl")
    block = next(b for e in flist.entries if e.path == "exact" for b in e.blocks)
    admin(port, (b"SELECT", b"private", b"pw"), (b"SET", block.id, b"\x00" * 64), auth=False)
    assert (
        main(["flist", "unpack", str(tmp_path / "x.fl"), str(tmp_path / "o"), "--store", good]) == 1
    )
    assert not (tmp_path / "o").exists()
