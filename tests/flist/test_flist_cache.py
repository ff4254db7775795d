"""The node-wide cache: one prepared tree per flist, verified blocks, LRU eviction of
what no container uses; containers get their own overlay on the shared tree."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from zos.flist import DirStore, Router, pack
from zos.flist.cache import FlistCache
from zos.primitives import overlay


class CountingDirStore(DirStore):
    """A real dir store that also counts reads (to see work done once)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    async def get(self, block_id: bytes) -> bytes | None:
        self.reads += 1
        return await super().get(block_id)


async def make_flist(tmp_path: Path, name: str, size: int, seed: bytes = b"") -> Path:
    src = tmp_path / f"src-{name}"
    (src / "bin").mkdir(parents=True)
    (src / "bin/data").write_bytes(seed + os.urandom(size))
    (src / "bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "bin/tool", 0o4755)
    (src / "etc").mkdir()
    (src / "etc/name").write_text(name)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    await pack(src, tmp_path / f"{name}.fl", router)
    await router.close()
    return tmp_path / f"{name}.fl"


async def test_concurrent_prepares_do_the_work_once(tmp_path: Path) -> None:
    fl = await make_flist(tmp_path, "a", 3 * 512 * 1024)
    store = CountingDirStore(tmp_path / "store")
    cache = FlistCache(tmp_path / "cache", 1 << 30, Router([(0, 255, store)]))
    trees = await asyncio.gather(*(cache.prepare(fl) for _ in range(6)))
    assert len(set(trees)) == 1
    tree = trees[0]
    assert store.reads == 5  # 4 blocks of data + 1 of etc/name ("#!/bin/sh" is another)
    assert (tree / "etc/name").read_text() == "a"
    assert stat.S_IMODE((tree / "bin/tool").stat().st_mode) == 0o755  # setuid stripped
    assert [p.name for p in (tmp_path / "cache/trees").iterdir()] == [tree.name]
    # the same .fl from another path is the same tree, without fetching again
    copy = tmp_path / "copy.fl"
    copy.write_bytes(fl.read_bytes())
    assert await cache.prepare(copy) == tree
    assert store.reads == 5
    cache.close()


async def test_damaged_cached_block_is_fetched_again(tmp_path: Path) -> None:
    fl = await make_flist(tmp_path, "a", 1000)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    cache = FlistCache(tmp_path / "cache", 1 << 30, router)
    await cache.prepare(fl)
    cached = [p for p in (tmp_path / "cache/blocks").rglob("*") if p.is_file()]
    assert cached
    victim = cached[0]
    victim.write_bytes(b"garbage")
    data = await cache.get_block(bytes.fromhex(victim.name), router)
    assert data == (tmp_path / "store" / victim.name[:2] / victim.name).read_bytes()
    assert victim.read_bytes() == data
    cache.close()
    await router.close()


async def test_eviction_spares_trees_in_use(tmp_path: Path) -> None:
    mib = 1024 * 1024
    a = await make_flist(tmp_path, "a", 2 * mib)
    b = await make_flist(tmp_path, "b", 2 * mib)
    c = await make_flist(tmp_path, "c", 2 * mib)
    # room for about one tree and its blocks
    cache = FlistCache(tmp_path / "cache", 5 * mib)
    async with cache.use(a) as tree_a:
        assert cache.in_use(tree_a) == 1
        tree_b = await cache.prepare(b)  # over the limit: blocks go, a's tree is in use
        assert tree_a.is_dir() and tree_b.is_dir()
        assert cache.size() <= 5 * mib
    assert cache.in_use(tree_a) == 0
    async with cache.use(c) as tree_c:
        # a and b are unused now and go, least recently used first; c stays
        assert tree_c.is_dir()
        assert not tree_a.exists() and not tree_b.exists()
        assert cache.size() <= 5 * mib
    cache.close()

    # a restart finds what is left and drops half-written trees
    (tmp_path / "cache/trees/.half-written").mkdir()
    again = FlistCache(tmp_path / "cache", 5 * mib)
    assert not (tmp_path / "cache/trees/.half-written").exists()
    assert await again.prepare(c) == tree_c
    again.close()


@pytest.mark.root
async def test_each_container_gets_its_own_overlay(tmp_path: Path) -> None:
    fl = await make_flist(tmp_path, "a", 1000)
    cache = FlistCache(tmp_path / "cache", 1 << 30)
    tree = await cache.prepare(fl, acquire=True)
    mounts = []
    try:
        for name in ("c1", "c2"):
            storage = tmp_path / name
            target = storage / "rootfs"
            await overlay.mount_overlay(tree, storage / "upper", storage / "work", target)
            mounts.append(target)
        c1, c2 = mounts
        assert overlay.is_mounted(c1) and (c1 / "etc/name").read_text() == "a"
        (c1 / "etc/name").write_text("changed in c1")
        (c1 / "new").write_text("only c1")
        (c2 / "bin/data").unlink()
        assert (c2 / "etc/name").read_text() == "a"
        assert not (c2 / "new").exists()
        assert (c1 / "bin/data").exists()
        assert (tree / "etc/name").read_text() == "a" and (tree / "bin/data").exists()
        assert (tmp_path / "c1/upper/new").read_text() == "only c1"
    finally:
        for target in mounts:
            await overlay.unmount(target)
        cache.release(tree)
        cache.close()
    assert not any(overlay.is_mounted(t) for t in mounts)


async def test_hostile_flist_leaves_no_tree(tmp_path: Path) -> None:
    from zos.flist import StoreError
    from zos.flist.files import hash_file

    fl = await make_flist(tmp_path, "a", 1000)
    for p in (tmp_path / "store").rglob("*"):
        if p.is_file():
            p.write_bytes(p.read_bytes()[:-1] + b"\x00")  # every stored block damaged
    cache = FlistCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(StoreError, match="content hash does not match its id"):
        await cache.prepare(fl, acquire=True)
    assert list((tmp_path / "cache/trees").iterdir()) == []
    assert cache.in_use(hash_file(fl)) == 0  # the failed prepare let go of its hold
    assert not any(p.is_file() for p in (tmp_path / "cache/blocks").rglob("*"))
    cache.close()


async def test_a_deep_tree_in_the_cache_stops_nothing(tmp_path: Path, deep_tree) -> None:
    # Issue 12, finding 1: a tree thousands of directories deep in the cache made removal
    # raise RecursionError: opening the cache failed (the node could neither start nor
    # wipe), and once the cache passed its bound every prepare failed, even of cached flists.
    cached = await make_flist(tmp_path, "a", 1000)
    cache = FlistCache(tmp_path / "cache", 1 << 30)
    kept = await cache.prepare(cached)
    cache.close()
    trees = tmp_path / "cache/trees"
    deep_tree(trees / ".half-written", 1500)  # left by a crash half way through a prepare
    cache = FlistCache(tmp_path / "cache", 1 << 30)
    assert sorted(p.name for p in trees.iterdir()) == [kept.name]

    # An old, unused deep tree in the index, and the cache past its bound.
    deep_tree(trees / ("1" * 64), 1500)
    cache._db.execute("INSERT INTO trees VALUES (?, ?, ?)", ("1" * 64, 1 << 40, 0.0))
    other = await make_flist(tmp_path, "b", 1000)
    tree = await cache.prepare(other)
    assert (tree / "etc/name").read_text() == "b"
    assert not (trees / ("1" * 64)).exists()
    assert await cache.prepare(cached) == kept
    cache.close()


async def test_an_flist_too_large_for_the_root_or_the_cache_fetches_nothing(
    tmp_path: Path,
) -> None:
    # Issue 12, finding 4: an flist's declared size was not checked, so a small .fl could
    # fill the node's disk. Refused before a block is fetched, and nothing of it is kept.
    from zos.flist import FlistError
    from zos.flist.files import hash_file

    fl = await make_flist(tmp_path, "big", 3 * 512 * 1024)
    store = CountingDirStore(tmp_path / "store")
    cache = FlistCache(tmp_path / "cache", 1 << 30, Router([(0, 255, store)]))
    with pytest.raises(FlistError, match="more than the machine's root file system"):
        await cache.prepare(fl, acquire=True, max_size=1 << 20)
    small = FlistCache(tmp_path / "small", 1 << 20, Router([(0, 255, store)]))
    with pytest.raises(FlistError, match=r"more than this node's flist cache holds \(1048576"):
        await small.prepare(fl)
    assert store.reads == 0
    for c in (cache, small):
        assert [p.name for p in c.flists_dir.iterdir()] == []
        assert list(c.trees_dir.iterdir()) == []
        assert c.in_use(hash_file(fl)) == 0  # the refused prepare let go of its hold
        c.close()
