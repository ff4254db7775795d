"""Interoperability with the reference format, both ways, with no zos code on the other side."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from flhelpers import REF_BLOCK, RefFlist, ref_decrypt

from zos.flist import Router, pack, unpack_flist


async def test_reference_written_flist_unpacks_here(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fl = tmp_path / "ref.fl"
    data = {"empty": b"", "one": b"x", "multi": os.urandom(2 * REF_BLOCK + 3)}
    rf = RefFlist(fl, store)
    etc = rf.dir(rf.root, "etc", mode=0o750, mtime=1_500_000_000)
    rf.file(etc, "empty", data["empty"], mode=0o600)
    rf.file(etc, "one", data["one"], mtime=1_234_567_890)
    rf.file(rf.root, "multi", data["multi"], mode=0o755)
    rf.symlink(rf.root, "link", "etc/one")
    rf.dir(rf.root, "var")
    rf.tag("version", "1")
    rf.close()

    out = tmp_path / "out"
    flist, result = await unpack_flist(fl, out)
    assert flist.tags == {"version": "1"}
    assert (out / "etc/empty").read_bytes() == b""
    assert (out / "etc/one").read_bytes() == b"x"
    assert (out / "multi").read_bytes() == data["multi"]
    assert os.readlink(out / "link") == "etc/one"
    assert (out / "var").is_dir()
    assert stat.S_IMODE((out / "etc").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "multi").stat().st_mode) == 0o755
    assert int((out / "etc/one").stat().st_mtime) == 1_234_567_890
    assert result.blocks == 4


async def test_flist_from_here_reads_with_plain_sqlite(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    content = {"d/big": os.urandom(REF_BLOCK + 10), "small": b"hello", "zero": b""}
    for name, body in content.items():
        (src / name).write_bytes(body)
    (src / "sym").symlink_to("d/big")
    store = tmp_path / "store"
    router = Router.parse([f"dir://{store}"])
    await pack(src, tmp_path / "here.fl", router, tags={"author": "zos"})
    await router.close()

    db = sqlite3.connect(tmp_path / "here.fl")
    cols = [r[1] for r in db.execute("PRAGMA table_info(inode)")]
    assert cols == ["ino", "parent", "name", "size", "uid", "gid", "mode", "rdev", "ctime", "mtime"]
    assert db.execute("SELECT ino, parent, name FROM inode WHERE ino = 1").fetchone() == (1, 0, "/")
    rows = db.execute("SELECT ino, parent, name, size, mode FROM inode").fetchall()
    names = {ino: (parent, name) for ino, parent, name, _, _ in rows}

    def path_of(ino: int) -> str:
        parent, name = names[ino]
        return name if parent == 1 else f"{path_of(parent)}/{name}"

    seen = {}
    for ino, _parent, _name, size, mode in rows:
        if ino == 1 or not stat.S_ISREG(mode):
            continue
        body = b""
        for block_id, key in db.execute(
            "SELECT id, key FROM block WHERE ino = ? ORDER BY rowid", (ino,)
        ):
            assert isinstance(block_id, bytes) and len(block_id) == 32 and len(key) == 32
            h = block_id.hex()
            body += ref_decrypt(block_id, key, (store / h[:2] / h).read_bytes())
        assert len(body) == size
        seen[path_of(ino)] = body
    assert seen == content
    sym = next(ino for ino, _, name, _, _ in rows if name == "sym")
    assert db.execute("SELECT data FROM extra WHERE ino = ?", (sym,)).fetchone() == ("d/big",)
    assert db.execute("SELECT start, end, url FROM route").fetchall() == [
        (0, 255, f"dir://{store}")
    ]
    assert ("author", "zos") in db.execute("SELECT key, value FROM tag").fetchall()
    db.close()
