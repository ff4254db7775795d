"""What is on a disk image, as the kernel's probing tools see it."""

from __future__ import annotations

from pathlib import Path

from zos.primitives.command import run


async def fs_type(image: Path) -> str | None:
    """The file system on `image` (e.g. "ext4"), or None for a blank disk."""
    # -p: probe the bytes themselves (no cache); status 2 means nothing was found
    out = await run("blkid", "-p", "-o", "value", "-s", "TYPE", str(image), ok=(0, 2))
    return out.strip() or None
