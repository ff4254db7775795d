"""A VM image the test builds itself boots by firmware and configures itself from the
NoCloud disk: a raw disk with extlinux, Debian's kernel and a busybox init that reads
`cidata` (hostname from meta-data, the address of the NIC whose MAC network-config
names, root's keys from user-data). One boot."""

from __future__ import annotations

import os
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from vm_helpers import accelerator, bridge_namespace, ping, wait_console

from zos.primitives import cloudinit, filesystem, initramfs, logd, netns, qemu, taps
from zos.primitives.command import run

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
MiB = 1 << 20

# The image's whole "OS": an init that does, crudely, what cloud-init would.
IMAGE_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load
n=0
while ! seed=$(findfs LABEL=cidata 2>/dev/null) && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
mkdir -p /seed && mount -t vfat -o ro "$seed" /seed || echo "image: no cidata disk"
hostname "$(sed -n 's/^local-hostname: *//p' /seed/meta-data)"
mac=$(sed -n "s/^ *macaddress: *['\"]*\([0-9a-f:]*\).*/\1/p" /seed/network-config)
addr=$(sed -n '/addresses:/{n;s/^ *- *//p;q}' /seed/network-config)
gw=$(sed -n 's/^ *gateway4: *//p' /seed/network-config)
for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$mac" ] && nic=${d##*/}; done
ip link set lo up; ip link set "$nic" up; ip addr add "$addr" dev "$nic"
ip route add default via "$gw"
echo "image: hostname=$(hostname) $nic=$addr keys=$(grep -c 'ssh-' /seed/user-data)"
while :; do sleep 3600; done
"""
IMAGE_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "vfat", "nls_cp437", "nls_ascii"]


async def build_image(path: Path, cache: Path) -> None:
    """A whole-disk ext4 (no partition table: extlinux's boot sector is the disk's first
    sector) holding the kernel, an initramfs with IMAGE_INIT, and extlinux."""
    kernel = initramfs.default_kernel()
    initrd = initramfs.ensure(cache, initramfs.Recipe(kernel, IMAGE_INIT, IMAGE_MODULES))
    filesystem.create_sparse(path, 64 * MiB)
    # extlinux reads ext4 without the 64bit and metadata_csum features
    await run("mkfs.ext4", "-q", "-F", "-O", "^64bit,^metadata_csum", str(path))
    mnt = path.with_suffix(".mnt")
    await filesystem.mount_image(path, mnt)
    try:
        boot = mnt / "boot"
        (boot / "extlinux").mkdir(parents=True)
        (boot / "vmlinuz").write_bytes(kernel.image.read_bytes())
        (boot / "initrd").write_bytes(initrd.read_bytes())
        (boot / "extlinux" / "extlinux.conf").write_text(
            "DEFAULT linux\nLABEL linux\n  LINUX /boot/vmlinuz\n  INITRD /boot/initrd\n"
            "  APPEND console=ttyS0 quiet\n"
        )
        await run("extlinux", "--install", str(boot / "extlinux"))
    finally:
        await filesystem.umount(mnt)
        mnt.rmdir()


async def test_a_vm_image_boots_by_firmware_and_takes_its_cloud_init(tmp_path: Path) -> None:
    ns = f"zt-img-{os.getpid()}"
    gateway = IPv4Interface("10.231.78.1/24")
    address = IPv4Interface("10.231.78.5/24")
    tap = taps.for_interface(f"1-{os.getpid()}-image", "net")
    image = tmp_path / "image.raw"
    vm = None
    bridge_namespace(ns, gateway)
    try:
        await taps.ensure(tap, "br0", ns)
        await build_image(image, tmp_path / "cache")
        seed = cloudinit.NoCloud(
            instance_id="image-1",
            hostname="from-cloud-init",
            ethernets=[cloudinit.Ethernet("eth0", tap.mac, [address], gateway.ip)],
            ssh_keys=["ssh-ed25519 AAAAkey1 a@b", "ssh-ed25519 AAAAkey2 c@d"],
        )
        cidata = await cloudinit.write_disk(seed, tmp_path / "cidata.img")
        spec = qemu.VmSpec(
            name="image",
            vcpus=1,
            memory=256 * MiB,
            boot=qemu.FirmwareBoot(),
            disks=[qemu.Disk(image, "boot"), qemu.Disk(cidata, "cidata", readonly=True)],
            nics=[qemu.Nic(tap.name, tap.mac)],
            netns=ns,
        )
        accel = await accelerator(tmp_path / "cache")
        vm = qemu.Vm(spec, tmp_path / "vm", accel, tmp_path / "logs" / "image")
        await vm.ensure()
        out = (await wait_console(vm.console, b"keys=")).decode()
        assert f"image: hostname=from-cloud-init eth0={address} keys=2" in out
        result = ping(ns, address.ip)
        assert result.returncode == 0, result.stdout + result.stderr
        pid = vm.process.pid
        await vm.remove(grace=0)
        assert not Path(f"/proc/{pid}").exists()  # gone, and reaped: this test started it
    finally:
        if vm is not None:
            await vm.remove(grace=0)
        logd.stop_daemon(tmp_path / "logs")
        await taps.remove(tap, ns)
        netns.delete(ns)
