"""VM benchmark: boot time beside a bare QEMU, deploy-to-entrypoint through the node, idle memory.

In one run, on the accelerator the primitives choose (printed; TCG where `/dev/kvm`
cannot run a stock kernel):

- boot to a marker: Debian's kernel and the light VM initramfs (its init prints a
  marker right after loading its modules and powers off), started N times by a bare
  `qemu-system-x86_64 -M microvm … -serial stdio` (the baseline) and N times through
  `zos.primitives.qemu.Vm` (cgroup, QMP, console through the log daemon), alternately;
  time from start until the marker is read. The ratio is what the primitives add.
- a light VM to its entrypoint through the primitives: the busybox tree as 9p root,
  virtio-net on a tap on a bridge, settings by fw_cfg, `echo` as entrypoint.
- idle memory: those light VMs kept running (`sleep`), then per VM its cgroup's usage
  (RSS and page cache) and QEMU's RSS, and the drop in MemAvailable; beside the same
  number of idle runc containers of the same tree (`sleep`), measured the same way.

- deploy to entrypoint through the node: a zmachine with `runtime: vm` provisioned by
  the node's managers (writable layer and overlay, tap on the network's bridge, cgroup,
  QEMU under the VM runtime) N times, from `provision` until its entrypoint's marker is
  in the machine's log, beside the bare boot above (the ratio is what zos adds: the
  node's preparation, 9p root, network, the light init's work), and removal time.

Run as root: `.venv/bin/python benchmarks/vm.py [--count 3] [--idle 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from zmachine import busybox_rootfs, ctx, dep, mem_available_kib, rss_kib  # beside this script

from zos.node.workloads.base import NodeServices
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.primitives import cgroups, initramfs, links, logd, netns, qemu, taps, vminit
from zos.primitives.cgroupctl import Cgroup
from zos.primitives.runc import ContainerSpec, Runc, write_bundle

MiB = 1 << 20
RAM = 256 * MiB
MARKER = vminit.PROBE_MARKER
READY = b"BENCH-READY"


def row(name: str, values: list[float]) -> str:
    return (
        f"  {name:<46} p50 {statistics.median(values):6.2f} s   min {min(values):6.2f} s"
        f"   max {max(values):6.2f} s   (n={len(values)})"
    )


async def bare_boot(kernel: Path, initrd: Path, accel: qemu.Accel) -> float:
    """A bare QEMU: no cgroup, no QMP, the serial console on a pipe."""
    argv = [shutil.which(qemu.QEMU) or qemu.QEMU, "-M", "microvm", *qemu.accel_args(accel)]
    argv += ["-m", f"{RAM // MiB}M", "-smp", "1", "-nodefaults", "-no-user-config"]
    argv += ["-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel)]
    argv += ["-initrd", str(initrd), "-append", qemu.direct_cmdline(vminit.probe_cmdline(), accel)]
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    seen = b""
    async with asyncio.timeout(600):
        while MARKER not in seen:
            chunk = await proc.stdout.read(4096)
            if not chunk:
                raise RuntimeError(f"bare QEMU ended without the marker: {seen[-500:]!r}")
            seen += chunk
    took = time.perf_counter() - start
    await proc.wait()  # the init powers off
    return took


async def until(console: Path, marker: bytes, timeout: float = 600.0) -> None:
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            async for chunk in logd.follow(console, interval=0.02):
                seen += chunk
                if marker in seen:
                    return
    except TimeoutError:
        raise RuntimeError(f"no {marker!r} on {console}: {seen[-800:]!r}") from None


async def primitives_boot(
    work: Path, i: int, kernel: Path, initrd: Path, accel: qemu.Accel
) -> float:
    spec = qemu.VmSpec(f"probe{i}", 1, RAM, qemu.KernelBoot(kernel, initrd, vminit.probe_cmdline()))
    cgroup = Cgroup(f"bench-vm-probe{i}")
    cgroup.create(qemu.memory_limit(spec, accel), 1)
    vm = qemu.Vm(spec, work / "vms" / spec.name, accel, work / "logs" / spec.name, cgroup)
    start = time.perf_counter()
    await vm.ensure()
    await until(vm.console, MARKER)
    took = time.perf_counter() - start
    await vm.remove(grace=0)  # the guest powered off; nothing to wait for
    return took


def light_vm(
    work: Path, i: int, kernel: Path, initrd: Path, accel: qemu.Accel, rootfs: Path, ns: str
) -> tuple[qemu.Vm, taps.Tap]:
    name = f"light{i}"
    directory = work / "vms" / name
    directory.mkdir(parents=True, exist_ok=True)
    settings = directory / "settings"
    entry = ["sh", "-c", f"echo {READY.decode()}; exec sleep 1000000"]
    settings.write_text(vminit.GuestConfig(name, entry).render())
    tap = taps.for_interface(f"1-{i}-{name}", "bench")
    nic = vminit.Interface(
        "eth0", tap.mac, IPv4Interface(f"10.232.0.{10 + i}/24"), IPv4Address("10.232.0.1")
    )
    spec = qemu.VmSpec(
        name=name,
        vcpus=1,
        memory=RAM,
        boot=qemu.KernelBoot(kernel, initrd, vminit.kernel_cmdline([nic])),
        shares=[qemu.Share(rootfs, vminit.ROOT_TAG, readonly=True)],
        nics=[qemu.Nic(tap.name, tap.mac)],
        fw_cfg=[qemu.FwCfg(vminit.CONFIG_NAME, settings)],
        netns=ns,
    )
    cgroup = Cgroup(f"bench-vm-{name}")
    cgroup.create(qemu.memory_limit(spec, accel), 1)
    return qemu.Vm(spec, directory, accel, work / "logs" / name, cgroup), tap


async def node_deploys(work: Path, rootfs: Path, count: int) -> tuple[list[float], list[float]]:
    """Seconds from `provision` to the entrypoint's marker in the log, and to remove it."""
    node = NodeServices(data_dir=work / "node", local_flists=(rootfs,))
    net, zm = NetworkManager(node), ZMachineManager(node)
    network = {
        "ip_range": "10.233.0.0/16",
        "subnet": "10.233.1.0/24",
        "wireguard_private_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "wireguard_listen_port": 51820,
    }
    net_dep = dep(1, [{"version": 0, "name": "bench", "type": "network", "data": network}])
    deploy, remove = [], []
    await net.provision(ctx(node, net_dep, "bench"))
    try:
        for i in range(count):
            data = {
                "flist": str(rootfs),
                "network": {"interfaces": [{"network": "bench", "ip": f"10.233.1.{10 + i}"}]},
                "compute_capacity": {"cpu": 1, "memory": RAM},
                "entrypoint": f"sh -c 'echo {READY.decode()}; exec sleep 1000000'",
                "runtime": "vm",
            }
            d = dep(10 + i, [{"version": 0, "name": "m", "type": "zmachine", "data": data}])
            start = time.perf_counter()
            await zm.provision(ctx(node, d, "m"))
            await until(zm.runtime("vm").logs(f"{d.twin_id}-{d.contract_id}-m"), READY)
            deploy.append(time.perf_counter() - start)
            start = time.perf_counter()
            await zm.deprovision(ctx(node, d, "m"))
            remove.append(time.perf_counter() - start)
    finally:
        await zm.cleanup(set())
        await net.cleanup(set())
    return deploy, remove


def memory_stat(pid: int) -> dict[str, int]:
    path = cgroups.controller_dir(pid, "memory") / "memory.stat"
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def idle_row(name: str, usages: list[int], rss: list[int], cache: list[int]) -> str:
    mib = [u / MiB for u in usages]
    return (
        f"  {name:<26} cgroup p50 {statistics.median(mib):6.1f} MiB"
        f" (rss {statistics.median(rss) / MiB:6.1f}, cache {statistics.median(cache) / MiB:5.1f})"
        f"   max {max(mib):6.1f} MiB   (n={len(mib)})"
    )


async def idle_containers(work: Path, rootfs: Path, count: int) -> list[int]:
    runc = Runc(work / "runc")
    pids = []
    for i in range(count):
        cid = f"bench-vm-ct{i}"
        bundle = work / "bundles" / cid
        spec = ContainerSpec(id=cid, rootfs=rootfs, args=["sleep", "1000000"], memory=RAM)
        spec.readonly_rootfs = True
        write_bundle(bundle, spec)
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            pids.append(await runc.run_detached(cid, bundle, fd))
        finally:
            os.close(fd)
    return pids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3, help="boots of each kind")
    parser.add_argument("--idle", type=int, default=3, help="idle VMs and containers to hold")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before measuring")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (cgroups, namespaces, taps)")
    work = Path(tempfile.mkdtemp(prefix="zos-bench-vm-"))
    rootfs = busybox_rootfs(work / "rootfs")
    kernel = initramfs.default_kernel()
    initrd = vminit.ensure_initramfs(work / "cache", kernel)
    probe = qemu.KernelBoot(kernel.image, initrd, vminit.probe_cmdline())
    accel = await qemu.choose_accel(work / "accel.json", probe, vminit.PROBE_MARKER)
    ns = "bench-vm"
    netns.create(ns)
    links.ensure_bridge("br0", ns)
    links.set_addresses("br0", [IPv4Interface("10.232.0.1/24")], ns)
    links.set_up("br0", ns)
    vms: list[qemu.Vm] = []
    made_taps: list[taps.Tap] = []
    runc = Runc(work / "runc")
    try:
        print(f"vm benchmark ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}), work {work}")
        tsc = f", guest TSC {accel.tsc_khz} kHz" if accel.name == "tcg" else ""
        print(f"accelerator: {accel.name}{tsc}; kernel {kernel.version}")
        bare, prim = [], []
        for i in range(args.count):
            bare.append(await bare_boot(kernel.image, initrd, accel))
            prim.append(await primitives_boot(work, i, kernel.image, initrd, accel))
        print("boot to the init's marker (same kernel and initramfs, microvm, 256 MiB, 1 vCPU):")
        print(row("bare qemu-system-x86_64 -serial stdio", bare))
        print(row("through zos.primitives.qemu.Vm", prim))
        ratio = statistics.median(prim) / statistics.median(bare)
        print(f"  ratio primitives / bare (p50): {ratio:.2f}")
        deploy, remove = await node_deploys(work, rootfs, args.count)
        print(row("deploy to entrypoint through the node (vm)", deploy))
        print(row("removal through the node", remove))
        ratio = statistics.median(deploy) / statistics.median(bare)
        print(f"  ratio node deploy / bare boot (p50): {ratio:.2f}")

        before = mem_available_kib()
        light = []
        for i in range(args.idle):
            vm, tap = light_vm(work, i, kernel.image, initrd, accel, rootfs, ns)
            await taps.ensure(tap, "br0", ns)
            made_taps.append(tap)
            start = time.perf_counter()
            await vm.ensure()
            vms.append(vm)
            await until(vm.console, READY)
            light.append(time.perf_counter() - start)
        print(row("light VM to its entrypoint (9p root, tap)", light))
        ct_pids = await idle_containers(work, rootfs, args.idle)
        await asyncio.sleep(args.settle)  # let boot-time allocations settle
        vm_stats = [memory_stat(vm.process.pid) for vm in vms]
        ct_stats = [memory_stat(pid) for pid in ct_pids]
        drop_kib = before - mem_available_kib()
        print(
            f"idle memory after {args.settle:.0f} s (VM: 256 MiB RAM, 1 vCPU; same busybox tree):"
        )
        print(
            idle_row(
                "light VM",
                [cgroups.usage(vm.process.pid).memory for vm in vms],
                [s.get("total_rss", s.get("anon", 0)) for s in vm_stats],
                [s.get("total_cache", s.get("file", 0)) for s in vm_stats],
            )
        )
        qemu_rss = statistics.median(rss_kib(v.process.pid) for v in vms) / 1024
        print(f"  {'':26} QEMU RSS p50 {qemu_rss:6.1f} MiB")
        print(
            idle_row(
                "runc container",
                [cgroups.usage(pid).memory for pid in ct_pids],
                [s.get("total_rss", s.get("anon", 0)) for s in ct_stats],
                [s.get("total_cache", s.get("file", 0)) for s in ct_stats],
            )
        )
        both = f"{args.idle} VMs + {args.idle} containers"
        print(f"  MemAvailable drop for {both}: {drop_kib / 1024:.0f} MiB")
    finally:
        for vm in vms:
            await vm.remove(grace=0)
        for c in await runc.list():
            await runc.delete(c["id"])
        for tap in made_taps:
            await taps.remove(tap, ns)
        logd.stop_daemon(work / "logs")
        netns.delete(ns)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
