"""QEMU through the primitives: the command line a spec gives, bad specs refused, the
accelerator probed once per host boot, and a VM that powers off started again (the other
booted VMs: test_light_vm.py, test_vm_image.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from vm_helpers import accelerator, kernel_and_initrd

from zos.primitives import logd, qemu, vminit
from zos.primitives.supervisor import Backoff

MiB = 1 << 20


def _spec(tmp_path: Path, **kw: object) -> qemu.VmSpec:
    fields: dict[str, object] = {
        "name": "m1",
        "vcpus": 2,
        "memory": 256 * MiB,
        "boot": qemu.KernelBoot(tmp_path / "k", tmp_path / "i", "console=ttyS0"),
    }
    fields.update(kw)
    return qemu.VmSpec(**fields)  # type: ignore[arg-type]


def test_direct_boot_is_a_microvm_with_mmio_devices(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        disks=[qemu.Disk(tmp_path / "a,b.img", "vol1", readonly=True)],
        shares=[qemu.Share(tmp_path / "root", "root", passthrough=True), qemu.Share(tmp_path, "v")],
        nics=[qemu.Nic("t-abc", "02:00:00:00:00:01")],
        fw_cfg=[qemu.FwCfg("opt/zos/config", tmp_path / "cfg")],
    )
    argv = qemu.qemu_argv(spec, qemu.Accel("tcg", 2_000_000), tmp_path / "q.sock", tmp_path / "f")
    line = " ".join(argv)
    assert argv[argv.index("-M") + 1] == "microvm"
    assert "-no-reboot" in argv and "-nodefaults" in argv
    assert argv[argv.index("-sandbox") + 1].startswith("on,")
    assert "virtio-blk-device,drive=disk0,serial=vol1" in line
    # raw only (a guest-written qcow2 header is never read), read-only, commas doubled
    assert f"file={tmp_path}/a,,b.img,if=none,id=disk0,format=raw" in line and "readonly=on" in line
    assert "id=fs0,path=" in line and "security_model=passthrough" in line  # the root tree
    assert f"id=fs1,path={tmp_path},security_model=mapped-xattr" in line  # a volume
    assert "mount_tag=root" in line
    assert "ifname=t-abc,script=no,downscript=no" in line and "mac=02:00:00:00:00:01" in line
    assert argv[argv.index("-append") + 1] == "console=ttyS0 tsc_early_khz=2000000"
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "256M"

    kvm = qemu.qemu_argv(spec, qemu.Accel("kvm"), tmp_path / "q.sock", tmp_path / "f")
    assert kvm[kvm.index("-accel") + 1] == "kvm" and "tsc_early_khz" not in " ".join(kvm)


def test_firmware_boot_is_q35_from_the_first_disk(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        boot=qemu.FirmwareBoot(),
        disks=[qemu.Disk(tmp_path / "os.img", "boot"), qemu.Disk(tmp_path / "ci.img", "ci")],
        nics=[qemu.Nic("t-abc", "02:00:00:00:00:01")],
    )
    line = " ".join(qemu.qemu_argv(spec, qemu.Accel("tcg"), tmp_path / "q", tmp_path / "f"))
    assert "-M q35" in line and "-kernel" not in line
    assert "virtio-blk-pci,drive=disk0,serial=boot,bootindex=0" in line
    assert "virtio-blk-pci,drive=disk1,serial=ci " in line + " "
    assert "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,romfile=" in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "../x"}, "name"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory": 10 * MiB}, "memory"),
        ({"disks": [qemu.Disk(Path("/a"), "has space")]}, "serial"),
        ({"disks": [qemu.Disk(Path("/a"), "s"), qemu.Disk(Path("/b"), "s")]}, "serials"),
        ({"shares": [qemu.Share(Path("/a"), "x,y")]}, "tag"),
        ({"nics": [qemu.Nic("t-abc", "02:00:00:00:00:0G")]}, "MAC"),
        ({"nics": [qemu.Nic("a-name-far-too-long", "02:00:00:00:00:01")]}, "interface name"),
        ({"fw_cfg": [qemu.FwCfg("etc/x", Path("/a"))]}, "fw_cfg"),
        ({"boot": qemu.FirmwareBoot()}, "disk to boot"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        qemu.qemu_argv(_spec(tmp_path, **change), qemu.Accel("tcg"), tmp_path / "q", tmp_path / "f")


async def test_the_accelerator_is_probed_once_per_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, initrd = kernel_and_initrd(tmp_path / "cache")
    probe = qemu.KernelBoot(kernel.image, initrd, vminit.probe_cmdline())
    cache = tmp_path / "accel.json"
    first = await qemu.choose_accel(cache, probe, vminit.PROBE_MARKER)
    assert first.name in ("kvm", "tcg")
    if not qemu.kvm_device_usable():
        assert first.name == "tcg"
    if first.name == "tcg":
        assert first.tsc_khz > 0  # what a TCG microvm is told its TSC runs at

    async def no_probe(*_: object, **__: object) -> bool:
        raise AssertionError("probed again")

    monkeypatch.setattr(qemu, "probe_kvm", no_probe)
    assert await qemu.choose_accel(cache, probe, vminit.PROBE_MARKER) == first

    # Recorded during another boot: probed again.
    record = json.loads(cache.read_text())
    cache.write_text(json.dumps({**record, "boot_id": "another boot"}))
    with pytest.raises(AssertionError, match="probed again"):
        await qemu.choose_accel(cache, probe, vminit.PROBE_MARKER)


@pytest.mark.slow
async def test_a_vm_that_powers_off_is_started_again(tmp_path: Path) -> None:
    # The probe boot: the init prints its marker and powers off; QEMU exits; the host
    # starts it again (two boots, no devices).
    kernel, initrd = kernel_and_initrd(tmp_path / "cache")
    accel = await accelerator(tmp_path / "cache")
    spec = _spec(tmp_path, boot=qemu.KernelBoot(kernel.image, initrd, vminit.probe_cmdline()))
    fast = Backoff(base=0.1, cap=0.5, stable=60.0)
    vm = qemu.Vm(spec, tmp_path / "vm", accel, tmp_path / "logs" / "m1", backoff=fast)
    try:
        first = await vm.ensure()
        seen = b""
        async with asyncio.timeout(900):
            async for chunk in logd.follow(vm.console):
                seen += chunk
                if seen.count(vminit.PROBE_MARKER) >= 2:
                    break
        assert (
            vm.process.restarts >= 1 and vm.process.pid != first
        )  # a new QEMU booted the second time
    finally:
        await vm.remove(grace=0)
        logd.stop_daemon(tmp_path / "logs")
    assert not vm.process.alive() and not (tmp_path / "vm").exists()
