"""Hostile flists are refused with an error naming the rule, and nothing is written
outside the target (nor left inside it)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from flhelpers import REF_BLOCK, RefFlist, tree_files

from zos.flist import FlistError, StoreError, format, unpack_flist
from zos.flist.errors import BlockError


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory with a bystander file that must stay exactly as it is."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/keep").write_text("untouched\n")
    return tmp_path


async def refused(sandbox: Path, build: Callable[[RefFlist], None], match: str, error=FlistError):
    fl = sandbox / "hostile.fl"
    rf = RefFlist(fl, sandbox / "store")
    build(rf)
    rf.close()
    before = tree_files(sandbox / "outside")
    target = sandbox / "target"
    with pytest.raises(error, match=match):
        await unpack_flist(fl, target)
    assert not target.exists(), "a refused flist leaves no target behind"
    assert tree_files(sandbox / "outside") == before
    assert (sandbox / "outside/keep").read_text() == "untouched\n"


async def test_dot_dot_name(sandbox: Path) -> None:
    await refused(sandbox, lambda rf: rf.file(rf.root, "..", b"x"), "'..' is not allowed")


async def test_absolute_name(sandbox: Path) -> None:
    path = str(sandbox / "outside/pwned")
    await refused(sandbox, lambda rf: rf.file(rf.root, path, b"x"), "contains '/'")


async def test_nested_escape_name(sandbox: Path) -> None:
    await refused(sandbox, lambda rf: rf.file(rf.root, "a/../../x", b"x"), "contains '/'")


async def test_file_under_symlink_pointing_out(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        esc = rf.symlink(rf.root, "esc", str(sandbox / "outside"))
        rf.file(esc, "pwned", b"x")

    await refused(sandbox, build, "is not a directory")


async def test_symlink_then_same_name(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        rf.symlink(rf.root, "esc", str(sandbox / "outside/keep"))
        rf.file(rf.root, "esc", b"overwrite")

    await refused(sandbox, build, "duplicate name")


async def test_symlink_out_of_tree_is_stored_never_followed(sandbox: Path) -> None:
    fl = sandbox / "ok.fl"
    rf = RefFlist(fl, sandbox / "store")
    rf.symlink(rf.root, "esc", str(sandbox / "outside"))
    rf.symlink(rf.root, "keep", str(sandbox / "outside/keep"))
    rf.close()
    await unpack_flist(fl, sandbox / "target")
    assert os.readlink(sandbox / "target/esc") == str(sandbox / "outside")
    assert (sandbox / "outside/keep").read_text() == "untouched\n"
    assert tree_files(sandbox / "outside") == {"keep"}


@pytest.mark.parametrize("kind", [stat.S_IFBLK, stat.S_IFCHR])
async def test_device_nodes(sandbox: Path, kind: int) -> None:
    await refused(
        sandbox,
        lambda rf: rf.inode(rf.root, "sda", kind | 0o666, rdev=os.makedev(8, 0)),
        "device nodes are not allowed",
    )


async def test_setuid_file(sandbox: Path) -> None:
    await refused(
        sandbox,
        lambda rf: rf.file(rf.root, "su", b"\x7fELF", mode=0o4755),
        "setuid/setgid files are not allowed",
    )


async def test_block_hash_mismatch(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        rf.file(rf.root, "ok", b"fine")
        rf.file(rf.root, "bad", b"tampered with")
        for p in (sandbox / "store").rglob("*"):
            if p.is_file():
                data = bytearray(p.read_bytes())
                data[-1] ^= 1
                p.write_bytes(bytes(data))

    await refused(sandbox, build, "content hash does not match its id", error=StoreError)


async def test_block_that_does_not_decrypt(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        ino = rf.file(rf.root, "f", b"content")
        rf.db.execute("UPDATE block SET key = ? WHERE ino = ?", (b"\x01" * 32, ino))

    await refused(sandbox, build, "does not decrypt with its key", error=BlockError)


async def test_size_larger_than_blocks(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        ino = rf.file(rf.root, "f", b"12345")
        rf.db.execute("UPDATE inode SET size = 10 WHERE ino = ?", (ino,))

    await refused(sandbox, build, "holds 5 bytes, the size 10 needs 10", error=BlockError)


async def test_size_needs_more_blocks(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        ino = rf.file(rf.root, "f", b"x" * 100)
        rf.db.execute("UPDATE inode SET size = ? WHERE ino = ?", (REF_BLOCK + 1, ino))

    await refused(sandbox, build, r"needs 2 block\(s\)")


async def test_missing_parent(sandbox: Path) -> None:
    await refused(sandbox, lambda rf: rf.file(999, "orphan", b"x"), "parent 999 is a missing inode")


async def test_truncated_database(sandbox: Path) -> None:
    fl = sandbox / "big.fl"
    rf = RefFlist(fl, sandbox / "store")
    d = rf.dir(rf.root, "d")
    for i in range(3000):
        rf.symlink(d, f"link-{i:05d}", f"target/number/{i}")
    rf.close()
    data = fl.read_bytes()
    fl.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlistError, match=r"damaged|truncated|not a valid flist"):
        await unpack_flist(fl, sandbox / "target")
    assert not (sandbox / "target").exists()


async def test_not_a_database(sandbox: Path) -> None:
    (sandbox / "x.fl").write_bytes(b"PK\x03\x04 not sqlite")
    with pytest.raises(FlistError, match="not an SQLite database"):
        await unpack_flist(sandbox / "x.fl", sandbox / "target")


async def test_non_empty_target_is_kept(sandbox: Path) -> None:
    fl = sandbox / "ok.fl"
    rf = RefFlist(fl, sandbox / "store")
    rf.file(rf.root, "f", b"x")
    rf.close()
    with pytest.raises(FlistError, match="new or empty directory"):
        await unpack_flist(fl, sandbox / "outside")
    assert tree_files(sandbox / "outside") == {"keep"}


async def test_parent_cycle(sandbox: Path) -> None:
    def build(rf: RefFlist) -> None:
        a = rf.dir(rf.root, "a")
        b = rf.dir(a, "b")
        rf.db.execute("UPDATE inode SET parent = ? WHERE ino = ?", (b, a))

    await refused(sandbox, build, "not reachable from the root")


async def test_a_tree_too_deep_is_refused_before_anything_is_written(sandbox: Path) -> None:
    # Issue 12, finding 1: 3,000 nested directories were unpacked, then could not be removed.
    def build(rf: RefFlist) -> None:
        parent = rf.root
        for _ in range(3000):
            parent = rf.dir(parent, "d")
        rf.file(parent, "f", b"x")

    await refused(sandbox, build, f"directories nested more than {format.MAX_DEPTH} deep")


async def test_the_deepest_tree_allowed_unpacks(sandbox: Path) -> None:
    fl = sandbox / "deep.fl"
    rf = RefFlist(fl, sandbox / "store")
    parent = rf.root
    for _ in range(format.MAX_DEPTH):
        parent = rf.dir(parent, "d")
    rf.file(parent, "f", b"x")
    rf.close()
    await unpack_flist(fl, sandbox / "target")
    assert (sandbox / "target" / "/".join(["d"] * format.MAX_DEPTH) / "f").read_bytes() == b"x"


async def test_too_many_entries_are_refused(sandbox: Path, monkeypatch) -> None:
    # Issue 12, finding 1: the entry count is bounded too (lowered here to keep it quick).
    monkeypatch.setattr(format, "MAX_ENTRIES", 100)

    def build(rf: RefFlist) -> None:
        for i in range(100):
            rf.file(rf.root, f"f{i}", b"")

    await refused(sandbox, build, "the tree has 101 entries, more than the 100 allowed")
