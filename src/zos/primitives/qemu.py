"""QEMU virtual machines: started detached, found again after the agent, stopped cleanly.

A `Vm` is one `qemu-system-x86_64` process, kept by `zos.primitives.hostproc`: it runs in
its own session (it outlives the agent), its pid, start time and argv are recorded in
the machine's directory, and a later agent finds it there and checks that QMP answers;
an exit is noticed through a pidfd and followed by a restart with back-off.

- Direct kernel boot (`KernelBoot`) uses the `microvm` machine: no firmware, no PCI,
  virtio-mmio devices. Firmware boot (`FirmwareBoot`, SeaBIOS from the first disk) uses
  `q35` with virtio-pci devices.
- Accelerator: KVM where a probe boot under `-accel kvm` reaches the guest's init, TCG
  otherwise (`choose_accel`, once per host boot; a nested `/dev/kvm` that cannot run a
  stock kernel fails the probe). Under TCG a microvm guest has no timer to calibrate
  its TSC against (no PIT, no HPET) and hangs early: the host's TSC rate, which TCG's
  guest TSC follows, goes on its command line (`tsc_early_khz`).
- Devices: virtio-blk disks (raw only: a guest-written qcow2 header is never
  interpreted), virtio-9p shares (`mapped-xattr` by default: the guest's owners and
  modes are kept in xattrs, so it can plant no setuid file or device node on the host;
  but QEMU then cannot read a symlink the host made, ELOOP, so a tree the host
  unpacked, such as an flist's root, is shared `passthrough`, and only from a `nodev`
  mount: a device node the guest makes there opens nothing), virtio-net on a
  tap (opened by name in the tap's network namespace: QEMU is started there), a
  virtio-rng, fw_cfg files.
- The serial console goes to a `zos.primitives.logd` FIFO (bounded ring files that
  outlive the agent); QEMU's own messages to `qemu.log` in the machine's directory.
- The process joins the machine's cgroup (`zos.primitives.cgroupctl`) before it execs
  QEMU, and runs under QEMU's seccomp sandbox (no spawning, no privilege changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zos.primitives import logd, qmp
from zos.primitives.cgroupctl import Cgroup
from zos.primitives.hostproc import HostProcess, HostProcessError, start_time
from zos.primitives.links import check_ifname
from zos.primitives.netns import path as netns_path
from zos.primitives.supervisor import Backoff
from zos.primitives.vmnames import DISK_SERIAL, MAC, SHARE_TAG

QEMU = "qemu-system-x86_64"
MiB = 1 << 20
MAX_SOCKET_PATH = 107
TCG_TB_MIB = 64  # TCG's translation cache (QEMU's default is 1 GiB of address space)
# What QEMU itself needs beside guest RAM (devices, 9p, its heap), for the cgroup limit.
OVERHEAD = 96 * MiB
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# Joins every cgroup.procs given before `--`, then execs the rest: QEMU starts in the
# machine's cgroup with nothing charged elsewhere first, and keeps this pid.
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_FW_CFG = re.compile(r"^opt/[A-Za-z0-9_./-]{1,50}$")


class VmError(Exception):
    pass


# ---- what to run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    tsc_khz: int = 0  # the guest TSC rate a TCG microvm is told


@dataclass(frozen=True)
class KernelBoot:
    kernel: Path
    initrd: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class FirmwareBoot:
    """Boot the first disk with the BIOS."""


@dataclass(frozen=True)
class Disk:
    path: Path
    serial: str  # the guest finds the disk by it (/sys/block/vdX/serial)
    readonly: bool = False


@dataclass(frozen=True)
class Share:
    path: Path
    tag: str
    readonly: bool = False
    # The host's own owners, modes and symlinks, as they are (see the module's note).
    passthrough: bool = False


@dataclass(frozen=True)
class Nic:
    tap: str
    mac: str


@dataclass(frozen=True)
class FwCfg:
    name: str  # opt/...
    path: Path


@dataclass(frozen=True)
class VmSpec:
    name: str
    vcpus: int
    memory: int  # bytes of guest RAM, a whole number of MiB
    boot: KernelBoot | FirmwareBoot
    disks: Sequence[Disk] = ()
    shares: Sequence[Share] = ()
    nics: Sequence[Nic] = ()
    fw_cfg: Sequence[FwCfg] = ()
    netns: str | None = None  # where the taps are; QEMU is started there
    extra: Sequence[str] = field(default_factory=tuple)  # more QEMU arguments

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise VmError(f"name: invalid {self.name!r}")
        if not 1 <= self.vcpus <= 255:
            raise VmError(f"vcpus: {self.vcpus} is not between 1 and 255")
        if self.memory < 64 * MiB or self.memory % MiB:
            raise VmError("memory: at least 64 MiB, in whole MiB")
        if isinstance(self.boot, FirmwareBoot) and not self.disks:
            raise VmError("a firmware boot needs a disk to boot from")
        for d in self.disks:
            if not DISK_SERIAL.match(d.serial):
                raise VmError(f"disk {d.path}: invalid serial {d.serial!r}")
        if len({d.serial for d in self.disks}) != len(self.disks):
            raise VmError("disks: serials must differ")
        for s in self.shares:
            if not SHARE_TAG.match(s.tag):
                raise VmError(f"share {s.path}: invalid tag {s.tag!r}")
        for n in self.nics:
            check_ifname(n.tap)
            if not MAC.match(n.mac):
                raise VmError(f"nic {n.tap}: invalid MAC {n.mac!r}")
        for f in self.fw_cfg:
            if not _FW_CFG.match(f.name):
                raise VmError(f"fw_cfg: invalid name {f.name!r} (opt/...)")


def memory_limit(spec: VmSpec, accel: Accel) -> int:
    """Bytes the machine's cgroup allows: its RAM, QEMU's own needs, TCG's code cache."""
    return spec.memory + OVERHEAD + (TCG_TB_MIB * MiB if accel.name == "tcg" else 0)


def accel_args(accel: Accel) -> list[str]:
    """The -accel (and -cpu) arguments every machine on `accel` gets."""
    if accel.name == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,tb-size={TCG_TB_MIB}"]


def direct_cmdline(cmdline: str, accel: Accel) -> str:
    """The kernel command line a microvm on `accel` is given for `cmdline`."""
    if accel.name == "tcg" and accel.tsc_khz:
        return f"{cmdline} tsc_early_khz={accel.tsc_khz}".strip()
    return cmdline


def _opt(value: object) -> str:
    # QEMU option values end at a comma; a literal comma is written twice.
    return str(value).replace(",", ",,")


def qemu_argv(spec: VmSpec, accel: Accel, qmp_socket: Path, console: Path) -> list[str]:
    """The QEMU command line of `spec` (deterministic: a later agent compares it)."""
    spec.check()
    direct = isinstance(spec.boot, KernelBoot)
    bus = "device" if direct else "pci"
    argv = [shutil.which(QEMU) or QEMU, "-name", f"guest={_opt(spec.name)}"]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    argv += ["-sandbox", SANDBOX]
    argv += accel_args(accel)
    argv += ["-smp", str(spec.vcpus), "-m", f"{spec.memory // MiB}M"]
    if isinstance(spec.boot, KernelBoot):
        argv += ["-M", "microvm", "-kernel", str(spec.boot.kernel)]
        if spec.boot.initrd:
            argv += ["-initrd", str(spec.boot.initrd)]
        argv += ["-append", direct_cmdline(spec.boot.cmdline, accel)]
    else:
        argv += ["-M", "q35"]
    argv += ["-chardev", f"file,id=console,path={_opt(console)}", "-serial", "chardev:console"]
    argv += ["-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off"]
    for i, d in enumerate(spec.disks):
        drive = f"file={_opt(d.path)},if=none,id=disk{i},format=raw,discard=unmap"
        argv += ["-drive", drive + (",readonly=on" if d.readonly else "")]
        dev = f"virtio-blk-{bus},drive=disk{i},serial={d.serial}"
        if not direct and i == 0:
            dev += ",bootindex=0"
        argv += ["-device", dev]
    for i, s in enumerate(spec.shares):
        model = "passthrough" if s.passthrough else "mapped-xattr"
        fsdev = f"local,id=fs{i},path={_opt(s.path)},security_model={model},multidevs=remap"
        argv += ["-fsdev", fsdev + (",readonly=on" if s.readonly else "")]
        argv += ["-device", f"virtio-9p-{bus},fsdev=fs{i},mount_tag={s.tag}"]
    for i, n in enumerate(spec.nics):
        argv += ["-netdev", f"tap,id=net{i},ifname={n.tap},script=no,downscript=no"]
        nic = f"virtio-net-{bus},netdev=net{i},mac={n.mac}"
        argv += ["-device", nic if direct else nic + ",romfile="]  # no PXE option ROM
    argv += ["-device", f"virtio-rng-{bus}"]
    for f in spec.fw_cfg:
        argv += ["-fw_cfg", f"name={f.name},file={_opt(f.path)}"]
    return argv + list(spec.extra)


# ---- the accelerator -----------------------------------------------------------------


def host_tsc_khz() -> int:
    """The host's TSC rate as /proc/cpuinfo gives it (the rate a TCG guest's TSC runs)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            return round(float(value) * 1000)
    return 0


def kvm_device_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


async def probe_kvm(boot: KernelBoot, marker: bytes, timeout: float = 10.0) -> bool:
    """Whether a KVM guest boots `boot` far enough to print `marker` on its console."""
    if not kvm_device_usable():
        return False
    # The accelerator arguments a machine would get: a nested KVM may refuse `-cpu host`.
    argv = [shutil.which(QEMU) or QEMU, "-M", "microvm", *accel_args(Accel("kvm"))]
    argv += ["-m", "128M", "-nodefaults", "-no-user-config", "-display", "none"]
    argv += ["-no-reboot", "-serial", "stdio", "-kernel", str(boot.kernel)]
    if boot.initrd:
        argv += ["-initrd", str(boot.initrd)]
    argv += ["-append", boot.cmdline]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while marker not in seen:
                chunk = await proc.stdout.read(4096)
                if not chunk:
                    return False  # QEMU refused KVM, or the guest died
                seen = (seen + chunk)[-4096:]
        return True
    except TimeoutError:
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


async def choose_accel(
    cache: Path, probe: KernelBoot, marker: bytes, timeout: float = 10.0
) -> Accel:
    """KVM if it runs `probe`, else TCG; decided once per host boot (kept in `cache`),
    so every agent of this boot builds the same QEMU command lines."""
    try:
        raw = json.loads(cache.read_text())
        if raw.get("boot_id") == _boot_id():
            return Accel(str(raw["name"]), int(raw.get("tsc_khz", 0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if await probe_kvm(probe, marker, timeout):
        accel = Accel("kvm")
    else:
        accel = Accel("tcg", host_tsc_khz())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    record = {"boot_id": _boot_id(), "name": accel.name, "tsc_khz": accel.tsc_khz}
    tmp.write_text(json.dumps(record))
    os.replace(tmp, cache)
    return accel


# ---- a running machine ---------------------------------------------------------------


async def _wait_gone(pid: int, started: int, timeout: float) -> bool:
    """Wait (on a pidfd, no polling) until `pid` of start time `started` is gone."""
    if start_time(pid) != started:
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        if start_time(pid) != started:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await gone
        return start_time(pid) != started
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@dataclass(eq=False)
class Vm:
    """One machine: its QEMU process, QMP socket, console and cgroup.

    `directory` holds what the machine needs at run time (the process record, the QMP
    socket, QEMU's log, and whatever files the caller puts there, such as fw_cfg
    settings); `console` is its logd directory (`<logs root>/<name>`). `process` is the
    QEMU (its pid, restarts, whether it is alive).
    """

    spec: VmSpec
    directory: Path
    accel: Accel
    console: Path
    cgroup: Cgroup | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        self.qmp_socket = self.directory / "qmp.sock"
        if len(str(self.qmp_socket)) > MAX_SOCKET_PATH:
            raise VmError(f"{self.qmp_socket}: too long for a unix socket")
        argv = qemu_argv(self.spec, self.accel, self.qmp_socket, self.console / "fifo")
        if self.spec.netns:
            argv = ["nsenter", f"--net={netns_path(self.spec.netns)}", "--", *argv]
        if self.cgroup is not None:
            joins = [str(p) for p in self.cgroup.procs_files()]
            argv = ["/bin/sh", "-c", _JOIN, "zos-vm", *joins, "--", *argv]
        record, log = self.directory / "process.json", self.directory / "qemu.log"
        self.process = HostProcess(f"vm {self.spec.name}", argv, record, log, self.backoff)
        self._lock = asyncio.Lock()

    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        async with self._lock:
            return await qmp.execute(self.qmp_socket, command, arguments)

    async def status(self) -> str:
        """QEMU's run state: "running", "paused", "shutdown", …"""
        return str((await self.qmp("query-status"))["status"])

    async def _answers(self) -> bool:
        try:
            await self.status()
            return True
        except qmp.QmpError:
            return False

    async def ensure(self, timeout: float = 60.0) -> int:
        """Running and answering QMP: the process an earlier agent started (same pid, start
        time and command line), or a new one. Its pid. One that runs with another command
        line (the spec changed) is ended with SIGTERM and replaced: `stop` it first for a
        clean shutdown. The cgroup must exist (`Cgroup.create`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.cgroup is not None and not self.cgroup.exists():
            raise VmError(f"cgroup {self.cgroup.name} does not exist: create it first")
        await asyncio.to_thread(logd.ensure_daemon, self.console.parent)
        # Held while QEMU starts: its open of the FIFO never waits for the log daemon.
        fd = await asyncio.to_thread(logd.open_output, self.console)
        try:
            return await self.process.ensure(self._answers, timeout)
        except HostProcessError as exc:
            raise VmError(str(exc)) from None
        finally:
            os.close(fd)

    async def stop(self, grace: float = 10.0) -> None:
        """Power the guest off (ACPI power button), wait `grace` seconds for it, then quit
        QEMU; the process is gone afterwards and is not restarted."""
        await self.process.adopt()  # the QEMU an earlier agent started, if it runs
        self.process.close()  # no restart when it exits now
        if self.process.alive():
            pid = self.process.pid
            started = start_time(pid)
            gone = False
            if grace > 0 and await self._try_qmp("system_powerdown"):
                gone = await _wait_gone(pid, started, grace)
            if not gone and await self._try_qmp("quit"):
                await _wait_gone(pid, started, 5.0)
        await self.process.stop()  # SIGTERM, SIGKILL if QEMU still runs; forget the record
        self.qmp_socket.unlink(missing_ok=True)

    async def _try_qmp(self, command: str) -> bool:
        try:
            await self.qmp(command)
            return True
        except qmp.QmpError:
            return False

    async def remove(self, grace: float = 10.0) -> None:
        """Stop the machine and remove its directory, console log and cgroup."""
        await self.stop(grace)
        await asyncio.to_thread(shutil.rmtree, self.directory, True)
        await asyncio.to_thread(shutil.rmtree, self.console, True)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)

    def close(self) -> None:
        """Stop watching; the machine keeps running (the agent is going away)."""
        self.process.close()
