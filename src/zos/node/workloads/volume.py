"""`volume`: an ext4 filesystem of exactly `size` bytes, loop-mounted for workloads to use.

On disk: `<data>/storage/volumes/<workload id>.img` (a sparse image) mounted at
`<data>/storage/volumes/<workload id>/`; a deployment with a data key gets an ext4 that
can encrypt and its data in `data/` under the mount, encrypted (`encrypted`). A new
image is formatted as `.img.tmp` and renamed, so an `.img` is always a whole
filesystem; growth writes a `.grow` marker first, so a crash half way through a resize
is finished by the next provision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from zos.node.workloads.base import NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.encrypted import deployment_key, open_tree, tree_of
from zos.node.workloads.images import ImageFiles, ImageManager
from zos.primitives.command import CommandError


def volume_mount(node: NodeServices, workload_id: str) -> Path:
    """Where volume `workload_id` is mounted."""
    return node.storage_dir(VolumeManager.directory) / workload_id


def volume_path(node: NodeServices, workload_id: str) -> Path:
    """What a container bind-mounts of volume `workload_id`: its mount, or the encrypted
    `data` under it."""
    return tree_of(volume_mount(node, workload_id))


class VolumeManager(ImageManager):
    type = "volume"
    rank = 20
    directory = "volumes"

    async def build(self, ctx: WorkloadContext, files: ImageFiles, size: int) -> dict[str, Any]:
        key = deployment_key(ctx)
        try:
            await files.ensure_ext4(size, encrypt=key is not None)
            if key is not None:
                open_tree(files.mount, key)
        except (CommandError, RuntimeError, OSError) as e:
            raise WorkloadError(f"volume {ctx.workload.name}: {e}") from None
        return {"id": ctx.workload_id}

    async def remove(self, workload_id: str) -> None:
        files = self.files(workload_id)
        try:
            await files.unmount()
        except CommandError as e:
            raise WorkloadError(f"volume {workload_id}: cannot remove: {e}") from None
        with contextlib.suppress(FileNotFoundError):
            files.mount.rmdir()
        files.remove()
