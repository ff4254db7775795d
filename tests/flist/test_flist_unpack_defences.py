"""Each of unpack's own defences, alone.

`read_flist` refuses hostile names, duplicates and children of symlinks before
`unpack` sees a tree, so the hostile tests (test_flist_hostile.py) are stopped there
first. Here `unpack` gets trees `read_flist` would never pass (built as `Flist`
objects by hand) so that only the defence under test stands between the tree and a
file outside the target: O_NOFOLLOW on every directory walked, on the file written,
on the inode whose metadata is set; no following when linking or setting a symlink's
own owner and times; the target itself not a symlink.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from flhelpers import RefFlist, ref_encrypt

from zos.flist import FlistError, StoreError, unpack_flist
from zos.flist.blocks import encrypt_block
from zos.flist.format import Entry, Flist, Kind
from zos.flist.unpack import unpack

ROOT = 1
MODES = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the target with a file nothing may touch."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep").write_text("untouched\n")
    os.chmod(d / "keep", 0o600)
    os.utime(d / "keep", (1_000_000_000, 1_000_000_000))
    return d


def snapshot(directory: Path) -> dict[str, tuple]:
    """Names, types, contents, modes, owners, times and inodes of everything in it."""
    out = {}
    for p in sorted(directory.rglob("*")):
        st = os.lstat(p)
        content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(directory))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_nlink,
            content,
        )
    return out


class Tree:
    """Entries in the order unpack takes them (parents first), blocks to fetch."""

    def __init__(self) -> None:
        self.entries = [self._entry(ROOT, 0, "/", "", "dir", 0o755)]
        self.ciphers: dict[bytes, bytes] = {}

    @staticmethod
    def _entry(ino: int, parent: int, name: str, path: str, kind: Kind, perm: int) -> Entry:
        return Entry(
            ino=ino,
            parent=parent,
            name=name,
            path=path,
            kind=kind,
            mode=MODES[kind] | perm,
            uid=0,
            gid=0,
            size=0,
            mtime=1_600_000_000,
            ctime=1_600_000_000,
        )

    def add(
        self,
        kind: Kind,
        path: str,
        *,
        parent: int | None = None,
        perm: int = 0o644,
        target: str | None = None,
        data: bytes = b"",
        link_to: int | None = None,
        uid: int = 0,
    ) -> int:
        """An entry at `path`; `parent` may say another inode than the path implies
        (or one that does not exist): a lie read_flist would refuse."""
        ino = len(self.entries) + 1
        if parent is None:
            dirname = path.rpartition("/")[0]
            parent = next(e.ino for e in self.entries if e.path == dirname)
        e = self._entry(ino, parent, path.rpartition("/")[2], path, kind, perm)
        e.target, e.link_to, e.uid, e.gid = target, link_to, uid, uid
        if data:
            block, cipher = encrypt_block(data)
            self.ciphers[block.id] = cipher
            e.blocks, e.size = [block], len(data)
        self.entries.append(e)
        return ino

    def flist(self) -> Flist:
        return Flist(self.entries, {}, [])

    def fetch(self) -> Callable[[bytes], Awaitable[bytes]]:
        async def get(block_id: bytes) -> bytes:
            return self.ciphers[block_id]

        return get


async def refused_by_the_kernel(tree: Tree, target: Path, outside: Path) -> None:
    """unpack stops where the kernel refuses to follow a symlink (ELOOP; ENOTDIR for
    O_DIRECTORY), and nothing outside changed."""
    before = snapshot(outside)
    with pytest.raises(OSError) as e:
        await unpack(tree.flist(), target, tree.fetch(), owners=True)
    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR), e.value
    assert snapshot(outside) == before


async def test_a_directory_on_the_way_is_never_a_followed_symlink(
    tmp_path: Path, outside: Path
) -> None:
    """A file whose parent is a symlink to the outside: writing it walks the parent
    with O_NOFOLLOW (read_flist's "parent is not a directory" is bypassed here)."""
    tree = Tree()
    link = tree.add("symlink", "esc", target=str(outside))
    tree.add("file", "esc/keep", parent=link, data=b"pwned\n")
    await refused_by_the_kernel(tree, tmp_path / "target", outside)


async def test_the_file_written_is_never_a_followed_symlink(tmp_path: Path, outside: Path) -> None:
    """A symlink to a file outside, and file content for the same name (its entry
    under a parent that does not exist, so nothing created a regular file first)."""
    tree = Tree()
    tree.add("symlink", "lnk", target=str(outside / "keep"))
    tree.add("file", "lnk", parent=999, data=b"pwned\n")
    await refused_by_the_kernel(tree, tmp_path / "target", outside)


async def test_metadata_is_never_set_through_a_symlink(tmp_path: Path, outside: Path) -> None:
    """The same, with no content: only the mode/owner/time step opens the name, and
    it must not chmod 0777 or chown the file outside."""
    tree = Tree()
    tree.add("symlink", "lnk", target=str(outside / "keep"))
    tree.add("file", "lnk", parent=999, perm=0o777, uid=4321)
    await refused_by_the_kernel(tree, tmp_path / "target", outside)


async def test_a_created_file_never_opens_an_existing_symlink(
    tmp_path: Path, outside: Path
) -> None:
    """A symlink and an empty file of the same name in one directory (read_flist's
    duplicate check bypassed): the file's create neither follows nor reuses it."""
    tree = Tree()
    tree.add("symlink", "dup", target=str(outside / "keep"))
    tree.add("file", "dup", perm=0o777)
    before = snapshot(outside)
    with pytest.raises(OSError) as e:
        await unpack(tree.flist(), tmp_path / "target", tree.fetch(), owners=True)
    assert e.value.errno in (errno.EEXIST, errno.ELOOP)
    assert snapshot(outside) == before


async def test_a_hard_link_to_a_symlink_links_the_symlink(tmp_path: Path, outside: Path) -> None:
    """A hard link whose source is a symlink to a file outside (read_flist allows
    links between regular files only): linking never follows it, or the tree would
    hold the outside file itself, writable from inside."""
    tree = Tree()
    link = tree.add("symlink", "lnk", target=str(outside / "keep"))
    tree.add("file", "hard", link_to=link)
    before = snapshot(outside)
    target = tmp_path / "target"
    await unpack(tree.flist(), target, tree.fetch(), owners=True)
    assert stat.S_ISLNK(os.lstat(target / "hard").st_mode)
    assert os.lstat(target / "hard").st_ino != os.stat(outside / "keep").st_ino
    assert snapshot(outside) == before


async def test_an_inode_that_changed_type_is_refused(tmp_path: Path) -> None:
    tree = Tree()
    tree.add("fifo", "x")
    tree.add("file", "x", parent=999, perm=0o4755)
    with pytest.raises(FlistError, match="x: changed type while unpacking"):
        await unpack(tree.flist(), tmp_path / "target", tree.fetch(), owners=True)
    assert stat.S_IMODE(os.lstat(tmp_path / "target" / "x").st_mode) == 0o600


async def test_the_target_is_never_a_followed_symlink(tmp_path: Path) -> None:
    """unpack itself (not only unpack_flist, which checks first) opens its target
    with O_NOFOLLOW: a symlink to an empty directory elsewhere is not written through."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "target").symlink_to(elsewhere)
    tree = Tree()
    tree.add("file", "f", data=b"x")
    with pytest.raises(OSError) as e:
        await unpack(tree.flist(), tmp_path / "target", tree.fetch())
    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old").write_text("x")
    with pytest.raises(FlistError, match="target directory must be empty"):
        await unpack(tree.flist(), tmp_path / "full", tree.fetch())
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["old"]


async def test_a_symlinks_own_owner_and_time_are_set_not_its_targets(
    tmp_path: Path, outside: Path
) -> None:
    """A valid flist (through read_flist) with a symlink to a file outside, owned by
    another uid and with another time: those land on the symlink, never on the file."""
    fl = tmp_path / "ok.fl"
    rf = RefFlist(fl, tmp_path / "store")
    rf.symlink(rf.root, "keep", str(outside / "keep"), uid=4321, gid=4321, mtime=1_234_567_890)
    rf.close()
    before = snapshot(outside)
    await unpack_flist(fl, tmp_path / "target", owners=True)
    st = os.lstat(tmp_path / "target" / "keep")
    assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (4321, 4321, 1_234_567_890)
    assert snapshot(outside) == before


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def many_files(tmp_path: Path, files: int = 40, corrupt: int | None = None) -> Path:
    """An flist of `files` small files in a few directories, with a hard link and a
    symlink; with `corrupt`, that file's block in the store is damaged."""
    fl = tmp_path / "many.fl"
    rf = RefFlist(fl, tmp_path / "store")
    dirs = [rf.dir(rf.root, f"d{i}") for i in range(4)]
    inos = [rf.file(dirs[i % 4], f"f{i}", b"content %d\n" % i) for i in range(files)]
    rf.symlink(dirs[0], "link", "f0")
    hard = rf.file(dirs[1], "hard", b"content 0\n")  # zos's own table: a hard link to f0
    rf.db.execute("CREATE TABLE zos_hardlink (ino INTEGER PRIMARY KEY, target INTEGER)")
    rf.db.execute("INSERT INTO zos_hardlink VALUES (?, ?)", (hard, inos[0]))
    rf.close()
    if corrupt is not None:
        _, _, cipher = ref_encrypt(b"content %d\n" % corrupt)
        damaged = next(
            p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.read_bytes() == cipher
        )
        damaged.write_bytes(cipher[:-1] + bytes([cipher[-1] ^ 1]))
    return fl


async def test_unpack_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """Every directory, file and link descriptor is closed, whether the unpack works
    or is refused half way (a node unpacks flists for as long as it runs)."""
    fl = many_files(tmp_path)
    before = open_fds()
    await unpack_flist(fl, tmp_path / "ok")
    assert open_fds() == before
    assert os.stat(tmp_path / "ok/d1/hard").st_ino == os.stat(tmp_path / "ok/d0/f0").st_ino
    tree = Tree()
    tree.add("symlink", "esc", target=str(tmp_path))
    tree.add("file", "esc/x", parent=2, data=b"x")
    with pytest.raises(OSError):
        await unpack(tree.flist(), tmp_path / "refused", tree.fetch())
    tree = Tree()
    tree.add("fifo", "x")
    tree.add("file", "x", parent=999)
    with pytest.raises(FlistError):
        await unpack(tree.flist(), tmp_path / "changed", tree.fetch())
    with pytest.raises(FlistError, match="must be empty"):
        await unpack(tree.flist(), tmp_path / "ok", tree.fetch())
    assert open_fds() == before


async def test_a_failed_unpack_leaves_no_work_running(tmp_path: Path) -> None:
    """One damaged block among forty files: the error is the block's, and when unpack
    returns no write for the other files is still going on (nothing writes into a
    tree that is being removed)."""
    (tmp_path / "src").mkdir()
    fl = many_files(tmp_path / "src", corrupt=17)
    before = asyncio.all_tasks()
    with pytest.raises(StoreError, match="content hash does not match its id"):
        await unpack_flist(fl, tmp_path / "target")
    assert asyncio.all_tasks() == before
    assert not (tmp_path / "target").exists()


async def test_the_target_may_be_new_with_new_parents_or_empty(tmp_path: Path) -> None:
    tree = Tree()
    tree.add("file", "f", data=b"x")
    await unpack(tree.flist(), tmp_path / "a" / "b" / "c", tree.fetch())
    (tmp_path / "empty").mkdir()
    await unpack(tree.flist(), tmp_path / "empty", tree.fetch())
    assert (tmp_path / "empty" / "f").read_bytes() == b"x"
    (tmp_path / "file").write_text("")
    with pytest.raises(FlistError, match="cannot create"):
        await unpack(tree.flist(), tmp_path / "file" / "sub", tree.fetch())


async def test_nothing_is_open_to_others_until_its_metadata_is_set(tmp_path: Path) -> None:
    """While blocks are fetched (contents not written, owners and modes not set yet),
    every directory is 0700 and every file and fifo 0600: no other user reads a half
    written file or enters the tree meanwhile. The flist's own modes come last."""
    tree = Tree()
    tree.add("dir", "d", perm=0o755)
    tree.add("file", "d/f", data=b"content", perm=0o644)
    tree.add("file", "empty", perm=0o644)
    tree.add("fifo", "pipe", perm=0o666)
    target = tmp_path / "target"
    seen: dict[str, int] = {}
    fetch = tree.fetch()

    async def watching(block_id: bytes) -> bytes:
        for p in target.rglob("*"):
            seen[str(p.relative_to(target))] = stat.S_IMODE(os.lstat(p).st_mode)
        return await fetch(block_id)

    await unpack(tree.flist(), target, watching, owners=True)
    assert seen == {"d": 0o700, "d/f": 0o600, "empty": 0o600, "pipe": 0o600}
    after = {
        str(p.relative_to(target)): stat.S_IMODE(os.lstat(p).st_mode) for p in target.rglob("*")
    }
    assert after == {"d": 0o755, "d/f": 0o644, "empty": 0o644, "pipe": 0o666}


async def test_a_name_is_created_once_never_opened_again(tmp_path: Path) -> None:
    """Two empty files of one name in one directory (read_flist's duplicate check
    bypassed): the second create is refused (EEXIST, O_EXCL), not an open of the first.
    (With O_EXCL, O_NOFOLLOW on that create changes nothing: an exclusive create never
    follows a symlink; test_a_created_file_never_opens_an_existing_symlink covers both.)"""
    tree = Tree()
    tree.add("file", "dup", perm=0o600)
    tree.add("file", "dup", perm=0o4755)
    with pytest.raises(OSError) as e:
        await unpack(tree.flist(), tmp_path / "target", tree.fetch(), owners=True)
    assert e.value.errno == errno.EEXIST
