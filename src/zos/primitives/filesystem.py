"""Sparse images, ext4 on them, loop mounts and online growth.

Images are regular sparse files: their apparent size is what a user asked for, the
disk only holds what was written. `mount -o loop` attaches the loop device with
auto-clear, so unmounting also frees the loop device and nothing is left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zos.primitives import loop
from zos.primitives.command import CommandError, run


@dataclass(frozen=True)
class Mount:
    source: str
    target: Path
    fstype: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[Mount]:
    """Mounts visible to this process, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        found.append(
            Mount(source=_unescape(tail[1]), target=Path(_unescape(fields[4])), fstype=tail[0])
        )
    return found


def mount_of(target: Path) -> Mount | None:
    """The (topmost) mount at `target`, if any."""
    path = Path(target).resolve()
    hits = [m for m in mounts() if m.target == path]
    return hits[-1] if hits else None


def mounts_under(directory: Path) -> list[Mount]:
    root = Path(directory).resolve()
    return [m for m in mounts() if root in m.target.parents]


def create_sparse(path: Path, size: int) -> None:
    """Create (or truncate) `path` as a sparse file of exactly `size` bytes, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def grow_sparse(path: Path, size: int) -> None:
    """Extend `path` to `size` bytes; a file already that large is left as it is."""
    if path.stat().st_size >= size:
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def allocated_bytes(path: Path) -> int:
    """Bytes the file really occupies on disk (sparse holes excluded)."""
    return path.stat().st_blocks * 512


async def mkfs_ext4(path: Path, label: str = "", *, encrypt: bool = False) -> None:
    """Format `path` as ext4; `encrypt` turns on the feature `zos.primitives.fscrypt` needs."""
    # No reserved blocks: the whole volume belongs to its user.
    args = ["mkfs.ext4", "-q", "-F", "-m", "0"]
    if label:
        args += ["-L", label[:16]]
    if encrypt:
        args += ["-O", "encrypt"]
    await run(*args, str(path))


async def mount_image(image: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    await run("mount", "-o", "loop", str(image), str(target))


async def umount(target: Path) -> None:
    await run("umount", str(target))


async def grow_ext4(image: Path, target: Path) -> None:
    """After `image` grew, grow its ext4 to fill it, mounted at `target` or not.

    Online growth needs CAP_SYS_RESOURCE; where the agent lacks it (some containers),
    the filesystem is unmounted, grown offline and mounted again, but only when no
    other mount still holds it (its loop device would stay attached).
    """
    mount = mount_of(target)
    if mount is not None and mount.source.startswith("/dev/loop"):
        await loop.refresh_size(mount.source)
        try:
            await run("resize2fs", mount.source)  # without a size: fill the device
            return
        except CommandError as e:
            if "Permission denied" not in e.stderr:
                raise
        await umount(target)
        if loop.devices_for(image):
            await mount_image(image, target)
            raise RuntimeError("cannot grow the filesystem while another mount uses it")
        await _resize_offline(image)
        await mount_image(image, target)
    else:
        await _resize_offline(image)


async def _resize_offline(image: Path) -> None:
    # resize2fs insists on a fresh check first; e2fsck exits 1 when it fixed something.
    await run("e2fsck", "-f", "-p", str(image), ok=(0, 1))
    await run("resize2fs", str(image))


async def ext4_size(image: Path) -> int:
    """The ext4 filesystem's size in bytes, from its superblock (dumpe2fs -h)."""
    out = await run("dumpe2fs", "-h", str(image))
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])
