"""The VM runtime: a zmachine as a QEMU virtual machine (it shares no kernel with the node).

A container flist runs as a light VM (`zos.primitives.vminit`): Debian's kernel and the
initramfs the node builds, the machine's root (the flist tree under its writable layer,
as the manager mounts it) shared as virtio-9p, its volumes as more 9p shares mounted where
the deployment says; hostname, env, entrypoint and the small /etc files go through
fw_cfg. A flist that carries `/boot/vmlinuz` (and `/boot/initrd.img`) boots its own
kernel with `init=` its entrypoint. 9p rather than a disk image built from the tree: the
tree is shared by every machine of that flist, the writes land in the machine's layer as
for a container, and nothing is copied before the boot.

Each NIC is a tap attachment (`zos.node.networks`, kind "tap") on the network's bridge;
QEMU runs in the network's namespace to open it, inside cgroup `zos/vm-<wid>` (its vCPUs'
time, RAM plus QEMU's own needs). The accelerator is chosen once per host boot (KVM where
a probe boots, TCG otherwise). The serial console is the machine's log (`<data>/logs/vms/
<wid>`); `zos.primitives.qemu` restarts a QEMU that exits with the node's back-off and a
later agent finds it again by pid, start time, argv and QMP.

A VM image flist (`/image.raw` in its tree) is written to the machine's first zmount disk
(once per deployment of the machine; it must fit) and booted from it with firmware
(q35, SeaBIOS); it configures itself from a cloud-init NoCloud disk, attached last and
read-only, as zos makes it: hostname, each NIC by MAC with its address and gateway,
root's `ssh_authorized_keys` from env `SSH_KEY`, and mounts (further zmounts as
`/dev/vdX` disks in their order, volumes as 9p shares by tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import ClassVar

from zos.node.networks import Attachment
from zos.node.runtimes.base import MachinePlan, MachineRuntimeError, MachineStats, Mount
from zos.node.services import NodeServices
from zos.primitives import (
    blockdev,
    cgroups,
    cloudinit,
    filesystem,
    initramfs,
    logd,
    qemu,
    taps,
    trees,
    vminit,
)
from zos.primitives.cgroupctl import Cgroup
from zos.primitives.cgroups import CgroupError
from zos.primitives.hostproc import HostProcess, HostProcessError

MiB = 1 << 20
MIN_MEMORY = 64 * MiB  # QEMU's floor (qemu.VmSpec), room for the kernel and its init
VM_DIR = "vm"  # in the machine's workdir: settings, kernel copies, cloud-init disk
OWN_KERNEL = "boot/vmlinuz"
OWN_INITRD = "boot/initrd.img"
IMAGE = "image.raw"  # a VM image flist's disk
_INIT_PATH = re.compile(r"^/[A-Za-z0-9_./+-]{1,255}$")
START_TIMEOUT = 300.0  # QMP answers well before the guest boots; TCG under load is slow


def cgroup_of(wid: str) -> Cgroup:
    return Cgroup(f"vm-{wid}")


def _nic(index: int, a: Attachment) -> tuple[qemu.Nic, vminit.Interface]:
    tap = taps.for_interface(a.workload_id, a.network)
    inside = vminit.Interface(f"eth{index}", tap.mac, a.address, a.gateway)
    return qemu.Nic(tap.name, tap.mac), inside


def _vm_spec(
    plan: MachinePlan,
    boot: qemu.KernelBoot | qemu.FirmwareBoot,
    disks: list[qemu.Disk],
    shares: list[qemu.Share],
    nics: list[qemu.Nic],
    fw_cfg: list[qemu.FwCfg] | None = None,
) -> qemu.VmSpec:
    """The plan's machine: its vCPUs, RAM (whole MiB), devices, in its network's namespace."""
    return qemu.VmSpec(
        name=f"zm-{plan.workload_id}"[:64],
        vcpus=plan.cpu,
        memory=plan.memory // MiB * MiB,
        boot=boot,
        disks=disks,
        shares=shares,
        nics=nics,
        fw_cfg=fw_cfg or [],
        netns=plan.interfaces[0].namespace if plan.interfaces else None,
    )


class VmRuntime:
    name: ClassVar[str] = "vm"
    interface_kind: ClassVar[str] = "tap"

    def __init__(self, node: NodeServices) -> None:
        self.node = node
        self.cache = node.data_dir / "cache" / "vm"  # initramfs, accelerator choice
        self.logs_root = node.data_dir / "logs" / "vms"
        self.machines_root = node.data_dir / "zmachines"
        # QEMU's record, QMP socket and log: on /run (gone on reboot, as the VMs are) and
        # short enough for a unix socket's path, one directory per node.
        key = hashlib.sha256(str(node.data_dir.resolve()).encode()).hexdigest()[:12]
        self.run_root = Path(f"/run/zos/vm-{key}")
        self._vms: dict[str, qemu.Vm] = {}
        self._accel: qemu.Accel | None = None

    # ---- what the node brings --------------------------------------------------------

    async def _kernel(self) -> tuple[initramfs.Kernel, Path]:
        try:
            kernel = await asyncio.to_thread(initramfs.default_kernel)
            initrd = await asyncio.to_thread(vminit.ensure_initramfs, self.cache, kernel)
        except initramfs.InitramfsError as exc:
            raise MachineRuntimeError(f"no kernel for VMs on this node: {exc}") from None
        return kernel, initrd

    async def accelerator(self) -> qemu.Accel:
        """KVM or TCG, as the node's probe boot decided it (once per host boot)."""
        if self._accel is None:
            kernel, initrd = await self._kernel()
            probe = qemu.KernelBoot(kernel.image, initrd, vminit.probe_cmdline())
            self._accel = await qemu.choose_accel(
                self.cache / "accel.json", probe, vminit.PROBE_MARKER
            )
        return self._accel

    # ---- one machine -----------------------------------------------------------------

    def _directory(self, wid: str) -> Path:
        return self.machines_root / wid / VM_DIR

    def _run_dir(self, wid: str) -> Path:
        return self.run_root / wid

    async def _spec(self, plan: MachinePlan, directory: Path) -> qemu.VmSpec:
        if any(i.kind != self.interface_kind for i in plan.interfaces):
            raise MachineRuntimeError("a VM's interfaces are taps")
        # What the tenant asks is what the VM gets (and the node accounts): never more.
        if plan.memory < MIN_MEMORY:
            raise MachineRuntimeError(
                f"compute_capacity.memory: a VM needs at least {MIN_MEMORY // MiB} MiB"
            )
        if (plan.rootfs / IMAGE).exists() or (plan.rootfs / IMAGE).is_symlink():
            return await self._image_spec(plan, directory)
        pairs = [_nic(i, a) for i, a in enumerate(plan.interfaces)]
        nics, inside = [p[0] for p in pairs], [p[1] for p in pairs]
        # The flist's tree has the host's symlinks (passthrough): only from a nodev mount.
        if not os.statvfs(plan.rootfs).f_flag & os.ST_NODEV:
            raise MachineRuntimeError("the machine's root is not mounted nodev")
        shares = [qemu.Share(plan.rootfs, vminit.ROOT_TAG, passthrough=True)]
        disks, mounts = [], []
        for i, m in enumerate(plan.mounts):
            tag = f"vol{i}"
            if m.image is not None:  # a zmount: its raw disk (ext4 made on first use)
                if await blockdev.fs_type(m.image) is None:
                    await filesystem.mkfs_ext4(m.image)
                disks.append(qemu.Disk(m.image, tag))
                mounts.append(vminit.Mount("blk", tag, m.destination))
            else:  # a volume: the node's directory as a 9p share
                shares.append(qemu.Share(m.source, tag, m.readonly))
                mounts.append(vminit.Mount("9p", tag, m.destination))
        directory.mkdir(parents=True, exist_ok=True)
        own_kernel = await asyncio.to_thread(_copy_out, plan.rootfs, OWN_KERNEL, directory)
        if own_kernel is not None:
            initrd = await asyncio.to_thread(_copy_out, plan.rootfs, OWN_INITRD, directory)
            cmdline = vminit.kernel_cmdline(inside, extra=[f"init={_kernel_init(plan.args)}"])
            boot = qemu.KernelBoot(own_kernel, initrd, cmdline)
        else:
            kernel, initrd = await self._kernel()
            boot = qemu.KernelBoot(kernel.image, initrd, vminit.kernel_cmdline(inside))
        config = vminit.GuestConfig(
            hostname=plan.hostname,
            entrypoint=list(plan.args),
            env=plan.env,
            mounts=mounts,
            files=plan.files,
            cwd=plan.cwd,
        )
        try:
            settings = config.render()
        except vminit.GuestConfigError as exc:
            raise MachineRuntimeError(str(exc)) from None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "settings").write_text(settings)
        settings = [qemu.FwCfg(vminit.CONFIG_NAME, directory / "settings")]
        return _vm_spec(plan, boot, disks, shares, nics, settings)

    async def _image_spec(self, plan: MachinePlan, directory: Path) -> qemu.VmSpec:
        zmounts = [m for m in plan.mounts if m.image is not None]
        if not zmounts:
            raise MachineRuntimeError("mounts: a VM image flist needs a zmount to be written to")
        directory.mkdir(parents=True, exist_ok=True)
        written = directory / "image.written"
        if not written.exists():  # not again under a running machine
            await asyncio.to_thread(_write_image, plan.rootfs, zmounts[0])
            written.touch()
        disks = [qemu.Disk(m.image, f"disk{i}") for i, m in enumerate(zmounts) if m.image]
        shares, seeds = [], []
        for i, m in enumerate(zmounts[1:], start=1):
            seeds.append(cloudinit.Mount(f"/dev/vd{chr(ord('a') + i)}", m.destination))
        for i, m in enumerate(m for m in plan.mounts if m.image is None):
            shares.append(qemu.Share(m.source, f"vol{i}", m.readonly))
            seeds.append(cloudinit.Mount(f"vol{i}", m.destination, "9p"))
        ethernets = []
        for i, a in enumerate(plan.interfaces):
            mac = taps.for_interface(a.workload_id, a.network).mac
            ethernets.append(cloudinit.Ethernet(f"eth{i}", mac, [a.address], a.gateway))
        seed = cloudinit.NoCloud(
            instance_id=plan.workload_id,
            hostname=plan.hostname,
            ethernets=ethernets,
            ssh_keys=cloudinit.ssh_keys_from_env(plan.env.get("SSH_KEY", "")),
            mounts=seeds,
        )
        try:
            cidata = await cloudinit.write_disk(seed, directory / "cidata.img")
        except cloudinit.CloudInitError as exc:
            raise MachineRuntimeError(str(exc)) from None
        disks.append(qemu.Disk(cidata, "cidata", readonly=True))
        nics = [_nic(i, a)[0] for i, a in enumerate(plan.interfaces)]
        return _vm_spec(plan, qemu.FirmwareBoot(), disks, shares, nics)

    async def ensure(self, plan: MachinePlan) -> None:
        wid = plan.workload_id
        directory = self._directory(wid)
        try:
            spec = await self._spec(plan, directory)  # refusals first: no probe boot for them
            accel = await self.accelerator()
            cgroup = cgroup_of(wid)
            await asyncio.to_thread(
                cgroup.create, qemu.memory_limit(spec, accel), float(spec.vcpus)
            )
            known = self._vms.get(wid)
            if known is not None and known.spec != spec:
                known.close()
                known = None
            vm = known or qemu.Vm(
                spec, self._run_dir(wid), accel, self.logs_root / wid, cgroup, self.node.backoff
            )
            self._vms[wid] = vm
            await vm.ensure(timeout=START_TIMEOUT)
        except (qemu.VmError, CgroupError, OSError) as exc:
            raise MachineRuntimeError(str(exc)) from None

    async def stop(self, workload_id: str) -> None:
        run_dir = self._run_dir(workload_id)
        vm = self._vms.pop(workload_id, None)
        try:
            if vm is not None:
                await vm.stop(grace=10.0)
            else:  # an earlier agent's: its record names the process
                record = HostProcess(
                    f"vm {workload_id}", [], run_dir / "process.json", run_dir / "qemu.log"
                )
                await record.stop()
            cgroup = cgroup_of(workload_id)
            if await asyncio.to_thread(cgroup.exists):
                await asyncio.to_thread(cgroup.remove)
        except (HostProcessError, CgroupError, OSError) as exc:
            raise MachineRuntimeError(str(exc)) from None
        await asyncio.to_thread(shutil.rmtree, run_dir, True)
        await asyncio.to_thread(shutil.rmtree, self._directory(workload_id), True)

    async def list(self) -> list[str]:
        if not self.run_root.is_dir():
            return []
        return sorted(d.name for d in self.run_root.iterdir() if (d / "process.json").exists())

    def logs(self, workload_id: str) -> Path:
        return self.logs_root / workload_id

    def accel_of(self, workload_id: str) -> str | None:
        vm = self._vms.get(workload_id)
        return vm.accel.name if vm is not None else None

    async def stats(self, workload_id: str) -> MachineStats | None:
        vm = self._vms.get(workload_id)
        if vm is None:
            return None
        running = vm.process.alive()
        memory = cpu_ns = None
        if running:
            with contextlib.suppress(cgroups.CgroupError, OSError, ValueError):
                use = await asyncio.to_thread(cgroups.usage, vm.process.pid)
                memory, cpu_ns = use.memory, use.cpu_ns
        return MachineStats(running, vm.process.pid or None, vm.process.restarts, memory, cpu_ns)

    async def idle(self) -> None:
        if self._vms:
            return
        await asyncio.to_thread(logd.stop_daemon, self.logs_root)
        with contextlib.suppress(OSError):
            self.run_root.rmdir()

    def close(self) -> None:
        for vm in self._vms.values():
            vm.close()


def _kernel_init(args: tuple[str, ...]) -> str:
    """The entrypoint as the flist's kernel's `init=`: one absolute path of plain
    characters (the kernel command line has no quoting a tenant's value could not leave,
    and nothing of its own may be added: `init=/bin/sh rdinit=...`)."""
    if len(args) != 1 or not _INIT_PATH.match(args[0]) or ".." in args[0].split("/"):
        raise MachineRuntimeError(
            "entrypoint: with the flist's own kernel it is the kernel's init= and must be "
            f"one absolute path of A-Z a-z 0-9 _ . / + - (got {shlex.join(args)!r})"
        )
    return args[0]


def _open_tenant_file(root: Path, relative: str) -> int | None:
    """The machine's own file `relative` (None if it has none); never a symlink's target:
    a tenant's tree could point the name at a host file, which QEMU would then read."""
    try:
        return trees.open_inside(root, relative)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MachineRuntimeError(f"/{relative}: not a regular file of the flist ({exc})") from None


def _copy_out(root: Path, relative: str, directory: Path) -> Path | None:
    """A copy of the machine's file `relative` in the runtime's directory (what QEMU
    reads, also on a restart after the guest changed its own tree)."""
    fd = _open_tenant_file(root, relative)
    if fd is None:
        return None
    target = directory / Path(relative).name
    tmp = target.with_suffix(".tmp")
    with os.fdopen(fd, "rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, target)
    return target


def _write_image(root: Path, zmount: Mount) -> None:
    """Copy the flist's image onto the zmount's disk (which keeps its size)."""
    assert zmount.image is not None
    fd = _open_tenant_file(root, IMAGE)
    if fd is None:
        raise MachineRuntimeError(f"/{IMAGE}: missing")
    with os.fdopen(fd, "rb") as src, zmount.image.open("r+b") as dst:
        size, room = os.fstat(src.fileno()).st_size, os.fstat(dst.fileno()).st_size
        if size > room:
            raise MachineRuntimeError(
                f"mounts: the zmount at {zmount.destination} ({room} bytes) is smaller than "
                f"the flist's /{IMAGE} ({size} bytes)"
            )
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
