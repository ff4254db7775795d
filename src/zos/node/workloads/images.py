"""Image-backed workloads (volume, zmount): their files and the rules they share."""

from __future__ import annotations

import contextlib
import os
import re
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from zos.node.workloads.base import Manager, WorkloadContext, WorkloadError
from zos.primitives import filesystem, loop
from zos.primitives.command import CommandError
from zos.primitives.durable import sync_dir

_ID = re.compile(r"^(\d+-\d+-[A-Za-z0-9_]+)(\.img|\.img\.tmp|\.grow)?$")


class ImageFiles:
    """`<id>.img` (the image), `<id>.img.tmp` (being made), `<id>.grow` (growing), `<id>/`."""

    def __init__(self, directory: Path, workload_id: str) -> None:
        self.directory = directory
        self.image = directory / f"{workload_id}.img"
        self.tmp = directory / f"{workload_id}.img.tmp"
        self.marker = directory / f"{workload_id}.grow"
        self.mount = directory / workload_id

    async def create(
        self, size: int, prepare: Callable[[Path], Awaitable[None]] | None = None
    ) -> None:
        """Make the image whole or not at all: a sparse `.img.tmp` of `size` bytes,
        `prepare`d (formatted) before it is renamed to `.img`."""
        self.tmp.unlink(missing_ok=True)
        filesystem.create_sparse(self.tmp, size)
        if prepare is not None:
            await prepare(self.tmp)
        os.replace(self.tmp, self.image)
        sync_dir(self.directory)

    async def ensure_ext4(self, size: int, label: str = "", *, encrypt: bool) -> None:
        """An ext4 image of at least `size` bytes, mounted at `mount`; each step a no-op
        when done already. Growth writes the `.grow` marker first, so a crash half way
        through a resize is finished by the next call."""
        if not self.image.exists():
            await self.create(size, lambda tmp: filesystem.mkfs_ext4(tmp, label, encrypt=encrypt))
        elif self.image.stat().st_size < size:
            self.marker.touch()
            sync_dir(self.directory)
            filesystem.grow_sparse(self.image, size)
        if filesystem.mount_of(self.mount) is None:
            try:
                await filesystem.mount_image(self.image, self.mount)
            except CommandError:
                # A `mount` started by an agent that was killed may have won the race.
                if filesystem.mount_of(self.mount) is None:
                    raise
        if self.marker.exists():
            await filesystem.grow_ext4(self.image, self.mount)
            self.marker.unlink(missing_ok=True)

    async def unmount(self) -> None:
        """Unmount the image and free its loop devices (CommandError if that fails)."""
        # More than one mount may be stacked there (a `mount` that outlived a killed agent).
        while filesystem.mount_of(self.mount) is not None:
            await filesystem.umount(self.mount)
        # A loop device left attached without a mount (a crash inside `mount`).
        for dev in loop.devices_for(self.image):
            await loop.detach(dev)

    def remove(self) -> None:
        for path in (self.image, self.tmp, self.marker):
            path.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            sync_dir(self.directory)

    @staticmethod
    def ids_in(directory: Path) -> set[str]:
        """Workload ids that have anything in `directory`."""
        found = set()
        for entry in os.listdir(directory):
            m = _ID.match(entry)
            if m:
                found.add(m.group(1))
        return found


def data_size(ctx: WorkloadContext) -> int:
    size = int(ctx.workload.data.size)
    if size <= 0:
        raise WorkloadError(f"{ctx.workload.type} {ctx.workload.name}: data.size must be > 0")
    return size


def check_not_shrinking(ctx: WorkloadContext, image: Path) -> None:
    """Refuse an update that would make the image smaller than it is (data would be lost)."""
    size = data_size(ctx)
    with contextlib.suppress(FileNotFoundError):
        current = image.stat().st_size
        if size < current:
            raise WorkloadError(
                f"{ctx.workload.type} {ctx.workload.name}: data.size: cannot shrink from "
                f"{current} to {size} bytes (data would be lost)"
            )


class ImageManager(Manager):
    """A manager whose workloads are images in `storage/<directory>/`: grow, never shrink."""

    updatable = True
    directory = ""

    def files(self, workload_id: str) -> ImageFiles:
        return ImageFiles(self.node.storage_dir(self.directory), workload_id)

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        return await self.build(ctx, self.files(ctx.workload_id), data_size(ctx))

    @abstractmethod
    async def build(self, ctx: WorkloadContext, files: ImageFiles, size: int) -> dict[str, Any]:
        """Make (or grow) the image of `ctx`'s workload to `size` bytes; its result."""

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        check_not_shrinking(ctx, self.files(ctx.workload_id).image)
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        await self.remove(ctx.workload_id)

    @abstractmethod
    async def remove(self, workload_id: str) -> None:
        """Remove everything of `workload_id`; a no-op when nothing is there."""

    async def cleanup(self, keep: set[str]) -> None:
        for workload_id in ImageFiles.ids_in(self.node.storage_dir(self.directory)) - keep:
            await self.remove(workload_id)
