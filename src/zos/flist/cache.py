"""The node-wide flist cache: verified blocks shared by all flists, and prepared trees.

    root/index.db          sizes and last use of every cached block and tree (sqlite)
    root/blocks/xx/<hex>   ciphertext of verified blocks (checked again when read)
    root/flists/<hash>.fl  the flists that were prepared
    root/trees/<hash>/     each flist's tree, written once, shared read-only by every
                           container using it (each container puts its own overlay on top)

A tree is keyed by the BLAKE2b-256 of its `.fl`, so the same flist from any URL is
prepared once; concurrent prepares of one flist share one task. When the cache grows
past `max_bytes`, blocks and trees no live container holds are removed, least recently
used first. In-use counts live in memory: after a restart the node marks again what
its containers use (`acquire`) before anything can be evicted for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from zos.flist.blocks import check_id
from zos.flist.errors import BlockError, FlistError
from zos.flist.files import hash_file, write_atomic
from zos.flist.format import Flist, read_flist
from zos.flist.ops import download_flist, is_url, router_for
from zos.flist.policy import FetchPolicy
from zos.flist.stores import Router
from zos.flist.unpack import unpack
from zos.primitives.trees import remove_tree

log = logging.getLogger(__name__)


class FlistCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int,
        stores: list[str] | Router | None = None,
        policy: FetchPolicy | None = None,
    ) -> None:
        """`stores`: store URLs (or a Router) to fetch every flist's blocks from, instead
        of the routes each flist names. `policy`: where flist URLs and the routes inside
        flists may lead (on a node: never to the node itself or the control plane)."""
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.stores = stores
        self.policy = policy
        self.blocks_dir = self.root / "blocks"
        self.trees_dir = self.root / "trees"
        self.flists_dir = self.root / "flists"
        for d in (self.blocks_dir, self.trees_dir, self.flists_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.db", isolation_level=None)
        self._db.executescript(
            # the index only orders eviction; losing its last writes in a crash is harmless
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS blocks (id TEXT PRIMARY KEY, size INTEGER, used REAL);"
            "CREATE TABLE IF NOT EXISTS trees (hash TEXT PRIMARY KEY, size INTEGER, used REAL);"
        )
        self._in_use: dict[str, int] = {}
        self._preparing: dict[str, asyncio.Task[Path]] = {}
        self._fetching: dict[bytes, asyncio.Future[bytes]] = {}
        self._evict_lock = asyncio.Lock()
        self._reconcile()

    def close(self) -> None:
        self._db.close()

    def _reconcile(self) -> None:
        """Drop half-written trees and index rows whose files are gone (after a crash).

        Whatever is in the cache, this never stops the node from starting: a tree that
        cannot be removed is logged and left (it is tried again at the next start)."""
        known = {h for (h,) in self._db.execute("SELECT hash FROM trees")}
        for h in known:
            if not (self.trees_dir / h).is_dir():
                self._db.execute("DELETE FROM trees WHERE hash = ?", (h,))
        for child in self.trees_dir.iterdir():
            if child.name.startswith(".") or child.name not in known:
                _remove_logged(child)

    # -- blocks ------------------------------------------------------------------------

    def _block_file(self, block_id: bytes) -> Path:
        h = block_id.hex()
        return self.blocks_dir / h[:2] / h

    async def get_block(self, block_id: bytes, router: Router) -> bytes:
        """Verified ciphertext of a block: from the cache, else from the stores."""
        path = self._block_file(block_id)
        data = await asyncio.to_thread(_read_or_none, path)
        if data is not None:
            try:
                check_id(block_id, data)
                self._db.execute(
                    "UPDATE blocks SET used = ? WHERE id = ?", (time.time(), block_id.hex())
                )
                return data
            except BlockError:  # damaged on disk: forget it, fetch again
                path.unlink(missing_ok=True)
        pending = self._fetching.get(block_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._fetching[block_id] = future
        try:
            data = await router.get(block_id)  # checks hash == id
            await asyncio.to_thread(write_atomic, path, data)
            self._db.execute(
                "INSERT OR REPLACE INTO blocks (id, size, used) VALUES (?, ?, ?)",
                (block_id.hex(), len(data), time.time()),
            )
            future.set_result(data)
            return data
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved when nobody else waits
            raise
        finally:
            del self._fetching[block_id]

    # -- trees -------------------------------------------------------------------------

    async def prepare(
        self, location: str | Path, *, acquire: bool = False, max_size: int | None = None
    ) -> Path:
        """The read-only tree of an flist (hub URL or local path), prepared once.

        `max_size`: the most bytes of files the caller takes (a machine's root size). An
        flist declaring more, or more than the cache holds, is refused before any of its
        blocks is fetched, and nothing of it is kept."""
        name = str(location)
        with tempfile.TemporaryDirectory(dir=self.flists_dir, prefix=".dl-") as tmp:
            if isinstance(location, str) and is_url(location):
                fl = await download_flist(location, Path(tmp) / "flist.fl", self.policy)
            else:
                fl = Path(location)
                if not fl.is_file():
                    raise FlistError(f"{fl}: no such flist")
            key = await asyncio.to_thread(hash_file, fl)
            flist, declared = None, self._tree_size(key)
            if declared is None:
                # setuid bits are stripped: a container user must not become a file's owner
                flist = await asyncio.to_thread(read_flist, fl, setuid="strip", name=name)
                declared = flist.total_size
            self._check_fits(name, declared, max_size)
            stored = self.flists_dir / f"{key}.fl"
            if not stored.exists():
                await asyncio.to_thread(_copy_atomic, fl, stored)
        if acquire:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            task = self._preparing.get(key)
            if task is None:
                task = asyncio.ensure_future(self._materialize(key, stored, flist, name))
                self._preparing[key] = task
                task.add_done_callback(lambda _t: self._preparing.pop(key, None))
            tree = await asyncio.shield(task)
        except BaseException:
            if acquire:
                self.release(key)
            raise
        try:
            await self.evict()
        except Exception:  # a full cache is the node's problem, not this flist's
            log.exception("flist cache: eviction failed")
        return tree

    def _tree_size(self, key: str) -> int | None:
        """The declared size of a prepared tree (None: not prepared)."""
        row = self._db.execute("SELECT size FROM trees WHERE hash = ?", (key,)).fetchone()
        return None if row is None or not (self.trees_dir / key).is_dir() else int(row[0])

    def _check_fits(self, name: str, declared: int, max_size: int | None) -> None:
        if max_size is not None and declared > max_size:
            raise FlistError(
                f"{name}: declares {declared} bytes of files, more than the machine's root "
                f"file system ({max_size} bytes)"
            )
        if declared > self.max_bytes:
            raise FlistError(
                f"{name}: declares {declared} bytes of files, more than this node's flist "
                f"cache holds ({self.max_bytes} bytes)"
            )

    async def _make_room(self, name: str, declared: int) -> None:
        """Evict until the tree fits; refuse it when flists in use or the disk leave no room."""
        await self.evict(room=declared)
        if self.size() + declared > self.max_bytes:
            raise FlistError(
                f"{name}: the node's flist cache has no room for its {declared} bytes "
                "(the flists it holds are in use); try again later"
            )
        free = shutil.disk_usage(self.trees_dir).free
        if declared > free:
            raise FlistError(
                f"{name}: declares {declared} bytes of files, the node's disk has {free} free"
            )

    async def _materialize(self, key: str, fl: Path, flist: Flist | None, name: str) -> Path:
        tree = self.trees_dir / key
        if tree.is_dir():
            self._db.execute("UPDATE trees SET used = ? WHERE hash = ?", (time.time(), key))
            return tree
        if flist is None:
            flist = await asyncio.to_thread(read_flist, fl, setuid="strip", name=name)
        try:
            await self._make_room(name, flist.total_size)
            router = (
                self.stores
                if isinstance(self.stores, Router)
                else router_for(flist, self.stores, self.policy)
            )
        except BaseException:
            fl.unlink(missing_ok=True)  # nothing of a refused flist stays
            raise
        shared = isinstance(self.stores, Router)
        tmp = self.trees_dir / f".{key}.{os.urandom(4).hex()}"
        try:
            # the writes are bounded by the declared size (every block's length is checked)
            await unpack(flist, tmp, lambda block_id: self.get_block(block_id, router))
            os.replace(tmp, tree)
        except BaseException:
            await asyncio.to_thread(_remove_logged, tmp)
            fl.unlink(missing_ok=True)
            raise
        finally:
            if not shared:
                await router.close()
        self._db.execute(
            "INSERT OR REPLACE INTO trees (hash, size, used) VALUES (?, ?, ?)",
            (key, flist.total_size, time.time()),
        )
        return tree

    def _key(self, tree_or_key: str | Path) -> str:
        return Path(tree_or_key).name

    def acquire(self, tree: str | Path) -> None:
        """Mark a prepared tree as used by one more container (never evicted while used)."""
        key = self._key(tree)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        self._db.execute("UPDATE trees SET used = ? WHERE hash = ?", (time.time(), key))

    def release(self, tree: str | Path) -> None:
        key = self._key(tree)
        count = self._in_use.get(key, 0) - 1
        if count > 0:
            self._in_use[key] = count
        else:
            self._in_use.pop(key, None)
        self._db.execute("UPDATE trees SET used = ? WHERE hash = ?", (time.time(), key))

    @contextlib.asynccontextmanager
    async def use(self, location: str | Path) -> AsyncIterator[Path]:
        tree = await self.prepare(location, acquire=True)
        try:
            yield tree
        finally:
            self.release(tree)

    def in_use(self, tree: str | Path) -> int:
        return self._in_use.get(self._key(tree), 0)

    # -- size --------------------------------------------------------------------------

    def size(self) -> int:
        (blocks,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM blocks").fetchone()
        (trees,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM trees").fetchone()
        return int(blocks) + int(trees)

    async def evict(self, room: int = 0) -> int:
        """Remove unused blocks and trees, oldest use first, until within max_bytes (with
        `room` bytes to spare)."""
        limit = self.max_bytes - room
        async with self._evict_lock:
            total = self.size()
            freed = 0
            if total <= limit:
                return 0
            rows = self._db.execute(
                "SELECT 'block', id, size, used FROM blocks"
                " UNION ALL SELECT 'tree', hash, size, used FROM trees ORDER BY used"
            ).fetchall()
            for kind, name, size, _used in rows:
                if total - freed <= limit:
                    break
                if kind == "tree":
                    if self._in_use.get(name) or name in self._preparing:
                        continue
                    try:
                        await asyncio.to_thread(remove_tree, self.trees_dir / name)
                    except OSError as e:  # kept indexed: tried again at the next eviction
                        log.warning("flist cache: cannot remove tree %s: %s", name, e)
                        continue
                    (self.flists_dir / f"{name}.fl").unlink(missing_ok=True)
                    self._db.execute("DELETE FROM trees WHERE hash = ?", (name,))
                else:
                    if bytes.fromhex(name) in self._fetching:
                        continue
                    (self.blocks_dir / name[:2] / name).unlink(missing_ok=True)
                    self._db.execute("DELETE FROM blocks WHERE id = ?", (name,))
                freed += size
            return freed


def _remove_logged(path: Path) -> None:
    try:
        remove_tree(path)
    except OSError as e:
        log.warning("flist cache: cannot remove %s: %s", path, e)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
