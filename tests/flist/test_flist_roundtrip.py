"""Pack a tree with every kind of entry, unpack it, and compare the full listings."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from flhelpers import listing

from zos.cli import main
from zos.flist import BLOCK_SIZE, Router, pack, read_flist, unpack_flist

IS_ROOT = os.geteuid() == 0
SIZES = {"zero": 0, "one": 1, "exact": BLOCK_SIZE, "exact_plus": BLOCK_SIZE + 1}


def make_rich_tree(root: Path, big: int = 50 * 1024 * 1024) -> None:
    """Files of many sizes, symlinks, hard links, empty dirs, modes, owners, mtimes."""
    root.mkdir()
    for name, size in SIZES.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "big").write_bytes(os.urandom(big))
    (root / "same_as_exact").write_bytes((root / "exact").read_bytes())
    (root / "a/b/c").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "ro").mkdir()
    (root / "ro/inside").write_text("read-only dir content\n")
    (root / "tmp").mkdir()
    (root / "private").mkdir()
    (root / "a/script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "a/secret").write_text("s3cret")
    (root / "a/hard1").write_text("linked content\n")
    os.link(root / "a/hard1", root / "a/b/hard2")
    os.link(root / "a/hard1", root / "hard3")
    (root / "a/rel").symlink_to("../one")
    (root / "abs").symlink_to("/etc/passwd")
    (root / "dangling").symlink_to("nowhere/at/all")
    (root / "dirlink").symlink_to("a/b")
    os.mkfifo(root / "a/fifo")
    (root / "ünïcode näme").write_text("utf-8 names\n")
    os.chmod(root / "a/script.sh", 0o755)
    os.chmod(root / "a/secret", 0o600)
    os.chmod(root / "one", 0o640)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "private", 0o700)
    if IS_ROOT:
        os.chown(root / "a/secret", 1234, 5678)
        os.chown(root / "a", 1000, 1000)
        os.chown(root / "dangling", 42, 43, follow_symlinks=False)
        os.chown(root / "a/hard1", 7, 8)
    times = [631_152_000, 1_000_000_000, 1_700_000_000, 1_900_000_000]  # 1990 .. 2030
    paths = sorted((p for p in root.rglob("*")), key=lambda p: -len(p.parts))
    for i, p in enumerate(paths):
        t = times[i % len(times)]
        os.utime(p, (t, t), follow_symlinks=False)
    os.chmod(root / "ro", 0o555)  # after its content was written
    os.utime(root / "ro", (1_234_567_890, 1_234_567_890))
    os.utime(root, (1_111_111_111, 1_111_111_111))


@pytest.fixture(scope="module")
def rich_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rich") / "src"
    make_rich_tree(root)
    return root


def test_cli_round_trip_keeps_everything(rich_tree: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    fl = tmp_path / "rich.fl"
    assert main(["flist", "pack", str(rich_tree), "-o", str(fl), "--store", f"dir://{store}"]) == 0
    out = tmp_path / "out"
    assert main(["flist", "unpack", str(fl), str(out)]) == 0
    assert listing(out) == listing(rich_tree)

    capsys.readouterr()
    assert main(["flist", "inspect", str(fl)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("=> /hard3 (hard link)") == 2  # breadth first: /hard3 comes first
    assert "/abs -> /etc/passwd" in shown
    assert f"store 00-ff=dir://{store}" in shown


async def test_block_counts_and_dedup(rich_tree: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    router = Router.parse([f"dir://{store}"])
    result = await pack(rich_tree, tmp_path / "a.fl", router)
    flist = read_flist(tmp_path / "a.fl")
    blocks = {e.path: len(e.blocks) for e in flist.entries if e.kind == "file"}
    assert blocks["zero"] == 0
    assert blocks["one"] == 1
    assert blocks["exact"] == 1
    assert blocks["exact_plus"] == 2
    assert blocks["big"] == 50 * 1024 * 1024 // BLOCK_SIZE
    by_path = {e.path: e for e in flist.entries}
    assert by_path["same_as_exact"].blocks == by_path["exact"].blocks  # convergent
    stored = sorted(p.name for p in store.rglob("*") if p.is_file())
    assert len(stored) == len(set(stored)) == result.new_blocks < result.blocks
    # packing again writes nothing new to the store
    await pack(rich_tree, tmp_path / "b.fl", router)
    assert sorted(p.name for p in store.rglob("*") if p.is_file()) == stored
    await router.close()


async def test_routes_split_and_replicate(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(os.urandom(1000 + i))
    low, high, copy = tmp_path / "low", tmp_path / "high", tmp_path / "copy"
    router = Router.parse([f"00-7f=dir://{low}", f"80-ff=dir://{high}", f"dir://{copy}"])
    await pack(src, tmp_path / "r.fl", router)
    await router.close()
    lows = {p.name for p in low.rglob("*") if p.is_file()}
    highs = {p.name for p in high.rglob("*") if p.is_file()}
    assert lows and highs and all(n[:2] < "80" for n in lows) and all(n[:2] >= "80" for n in highs)
    assert {p.name for p in copy.rglob("*") if p.is_file()} == lows | highs
    routes = read_flist(tmp_path / "r.fl").routes
    assert [(r.start, r.end) for r in routes] == [(0, 0x7F), (0x80, 0xFF), (0, 0xFF)]
    # any one complete replica is enough to unpack
    await unpack_flist(tmp_path / "r.fl", tmp_path / "out", stores=[f"dir://{copy}"])
    assert listing(tmp_path / "out")[1:] == listing(src)[1:]


@pytest.mark.skipif(not IS_ROOT, reason="tar keeps owners only for root")
async def test_tar_source_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_rich_tree(src, big=3 * BLOCK_SIZE + 17)
    tar = tmp_path / "tree.tar.gz"
    subprocess.run(
        ["tar", "--format=posix", "--numeric-owner", "-czf", str(tar), "-C", str(src), "."],
        check=True,
    )
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    result = await pack(tar, tmp_path / "t.fl", router)
    await router.close()
    assert result.files > 5
    await unpack_flist(tmp_path / "t.fl", tmp_path / "out")
    assert listing(tmp_path / "out") == listing(src)


async def test_setuid_is_refused_unless_stripped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "su").write_bytes(b"\x7fELF")
    os.chmod(src / "su", 0o4755)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    await pack(src, tmp_path / "s.fl", router)
    await router.close()
    with pytest.raises(Exception, match="setuid/setgid files are not allowed"):
        await unpack_flist(tmp_path / "s.fl", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    await unpack_flist(tmp_path / "s.fl", tmp_path / "out", setuid="strip")
    assert stat.S_IMODE(os.stat(tmp_path / "out/su").st_mode) == 0o755
