"""`volume`: an ext4 filesystem of exactly `size` bytes, loop-mounted for workloads to use.

On disk: `<data>/storage/volumes/<workload id>.img` (a sparse image) mounted at
`<data>/storage/volumes/<workload id>/`. A new image is formatted as `.img.tmp` and
renamed, so an `.img` is always a whole filesystem; growth writes a `.grow` marker
first, so a crash half way through a resize is finished by the next provision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.images import ImageFiles, check_not_shrinking, data_size
from zos.primitives import filesystem, loop
from zos.primitives.command import CommandError


def volume_path(node: NodeServices, workload_id: str) -> Path:
    """Where volume `workload_id` is mounted (what a container bind-mounts)."""
    return node.storage_dir("volumes") / workload_id


class VolumeManager(Manager):
    type = "volume"
    updatable = True

    def _files(self, workload_id: str) -> ImageFiles:
        return ImageFiles(self.node.storage_dir("volumes"), workload_id)

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        size = data_size(ctx)
        files = self._files(ctx.workload_id)
        try:
            if not files.image.exists():
                files.tmp.unlink(missing_ok=True)
                filesystem.create_sparse(files.tmp, size)
                await filesystem.mkfs_ext4(files.tmp)
                files.commit_tmp()
            elif files.image.stat().st_size < size:
                files.mark_growing()
                filesystem.grow_sparse(files.image, size)
            if filesystem.mount_of(files.mount) is None:
                try:
                    await filesystem.mount_image(files.image, files.mount)
                except CommandError:
                    # A `mount` started by an agent that was killed may have won the race.
                    if filesystem.mount_of(files.mount) is None:
                        raise
            if files.growing():
                await filesystem.grow_ext4(files.image, files.mount)
                files.done_growing()
        except (CommandError, RuntimeError, OSError) as e:
            raise WorkloadError(f"volume {ctx.workload.name}: {e}") from None
        return {"id": ctx.workload_id}

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        check_not_shrinking(ctx, self._files(ctx.workload_id).image)
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        await self._remove(ctx.workload_id)

    async def _remove(self, workload_id: str) -> None:
        files = self._files(workload_id)
        try:
            # More than one mount may be stacked there (a `mount` that outlived a killed agent).
            while filesystem.mount_of(files.mount) is not None:
                await filesystem.umount(files.mount)
            # A loop device left attached without a mount (a crash inside `mount`).
            for dev in loop.devices_for(files.image):
                await loop.detach(dev)
        except CommandError as e:
            raise WorkloadError(f"volume {workload_id}: cannot remove: {e}") from None
        with contextlib.suppress(FileNotFoundError):
            files.mount.rmdir()
        files.remove()

    async def cleanup(self, keep: set[str]) -> None:
        for workload_id in ImageFiles.ids_in(self.node.storage_dir("volumes")) - keep:
            await self._remove(workload_id)
