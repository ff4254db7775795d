"""Overlay and read-only bind mounts for containers on a shared, read-only flist tree.

Each container gets `mount_overlay(lower=<prepared tree>, upper, work, target)` with
its own upper and work directories on its own storage: writes land in `upper`, the
shared tree is never changed. overlayfs needs `upper` and `work` on one filesystem.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from zos.primitives.command import run
from zos.primitives.filesystem import mount_of

# characters that overlayfs / mount(8) option parsing would split on
_BAD = (",", ":", "\\", "\n")


def _check_path(path: Path, what: str) -> str:
    text = str(Path(path).absolute())
    if any(c in text for c in _BAD):
        raise ValueError(f"{what} {text!r}: overlay paths cannot contain , : \\ or newline")
    return text


def is_mounted(target: Path) -> bool:
    return mount_of(Path(target)) is not None


async def mount_overlay(
    lower: Path | list[Path],
    upper: Path,
    work: Path,
    target: Path,
    *,
    options: tuple[str, ...] = ("nodev",),
) -> None:
    """Mount `lower` (read-only, may be several, topmost first) with a writable `upper`."""
    lowers = lower if isinstance(lower, list) else [lower]
    if not lowers:
        raise ValueError("overlay needs at least one lower directory")
    lowerdir = ":".join(_check_path(p, "lower") for p in lowers)
    for d in (upper, work, target):
        Path(d).mkdir(parents=True, exist_ok=True)
    opts = [
        f"lowerdir={lowerdir}",
        f"upperdir={_check_path(upper, 'upper')}",
        f"workdir={_check_path(work, 'work')}",
        *options,
    ]
    await run(
        "mount", "-t", "overlay", "overlay", "-o", ",".join(opts), _check_path(target, "target")
    )


async def bind_readonly(source: Path, target: Path) -> None:
    """Bind `source` at `target`, read-only (and nosuid, nodev)."""
    Path(target).mkdir(parents=True, exist_ok=True)
    await run("mount", "--bind", str(source), str(target))
    try:
        await run("mount", "-o", "remount,bind,ro,nosuid,nodev", str(target))
    except BaseException:
        with contextlib.suppress(Exception):
            await run("umount", str(target))
        raise


async def unmount(target: Path, *, lazy: bool = False) -> None:
    """Unmount `target` if it is mounted (idempotent)."""
    if not is_mounted(target):
        return
    await run("umount", *(["-l"] if lazy else []), str(target))
