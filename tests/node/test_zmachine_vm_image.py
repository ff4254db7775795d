"""A VM image flist (a tree holding `/image.raw`, built by the test: extlinux, Debian's
kernel and a busybox init that reads cloud-init) deployed through the node's managers:
written to the machine's first zmount, booted by firmware, configured from the NoCloud
disk (hostname, address by MAC, root's keys from SSH_KEY), reachable on its address; the
zmount it runs from refused to any other machine (a container, a VM) while it runs; its
removal leaves no process, tap or file. One boot."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from netzm_helpers import ctx, deployment, machines, network_data, remove_everything, unique_twin
from test_zmachine_manager import deploy, logs_until, machine

from zos.gridtypes.names import network_id
from zos.node.runtimes.vm import cgroup_of
from zos.node.workloads.base import NodeServices, WorkloadError
from zos.primitives import links, taps
from zos.primitives.hostproc import start_time
from zos.primitives.supervisor import Backoff

# The image builder and ping of the primitives' VM image test (one image recipe).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "primitives"))
from test_vm_image import build_image
from vm_helpers import ping

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root, pytest.mark.slow]
MiB = 1 << 20
BOOT = 900.0


@pytest.fixture
async def node(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[tuple[NodeServices, Path]]:
    flist = tmp_path / "image-flist"
    flist.mkdir()
    await build_image(flist / "image.raw", tmp_path / "cache")
    # busybox: the root of the machines that try to take its disk
    svc = NodeServices(
        data_dir=tmp_path / "node", local_flists=(flist, busybox_rootfs), backoff=Backoff(base=0.2)
    )
    try:
        yield svc, flist
    finally:
        await remove_everything(svc)


async def test_a_vm_image_flist_boots_with_cloud_init(node: tuple[NodeServices, Path]) -> None:
    svc, flist = node
    twin = unique_twin()
    vm = machine(
        "imagevm",
        "net",
        "10.74.1.5",
        "",
        env={"SSH_KEY": "ssh-ed25519 AAAAkey1 a@b\nssh-ed25519 AAAAkey2 c@d"},
        mounts=[{"name": "disk", "mountpoint": "/boot-disk"}],
    )
    vm["data"]["flist"] = str(flist)
    net = {"name": "net", "type": "network", "data": network_data("10.74.1.0/24")}
    disk = {"name": "disk", "type": "zmount", "data": {"size": 128 * MiB}}
    dep = deployment(twin, 501, [net, disk, vm])
    results = await deploy(svc, dep)
    wid = f"{twin}-501-imagevm"
    assert results["imagevm"]["runtime"] == "vm"  # an image is always a VM
    zm = machines(svc)
    out = (await logs_until(zm, wid, b"keys=", timeout=BOOT)).decode()
    assert "image: hostname=imagevm eth0=10.74.1.5/24 keys=2" in out

    netid = network_id(twin, "net")
    net_ns = svc.networks.namespace(netid)
    result = ping(net_ns, IPv4Address("10.74.1.5"))
    assert result.returncode == 0, result.stdout + result.stderr

    # Its disk is QEMU's drive, never a loop device: still no other machine may mount it.
    for i, runtime in enumerate(("container", "vm")):
        taker = machine("taker", "net", f"10.74.1.{6 + i}", "sleep 1000", runtime=runtime)
        taker["data"]["flist"] = str(svc.local_flists[1])
        taker["data"]["mounts"] = [{"name": "disk", "mountpoint": "/disk"}]
        with pytest.raises(WorkloadError, match=r"mounts\[0\]\.name: zmount 'disk' is in use"):
            await zm.provision(ctx(svc, deployment(twin, 501, [net, disk, vm, taker]), "taker"))
        assert not (svc.data_dir / "zmachines" / f"{twin}-501-taker").exists()

    stats = await zm.stats(wid)
    assert stats is not None and stats.pid
    pid, started = stats.pid, start_time(stats.pid)
    await zm.deprovision(ctx(svc, dep, "imagevm"))
    assert start_time(pid) != started
    assert not links.exists(taps.for_interface(wid, "net").name, net_ns)
    assert not cgroup_of(wid).exists()
    assert not (svc.data_dir / "zmachines" / wid).exists()
