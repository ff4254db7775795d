"""Shared by the VM tests: waiting on a console, a namespace with a bridge, the light VM
the tests boot, and an "agent" process that starts it and can be killed with -9.

Run as a script (`python vm_helpers.py agent '<json>'`) it is that agent: it starts the
machine through the primitives, prints QEMU's pid once QMP answers, and waits to die.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from zos.primitives import initramfs, links, logd, netns, qemu, vminit
from zos.primitives.cgroupctl import Cgroup

MiB = 1 << 20


async def wait_console(directory: Path, marker: bytes, timeout: float = 900.0) -> bytes:
    """The console output up to and including `marker` (TCG boots are slow under load)."""
    seen = b""
    async with asyncio.timeout(timeout):
        async for chunk in logd.follow(directory):
            seen += chunk
            if marker in seen:
                return seen
    raise AssertionError(f"console ended without {marker!r}: {seen[-2000:]!r}")


def bridge_namespace(name: str, gateway: IPv4Interface) -> None:
    netns.create(name)
    links.set_up("lo", name)
    links.ensure_bridge("br0", name)
    links.set_addresses("br0", [gateway], name)
    links.set_up("br0", name)


def ping(ns: str, address: IPv4Address) -> subprocess.CompletedProcess[str]:
    """busybox ping from inside `ns` (three tries, each waiting up to 10 s)."""
    argv = ["ip", "netns", "exec", ns, "busybox", "ping", "-c", "3", "-W", "10", str(address)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@dataclass(frozen=True)
class LightMachine:
    """Everything that decides the light VM's command line (the same in every process)."""

    base: str
    rootfs: str
    volume: str
    initrd: str
    kernel: str
    accel: str
    tsc_khz: int
    ns: str
    tap: str
    mac: str
    address: str
    gateway: str
    cgroup: str

    ENTRY = r"""
printf 'env=[%s]\n' "$GREETING"
for a in "$@"; do printf 'arg=[%s]\n' "$a"; done
echo "hostname=$(hostname)"
echo "pwd=$(pwd)"
/bin/sh -c 'echo "symlink=$(readlink /bin/sh)"'
echo "nproc=$(nproc)"
grep MemTotal /proc/meminfo
cat /data/hello
cat /etc/resolv.conf
echo from-the-vm > /data/written
echo layer > /written-in-vm
echo READY
exec sleep 1000000
"""
    HOSTILE = 'it\'s "quoted" $(touch /pwned) `id`; rm -rf / \n-- second line'
    ARGS = ("a b", "--", "$(id)", "'", "")
    CWD = "/srv/app"  # not in the tree: made, as runc makes it

    def config(self) -> vminit.GuestConfig:
        return vminit.GuestConfig(
            hostname="vm-test",
            entrypoint=["sh", "-c", self.ENTRY, "argv0", *self.ARGS],
            env={"GREETING": self.HOSTILE},
            mounts=[vminit.Mount("blk", "vol1", "/data")],
            files={"/etc/hosts": "127.0.0.1\tlocalhost\n"},
            cwd=self.CWD,
        )

    def vm(self) -> qemu.Vm:
        base = Path(self.base)
        directory = base / "vm"
        directory.mkdir(parents=True, exist_ok=True)
        settings = directory / "settings"
        settings.write_text(self.config().render())
        gateway = IPv4Address(self.gateway)
        nic = vminit.Interface(
            "eth0", self.mac, IPv4Interface(self.address), gateway, dns=[gateway]
        )
        spec = qemu.VmSpec(
            name="light",
            vcpus=2,
            memory=192 * MiB,
            boot=qemu.KernelBoot(
                Path(self.kernel), Path(self.initrd), vminit.kernel_cmdline([nic])
            ),
            disks=[qemu.Disk(Path(self.volume), "vol1")],
            shares=[qemu.Share(Path(self.rootfs), vminit.ROOT_TAG, passthrough=True)],
            nics=[qemu.Nic(self.tap, self.mac)],
            fw_cfg=[qemu.FwCfg(vminit.CONFIG_NAME, settings)],
            netns=self.ns,
        )
        accel = qemu.Accel(self.accel, self.tsc_khz)
        return qemu.Vm(spec, directory, accel, base / "logs" / "light", Cgroup(self.cgroup))


def kernel_and_initrd(cache: Path) -> tuple[initramfs.Kernel, Path]:
    kernel = initramfs.default_kernel()
    return kernel, vminit.ensure_initramfs(cache, kernel)


async def accelerator(cache: Path) -> qemu.Accel:
    """KVM or TCG, as the primitives choose it (a probe boot of the light initramfs)."""
    kernel, initrd = kernel_and_initrd(cache)
    probe = qemu.KernelBoot(kernel.image, initrd, vminit.probe_cmdline())
    return await qemu.choose_accel(cache / "accel.json", probe, vminit.PROBE_MARKER)


def start_agent(machine: LightMachine) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "agent", json.dumps(asdict(machine))],
        stdout=subprocess.PIPE,
        text=True,
    )


async def _agent(machine: LightMachine) -> None:
    vm = machine.vm()
    pid = await vm.ensure(timeout=300)
    print(pid, flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__" and sys.argv[1:2] == ["agent"]:
    asyncio.run(_agent(LightMachine(**json.loads(sys.argv[2]))))
