"""`zmount`: a raw sparse disk image of `size` bytes (a machine's extra disk).

On disk: `<data>/storage/zmounts/<workload id>.img`. It may grow on update, never shrink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zos.node.workloads.base import NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.images import ImageFiles, ImageManager
from zos.primitives import filesystem, loop


def zmount_path(node: NodeServices, workload_id: str) -> Path:
    """The disk image of zmount `workload_id`."""
    return node.storage_dir(ZMountManager.directory) / f"{workload_id}.img"


class ZMountManager(ImageManager):
    type = "zmount"
    rank = 10
    directory = "zmounts"

    async def build(self, ctx: WorkloadContext, files: ImageFiles, size: int) -> dict[str, Any]:
        try:
            if not files.image.exists():
                await files.create(size)
            else:
                filesystem.grow_sparse(files.image, size)
        except OSError as e:
            raise WorkloadError(f"zmount {ctx.workload.name}: {e.strerror or e}") from None
        return {"volume_id": ctx.workload_id}

    async def remove(self, workload_id: str) -> None:
        from zos.node.workloads.zmachine import ZMachineManager  # it imports this module

        files = self.files(workload_id)
        # A VM's drive is no loop device: the machine's state says who holds the disk.
        held = ZMachineManager(self.node).disk_holder(files.image)
        if held is not None:
            raise WorkloadError(
                f"zmount {workload_id}: disk is still in use: zmachine {held[0]} mounts it "
                f"at {held[1]} (its mounts[].name); remove that mount first"
            )
        if loop.devices_for(files.image):
            # A machine still has the disk attached; removing the file would not free it.
            raise WorkloadError(f"zmount {workload_id}: disk is still in use")
        files.remove()
