"""Write a checked flist's tree into a new directory, touching nothing outside it.

Every name is created relative to its parent's directory fd with O_NOFOLLOW/O_EXCL,
parents are opened one component at a time without following symlinks, and names
were checked by `read_flist` (no '..', no '/'). So a symlink in the tree is only ever
stored, never followed, and a hostile flist cannot write outside the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from zos.flist.blocks import BLOCK_SIZE, decrypt_block
from zos.flist.errors import BlockError, FlistError
from zos.flist.format import Entry, Flist

# fetch(id) -> ciphertext whose BLAKE2b-256 was checked to be `id` (Router.get and
# FlistCache.get_block both check it), so it is not hashed a second time here.
FetchCipher = Callable[[bytes], Awaitable[bytes]]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class UnpackResult:
    files: int = 0
    bytes: int = 0
    blocks: int = 0


def _open_dir(root_fd: int, path: str) -> int:
    fd = os.dup(root_fd)
    try:
        for part in path.split("/") if path else []:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parent_path(entry: Entry) -> str:
    return entry.path.rpartition("/")[0]


def _prepare_target(target: Path) -> int:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlistError(f"{target}: cannot create ({e.strerror})") from None
    fd = os.open(target, _DIR_FLAGS)
    if os.listdir(fd):
        os.close(fd)
        raise FlistError(f"{target}: target directory must be empty")
    return fd


async def unpack(
    flist: Flist,
    target: Path,
    fetch: FetchCipher,
    *,
    owners: bool | None = None,
    concurrency: int = 16,
) -> UnpackResult:
    """Write `flist` under `target` (new or empty). `fetch(id)` returns a block's ciphertext.

    owners: set uid/gid from the flist (default: when running as root).
    """
    owners = os.geteuid() == 0 if owners is None else owners
    root_fd = _prepare_target(Path(target))
    result = UnpackResult()
    try:
        await asyncio.to_thread(_create_entries, root_fd, flist)
        await _write_contents(root_fd, flist, fetch, concurrency, result)
        await asyncio.to_thread(_hard_links, root_fd, flist)
        await asyncio.to_thread(_set_metadata, root_fd, flist, owners)
    finally:
        os.close(root_fd)
    return result


def _create_entries(root_fd: int, flist: Flist) -> None:
    """Directories, symlinks, fifos and empty files, parent directory by directory."""
    by_parent: dict[int, list[Entry]] = {}
    for e in flist.entries[1:]:
        by_parent.setdefault(e.parent, []).append(e)
    for directory in flist.entries:
        children = by_parent.get(directory.ino)
        if directory.kind != "dir" or not children:
            continue
        fd = _open_dir(root_fd, directory.path)
        try:
            for e in children:
                if e.kind == "dir":
                    os.mkdir(e.name, 0o700, dir_fd=fd)
                elif e.kind == "symlink":
                    assert e.target is not None
                    os.symlink(e.target, e.name, dir_fd=fd)
                elif e.kind == "fifo":
                    os.mkfifo(e.name, 0o600, dir_fd=fd)
                elif e.link_to is None:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    os.close(os.open(e.name, flags, 0o600, dir_fd=fd))
        finally:
            os.close(fd)


async def _write_contents(
    root_fd: int, flist: Flist, fetch: FetchCipher, concurrency: int, result: UnpackResult
) -> None:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(concurrency)
    files = [e for e in flist.entries if e.kind == "file" and e.link_to is None and e.blocks]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 2), thread_name_prefix="flist-unpack") as pool:

        async def block_job(fd: int, entry: Entry, index: int) -> None:
            block = entry.blocks[index]
            async with limit:
                cipher = await fetch(block.id)
                await loop.run_in_executor(pool, _decrypt_write, fd, entry, index, cipher)
            result.blocks += 1

        # a bounded number of files open at a time; each file's blocks run concurrently
        file_limit = asyncio.Semaphore(max(1, concurrency))

        async def file_job(entry: Entry) -> None:
            async with file_limit:
                fd = await asyncio.to_thread(_open_file, root_fd, entry)
                try:
                    await asyncio.gather(
                        *(block_job(fd, entry, i) for i in range(len(entry.blocks)))
                    )
                finally:
                    os.close(fd)
            result.files += 1
            result.bytes += entry.size

        tasks = [asyncio.create_task(file_job(e)) for e in files]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def _open_file(root_fd: int, entry: Entry) -> int:
    dfd = _open_dir(root_fd, _parent_path(entry))
    try:
        return os.open(entry.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)


def _decrypt_write(fd: int, entry: Entry, index: int, cipher: bytes) -> None:
    plain = decrypt_block(entry.blocks[index], cipher, id_checked=True)
    last = index == len(entry.blocks) - 1
    expected = entry.size - index * BLOCK_SIZE if last else BLOCK_SIZE
    if len(plain) != expected:
        raise BlockError(
            f"{entry.path}: block {index} holds {len(plain)} bytes, the size {entry.size}"
            f" needs {expected}"
        )
    os.pwrite(fd, plain, index * BLOCK_SIZE)


def _hard_links(root_fd: int, flist: Flist) -> None:
    by_ino = flist.by_ino
    for e in flist.entries:
        if e.link_to is None:
            continue
        src = by_ino[e.link_to]
        sfd = _open_dir(root_fd, _parent_path(src))
        dfd = _open_dir(root_fd, _parent_path(e))
        try:
            os.link(src.name, e.name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(sfd)
            os.close(dfd)


def _set_metadata(root_fd: int, flist: Flist, owners: bool) -> None:
    """Owners, then modes (chown clears setuid), then times; children before parents."""
    for e in reversed(flist.entries):
        if e.link_to is not None:
            continue  # the link's target inode carries the metadata
        dfd = _open_dir(root_fd, _parent_path(e)) if e.path else os.dup(root_fd)
        try:
            if e.kind == "symlink":
                if owners:
                    os.chown(e.name, e.uid, e.gid, dir_fd=dfd, follow_symlinks=False)
                os.utime(e.name, (e.mtime, e.mtime), dir_fd=dfd, follow_symlinks=False)
                continue
            if e.path:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(e.name, flags, dir_fd=dfd)
            else:
                fd = os.dup(dfd)
            try:
                st = os.fstat(fd)
                if stat.S_IFMT(st.st_mode) != stat.S_IFMT(e.mode):
                    raise FlistError(f"{e.path}: changed type while unpacking")
                if owners:
                    os.fchown(fd, e.uid, e.gid)
                os.fchmod(fd, stat.S_IMODE(e.mode))
                os.utime(fd, (e.mtime, e.mtime))
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(dfd)
