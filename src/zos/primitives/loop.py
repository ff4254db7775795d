"""Loop devices: which files are attached, attach, detach, pick up a grown file.

The kernel lists every loop device's backing file under /sys/block/loopN/loop, so
finding leftovers needs no state of our own.
"""

from __future__ import annotations

from pathlib import Path

from zos.primitives.command import run

_SYS_BLOCK = Path("/sys/block")
_DELETED = " (deleted)"


def attached() -> dict[str, Path]:
    """Every attached loop device (`/dev/loopN`) and the file behind it."""
    found: dict[str, Path] = {}
    for entry in _SYS_BLOCK.glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue  # not attached (or detached while we looked)
        found[f"/dev/{entry.name}"] = Path(backing.removesuffix(_DELETED))
    return found


def devices_for(path: Path) -> list[str]:
    """Loop devices backed by `path`."""
    target = Path(path).resolve()
    return sorted(dev for dev, backing in attached().items() if backing == target)


def devices_under(directory: Path) -> dict[str, Path]:
    """Loop devices whose backing file lies under `directory`."""
    root = Path(directory).resolve()
    return {dev: f for dev, f in attached().items() if f == root or root in f.parents}


async def attach(path: Path) -> str:
    """Attach `path` to a free loop device and return the device."""
    out = await run("losetup", "--find", "--show", str(path))
    return out.strip()


async def detach(device: str) -> None:
    """Detach a loop device; if it is still mounted the kernel frees it on unmount."""
    await run("losetup", "--detach", device)


async def refresh_size(device: str) -> None:
    """Make the loop device see its backing file's new size (after the file grew)."""
    await run("losetup", "--set-capacity", device)
