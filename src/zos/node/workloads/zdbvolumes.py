"""The encrypted filesystem of one zdb namespace, for deployments with a data key.

The node's zdb server keeps every namespace in a directory of its own under one root;
an encrypted namespace's directory is the encrypted `data/` of an image of its own
(`<data>/storage/zdb-volumes/<wid>.img`, ext4 with `-O encrypt`, mounted at
`<data>/storage/zdb-volumes/<wid>/`), bound at `<zdb root>/<wid>`. The server makes (or,
after a restart, opens) the namespace in that mount (`ZdbServer.create_namespace`).
When the deployment is locked nothing is mounted: the server sees an empty directory
and does not load it; the image keeps the data.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from zos.node.workloads.base import NodeServices, WorkloadError
from zos.node.workloads.encrypted import open_tree
from zos.node.workloads.images import ImageFiles
from zos.primitives import filesystem
from zos.primitives.command import CommandError, run
from zos.primitives.fscrypt import KeyringKey

MiB = 1 << 20
DIRECTORY = "zdb-volumes"


def image_size(size: int) -> int:
    """Room for `size` bytes of data, their index and ext4's own (sparse: only what is
    written takes disk)."""
    return size + size // 4 + 64 * MiB


class NamespaceVolumes:
    def __init__(self, node: NodeServices, server_root: Path) -> None:
        self.node = node
        self.server_root = server_root

    def files(self, name: str) -> ImageFiles:
        return ImageFiles(self.node.storage_dir(DIRECTORY), name)

    def names(self) -> set[str]:
        return ImageFiles.ids_in(self.node.storage_dir(DIRECTORY))

    async def prepare(self, name: str, size: int, key: KeyringKey) -> None:
        """Image made (or grown), mounted, its data unlocked and bound at the server's
        directory of `name`; each step a no-op when done already."""
        files = self.files(name)
        want = image_size(size)
        try:
            await files.ensure_ext4(want, name[-16:], encrypt=True)
            tree = open_tree(files.mount, key)
            target = self.server_root / name
            target.mkdir(parents=True, exist_ok=True)
            if not os.path.ismount(target):
                await run("mount", "--bind", str(tree), str(target))
        except (CommandError, RuntimeError, OSError) as e:
            raise WorkloadError(f"zdb namespace {name}: encrypted storage: {e}") from None

    async def release(self, name: str) -> None:
        """Unmount and delete the namespace's filesystem (its data goes with it)."""
        files = self.files(name)
        target = self.server_root / name
        try:
            while os.path.ismount(target):
                await filesystem.umount(target)
            await files.unmount()
        except CommandError as e:
            raise WorkloadError(f"zdb namespace {name}: cannot remove: {e}") from None
        for path in (files.mount, target):
            with contextlib.suppress(OSError):
                path.rmdir()
        files.remove()
