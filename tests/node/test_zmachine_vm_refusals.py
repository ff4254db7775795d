"""Hostile `runtime: vm` zmachines, refused through the node's managers with an error that
names the field, and nothing of them left (no machine directory, cgroup, tap or QEMU):
a zmount another machine holds, one zmount twice, a mount point with a newline, less
memory than a VM can have (never silently more than asked), an env name the VM's init
cannot set, a VM image flist with no zmount or one too small for its image. None of
them boots; the container holding the zmount is runc."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from netzm_helpers import deployment, machines, network_data, remove_everything, unique_twin
from test_zmachine_manager import deploy, machine, with_rootfs

from zos.gridtypes import Deployment
from zos.gridtypes.names import network_id
from zos.node.runtimes.vm import VmRuntime, cgroup_of
from zos.node.workloads.base import NodeServices, WorkloadError
from zos.primitives import filesystem, links, taps
from zos.primitives.supervisor import Backoff

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root]
SHARED = pytest.mark.asyncio(loop_scope="module")
MiB = 1 << 20


def net() -> dict[str, Any]:
    """The twin's network (a listen port of its own: the node refuses one two hold)."""
    return {"name": "net", "type": "network", "data": network_data("10.77.1.0/24")}


DISK = {"name": "disk", "type": "zmount", "data": {"size": 64 * MiB}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path
) -> AsyncIterator[NodeServices]:
    base = tmp_path_factory.mktemp("vm-refusals")
    image = base / "image-flist"
    image.mkdir()
    filesystem.create_sparse(image / "image.raw", 96 * MiB)  # larger than DISK
    svc = NodeServices(
        data_dir=base / "node", local_flists=(busybox_rootfs, image), backoff=Backoff(base=0.2)
    )
    try:
        yield svc
    finally:
        await remove_everything(svc)


def vm(ip: str, **extra: Any) -> dict[str, Any]:
    return machine("vm", "net", ip, "sleep 1000", runtime="vm", **extra)


async def refused(node: NodeServices, dep: Deployment, match: str) -> None:
    """`dep`'s machine "vm" is refused naming `match`, and nothing of it stays."""
    with pytest.raises(WorkloadError, match=match):
        await deploy(node, dep)
    wid = f"{dep.twin_id}-{dep.contract_id}-vm"
    assert not (node.data_dir / "zmachines" / wid).exists()
    assert not cgroup_of(wid).exists()
    assert wid not in await machines(node).runtime(VmRuntime.name).list()
    net_ns = node.networks.namespace(network_id(dep.twin_id, "net"))
    assert not links.exists(taps.for_interface(wid, "net").name, net_ns)


@SHARED
async def test_a_zmount_a_container_holds_is_refused_to_a_vm(
    node: NodeServices, busybox_rootfs: Path
) -> None:
    twin, network = unique_twin(), net()
    holder = machine("holder", "net", "10.77.1.2", "sleep 1000")
    holder["data"]["mounts"] = [{"name": "disk", "mountpoint": "/disk"}]
    await deploy(node, with_rootfs(deployment(twin, 701, [network, DISK, holder]), busybox_rootfs))
    taker = vm("10.77.1.3", mounts=[{"name": "disk", "mountpoint": "/disk"}])
    dep = with_rootfs(deployment(twin, 701, [network, DISK, holder, taker]), busybox_rootfs)
    await refused(node, dep, r"mounts\[0\]\.name: zmount 'disk' is in use by another machine")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            {
                "mounts": [
                    {"name": "disk", "mountpoint": "/a"},
                    {"name": "disk", "mountpoint": "/b"},
                ]
            },
            r"mounts\[1\]\.name: zmount 'disk' is mounted twice",
        ),
        (
            {"mounts": [{"name": "disk", "mountpoint": "/a\nb"}]},
            r"mounts\[0\]\.mountpoint: may not contain control characters",
        ),
        (
            {"compute_capacity": {"cpu": 1, "memory": 32 * MiB}},
            "compute_capacity.memory: a VM needs at least 64 MiB",
        ),
        ({"env": {"A-B": "1"}}, "env: invalid variable name 'A-B'"),
    ],
)
@SHARED
async def test_hostile_vm_settings_are_refused_naming_the_field(
    node: NodeServices, busybox_rootfs: Path, extra: dict[str, Any], match: str
) -> None:
    dep = deployment(unique_twin(), 702, [net(), DISK, vm("10.77.1.4", **extra)])
    await refused(node, with_rootfs(dep, busybox_rootfs), match)


@pytest.mark.parametrize(
    ("mounts", "match"),
    [
        ([], "mounts: a VM image flist needs a zmount to be written to"),
        (
            [{"name": "disk", "mountpoint": "/disk"}],
            r"mounts: the zmount at /disk \(67108864 bytes\) is smaller than the flist's "
            r"/image.raw \(100663296 bytes\)",
        ),
    ],
)
@SHARED
async def test_a_vm_image_needs_a_zmount_it_fits(
    node: NodeServices, mounts: list[dict[str, str]], match: str
) -> None:
    dep = deployment(unique_twin(), 703, [net(), DISK, vm("10.77.1.5", mounts=mounts)])
    await refused(node, with_rootfs(dep, Path(str(node.local_flists[1]))), match)
