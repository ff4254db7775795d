"""A container flist that carries its own kernel (`/boot/vmlinuz`, `/boot/initrd.img`),
packed and prepared by the node's flist cache: booted as a VM with that kernel and
initrd, not the node's, and its entrypoint as the kernel's `init=` (PID 1 of the guest).
The flist is built here from Debian's kernel, an initrd of busybox and the 9p modules
whose init mounts the root share and switches to `init=`, and the busybox tree. An
entrypoint that would add kernel arguments is refused naming the field. One boot."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from netzm_helpers import ctx, deployment, machines, network_data, node_with_flist, unique_twin
from test_zmachine_manager import deploy, logs_until, machine

from zos.gridtypes.names import network_id
from zos.node.runtimes.vm import cgroup_of
from zos.node.workloads.base import NodeServices, WorkloadError
from zos.primitives import initramfs, links, taps
from zos.primitives.hostproc import start_time

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root, pytest.mark.slow]
MiB = 1 << 20
BOOT = 900.0  # a TCG boot on a loaded 2-core machine

# The flist's initrd: what a distribution's would do, crudely (root from root=, then init=).
FLIST_INITRD_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load
init=/sbin/init; root=""
for arg in $(cat /proc/cmdline); do
    case $arg in init=*) init=${arg#init=} ;; root=*) root=${arg#root=} ;; esac
done
echo "flist-initrd: root=$root init=$init"
mount -t 9p -o trans=virtio,version=9p2000.L "$root" /newroot || echo "flist-initrd: no root"
umount /proc /sys /dev
exec switch_root /newroot "$init"
"""
FLIST_INITRD_MODULES = ["virtio_mmio", "9pnet_virtio", "9p"]
HELLO = """#!/bin/sh
mount -t proc proc /proc
echo "hello: pid=$$ kernel=$(uname -r)"
echo "hello: cmdline=$(cat /proc/cmdline)"
echo OWN-KERNEL-READY
exec sleep 1000000
"""


@pytest.fixture
async def node(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[NodeServices]:
    tree = tmp_path / "tree"
    shutil.copytree(busybox_rootfs, tree, symlinks=True)
    kernel = initramfs.default_kernel()
    initrd = initramfs.ensure(
        tmp_path / "initrd", initramfs.Recipe(kernel, FLIST_INITRD_INIT, FLIST_INITRD_MODULES)
    )
    (tree / "boot").mkdir()
    shutil.copyfile(kernel.image, tree / "boot" / "vmlinuz")
    shutil.copyfile(initrd, tree / "boot" / "initrd.img")
    (tree / "sbin" / "hello").write_text(HELLO)
    (tree / "sbin" / "hello").chmod(0o755)
    async with node_with_flist(tmp_path, tree, "kernel.fl") as svc:
        yield svc


def qemu_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.mark.timeout(1800)  # a TCG boot on a loaded machine
async def test_an_flist_with_its_own_kernel_boots_it_with_init_its_entrypoint(
    node: NodeServices, tmp_path: Path
) -> None:
    twin = unique_twin()
    net = {"name": "net", "type": "network", "data": network_data("10.75.1.0/24")}
    vm = machine("kvm", "net", "10.75.1.2", "/sbin/hello", runtime="vm")
    vm["data"]["flist"] = str(tmp_path / "kernel.fl")
    zm = machines(node)
    wid = f"{twin}-601-kvm"

    # Hostile first: an entrypoint that would add kernel arguments is refused, nothing left.
    bad = {**vm, "data": {**vm["data"], "entrypoint": "'/sbin/hello rdinit=/bin/sh'"}}
    with pytest.raises(WorkloadError, match="entrypoint: with the flist's own kernel"):
        await deploy(node, deployment(twin, 601, [net, bad]))
    assert not (node.data_dir / "zmachines" / wid).exists()
    assert not cgroup_of(wid).exists()

    dep = deployment(twin, 601, [net, vm])
    results = await deploy(node, dep)
    assert results["kvm"]["runtime"] == "vm"
    out = (await logs_until(zm, wid, b"OWN-KERNEL-READY", timeout=BOOT)).decode()
    assert "flist-initrd: root=root init=/sbin/hello" in out  # the flist's initrd ran
    assert "hello: pid=1 " in out  # the entrypoint is the guest's init
    assert "init=/sbin/hello" in out.split("hello: cmdline=")[1].splitlines()[0]
    assert "zos-init:" not in out  # not the node's light init

    stats = await zm.stats(wid)
    assert stats is not None and stats.pid
    argv = qemu_argv(stats.pid)
    machine_dir = node.data_dir / "zmachines" / wid / "vm"
    kernel, initrd = Path(argv[argv.index("-kernel") + 1]), Path(argv[argv.index("-initrd") + 1])
    assert (kernel, initrd) == (machine_dir / "vmlinuz", machine_dir / "initrd.img")
    assert kernel.read_bytes() == initramfs.default_kernel().image.read_bytes()

    pid, started = stats.pid, start_time(stats.pid)
    await zm.deprovision(ctx(node, dep, "kvm"))
    assert start_time(pid) != started
    net_ns = node.networks.namespace(network_id(twin, "net"))
    assert not links.exists(taps.for_interface(wid, "net").name, net_ns)
    assert not cgroup_of(wid).exists()
    assert not (node.data_dir / "zmachines" / wid).exists()
