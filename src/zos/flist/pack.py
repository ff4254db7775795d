"""Pack a source into an `.fl` and its blocks.

A reader thread streams file content in 512 KiB chunks; a pool of threads encrypts
them (hashing, snappy and AES-GCM release the GIL); asyncio tasks write each new block
to every store its id routes to. A block id already written in this run is not sent again.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from zos.flist.blocks import Block, encrypt_block
from zos.flist.format import ROOT_INO, FlistWriter
from zos.flist.sources import Source, SourceFormat, open_source
from zos.flist.stores import Router
from zos.flist.tree import Node, Tree

_DONE = object()


@dataclass
class PackResult:
    path: Path
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    blocks: int = 0
    new_blocks: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


async def pack(
    source: Path,
    output: Path,
    router: Router,
    *,
    fmt: SourceFormat = "auto",
    tags: dict[str, str] | None = None,
    workers: int | None = None,
) -> PackResult:
    if not router.routes:
        raise ValueError("pack needs at least one store")
    src = await asyncio.to_thread(open_source, Path(source), fmt)
    try:
        result = PackResult(Path(output), tags={**src.tags, **(tags or {})}, skipped=src.skipped)
        await _store_content(src, router, result, workers or min(8, os.cpu_count() or 2))
        await asyncio.to_thread(_write_flist, src.tree, Path(output), router, result)
    finally:
        src.close()
    return result


async def _store_content(src: Source, router: Router, result: PackResult, workers: int) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=workers * 2)
    stop = asyncio.Event()
    parts: dict[int, dict[int, Block]] = {}
    written: set[bytes] = set()

    def produce() -> None:
        counters: dict[int, int] = {}
        try:
            for node, chunk in src.read():
                if stop.is_set():
                    return
                index = counters.get(id(node), 0)
                counters[id(node)] = index + 1
                asyncio.run_coroutine_threadsafe(queue.put((node, index, chunk)), loop).result()
        finally:
            for _ in range(workers):
                asyncio.run_coroutine_threadsafe(queue.put(_DONE), loop).result()

    async def consume(pool: ThreadPoolExecutor) -> None:
        while (item := await queue.get()) is not _DONE:
            node, index, chunk = item  # type: ignore[misc]
            block, cipher = await loop.run_in_executor(pool, encrypt_block, chunk)
            parts.setdefault(id(node), {})[index] = block
            result.blocks += 1
            if block.id not in written:
                written.add(block.id)
                result.new_blocks += 1
                await router.put(block.id, cipher)

    with ThreadPoolExecutor(workers, thread_name_prefix="flist-pack") as pool:
        consumers = [asyncio.create_task(consume(pool)) for _ in range(workers)]
        producer = loop.run_in_executor(None, produce)
        try:
            await asyncio.gather(producer, *consumers)
        except BaseException:
            stop.set()
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            # drain so a producer blocked on a full queue can finish
            while not producer.done():
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(0.01)
            raise
    for node in src.tree.files():
        got = parts.get(id(node), {})
        node.blocks = [got[i] for i in range(len(got))]


def _write_flist(tree: Tree, output: Path, router: Router, result: PackResult) -> None:
    writer = FlistWriter(output)
    try:
        inos: dict[int, int] = {id(tree.root): ROOT_INO}
        first_file: dict[int, int] = {}
        for _path, node, parent, name in tree.walk():
            if parent is None:
                ino = _inode(writer, 0, "/", node)
                assert ino == ROOT_INO
                result.dirs += 1
                continue
            ino = _inode(writer, inos[id(parent)], name, node)
            if node.kind == "dir":
                inos[id(node)] = ino
                result.dirs += 1
            elif node.kind == "symlink":
                result.symlinks += 1
            elif node.kind == "file":
                writer.blocks(ino, node.blocks)
                result.files += 1
                if id(node) in first_file:
                    writer.hardlink(ino, first_file[id(node)])
                else:
                    first_file[id(node)] = ino
                    result.bytes += node.size
        for route in router.public_routes():
            writer.route(route.start, route.end, route.url)
        for key, value in result.tags.items():
            writer.tag(key, value)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _inode(writer: FlistWriter, parent: int, name: str, node: Node) -> int:
    return writer.inode(
        parent,
        name,
        size=node.size if node.kind in ("file", "symlink") else 0,
        uid=node.uid,
        gid=node.gid,
        mode=node.mode,
        mtime=node.mtime,
        ctime=node.ctime,
        target=node.target,
    )
