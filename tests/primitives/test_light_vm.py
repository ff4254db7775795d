"""One light VM (TCG here), booted once and shared by the tests below, in order: started
by an "agent" process that is then killed with -9, found again by pid, start time and
QMP, checked from inside (its console) and outside (ping, cgroup, the writable layer),
stopped with the power button, removed without a trace."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import pytest_asyncio
from vm_helpers import (
    LightMachine,
    accelerator,
    bridge_namespace,
    kernel_and_initrd,
    ping,
    start_agent,
)
from vm_helpers import wait_console as console_until

from zos.primitives import cgroups, filesystem, links, logd, netns, overlay, qemu, taps, vminit
from zos.primitives.cgroupctl import Cgroup
from zos.primitives.hostproc import start_time

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
SHARED = pytest.mark.asyncio(loop_scope="module")  # one machine, one event loop
MiB = 1 << 20


@dataclass
class Booted:
    machine: LightMachine
    vm: qemu.Vm
    agent_pid: int  # QEMU's pid as the killed agent reported it
    adopted_pid: int  # what the next agent found
    console: bytes  # up to READY
    upper: Path
    volume: Path
    tap: taps.Tap
    cgroup: Cgroup


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def booted(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path
) -> AsyncIterator[Booted]:
    base = tmp_path_factory.mktemp("light-vm")
    ns = f"zt-vm-{os.getpid()}"
    gateway = IPv4Interface("10.231.77.1/24")
    bridge_namespace(ns, gateway)
    tap = taps.for_interface(f"1-{os.getpid()}-light", "net")
    cgroup = Cgroup(f"zt-vm-{os.getpid()}")
    rootfs = base / "rootfs"
    volume = base / "volume.img"
    vm = None
    try:
        await taps.ensure(tap, "br0", ns)
        # The root as the VM runtime will give it: the tree under a writable overlay.
        await overlay.mount_overlay(busybox_rootfs, base / "upper", base / "work", rootfs)
        filesystem.create_sparse(volume, 64 * MiB)
        await filesystem.mkfs_ext4(volume)
        await filesystem.mount_image(volume, base / "volmnt")
        (base / "volmnt" / "hello").write_text("data on the volume\n")
        await filesystem.umount(base / "volmnt")

        kernel, initrd = kernel_and_initrd(base / "cache")
        accel = await accelerator(base / "cache")
        machine = LightMachine(
            base=str(base),
            rootfs=str(rootfs),
            volume=str(volume),
            initrd=str(initrd),
            kernel=str(kernel.image),
            accel=accel.name,
            tsc_khz=accel.tsc_khz,
            ns=ns,
            tap=tap.name,
            mac=tap.mac,
            address="10.231.77.2/24",
            gateway=str(gateway.ip),
            cgroup=cgroup.name,
        )
        spec_for_limit = machine.vm().spec
        cgroup.create(qemu.memory_limit(spec_for_limit, accel), spec_for_limit.vcpus)

        # The agent starts the machine and dies with -9 (no chance to hand anything over).
        agent = start_agent(machine)
        assert agent.stdout is not None
        agent_pid = int(agent.stdout.readline())
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)

        vm = machine.vm()  # the next agent
        adopted = await vm.ensure()
        console = await console_until(vm.console, b"READY")
        yield Booted(machine, vm, agent_pid, adopted, console, base / "upper", volume, tap, cgroup)
    finally:
        if vm is not None:
            await vm.remove(grace=0)
        await taps.remove(tap, ns)
        await overlay.unmount(rootfs)
        logd.stop_daemon(base / "logs")  # the killed agent started it; it outlived it
        netns.delete(ns)
        if cgroup.exists():
            cgroup.remove()


@SHARED
async def test_found_again_after_the_agent_is_killed(booted: Booted) -> None:
    vm = booted.vm
    assert booted.adopted_pid == booted.agent_pid  # the same process, not a new one
    assert await vm.ensure() == booted.agent_pid  # and again: ensure is idempotent
    assert vm.process.restarts == 0 and vm.process.alive()
    assert await vm.status() == "running"
    assert booted.console.count(vminit.READY_MARKER.encode()) == 1  # booted once


@SHARED
async def test_the_entrypoint_runs_with_its_env_args_cwd_and_hostname(booted: Booted) -> None:
    out = booted.console.decode()
    assert f"env=[{LightMachine.HOSTILE}]" in out  # one value, nothing evaluated
    args = [line[5:-1] for line in out.splitlines() if line.startswith("arg=[")]
    assert args == list(LightMachine.ARGS)
    assert "hostname=vm-test" in out
    assert f"pwd={LightMachine.CWD}\n" in out  # the working directory, in the root
    assert "symlink=busybox\n" in out  # the tree's own symlinks work (exec'd, read)
    assert f"nameserver {booted.machine.gateway}\n" in out  # from the ip= DNS field
    assert not (booted.upper / "pwned").exists()


@SHARED
async def test_vcpus_and_memory_are_as_asked(booted: Booted) -> None:
    out = booted.console.decode()
    assert "nproc=2" in out
    total_kib = int(next(x for x in out.splitlines() if x.startswith("MemTotal")).split()[1])
    assert 120 * 1024 < total_kib <= 192 * 1024


@SHARED
async def test_qemu_runs_in_the_machines_cgroup(booted: Booted) -> None:
    pid = booted.vm.process.pid
    assert pid in booted.cgroup.pids()
    limits = cgroups.limits(pid)
    assert limits.memory == qemu.memory_limit(booted.vm.spec, booted.vm.accel)
    assert limits.cpus == 2
    assert cgroups.usage(pid).memory > 64 * MiB  # the guest's RAM is charged here


@SHARED
async def test_the_volume_disk_is_mounted_inside(booted: Booted) -> None:
    assert "data on the volume" in booted.console.decode()


@SHARED
async def test_root_writes_land_in_the_writable_layer(booted: Booted) -> None:
    written = booted.upper / "written-in-vm"
    assert written.read_text() == "layer\n"
    # The root is shared passthrough (the host's symlinks readable), from a nodev mount.
    assert written.stat().st_uid == 0
    assert os.statvfs(booted.machine.rootfs).f_flag & os.ST_NODEV


@SHARED
async def test_the_nic_on_a_tap_answers_ping(booted: Booted) -> None:
    ns = booted.machine.ns
    assert booted.tap.name in links.ports("br0", ns)
    result = ping(ns, IPv4Address("10.231.77.2"))
    assert result.returncode == 0, result.stdout + result.stderr


@SHARED
async def test_stop_powers_off_cleanly_and_remove_leaves_nothing(booted: Booted) -> None:
    vm = booted.vm
    pid, started = vm.process.pid, start_time(vm.process.pid)
    await vm.stop(grace=120)
    assert start_time(pid) != started and not vm.process.alive()
    log = logd.read(vm.console).decode()
    assert "zos-init: power button: stopping" in log  # not a hard quit
    assert not (vm.directory / "process.json").exists()

    await vm.remove()
    await taps.remove(booted.tap, booted.machine.ns)
    assert not vm.directory.exists() and not vm.console.exists()
    assert not links.exists(booted.tap.name, booted.machine.ns)
    assert not booted.cgroup.exists()

    # What the guest wrote to its volume reached the disk before it powered off.
    mnt = booted.volume.parent / "check"
    await filesystem.mount_image(booted.volume, mnt)
    try:
        assert (mnt / "written").read_text() == "from-the-vm\n"
    finally:
        await filesystem.umount(mnt)
    shutil.rmtree(mnt)
