"""zmachine benchmark: deploy-to-running latency and idle containers per node.

Builds a busybox rootfs and one private network, then in the same run:

- latency: N zmachines deployed one after the other through the manager (overlay on an
  ext4 layer, netns + veth on the bridge, OCI bundle, supervised `runc run --detach`);
  the time from `provision` until the container runs (p50, p99), and removal time;
  then the same from the rootfs packed as an flist, once with the node's flist cache
  already holding it and once with an empty cache each time (fetch, verify, unpack);
- baseline: a bare `runc run --detach` of the same rootfs (no overlay, no network, the
  same bundle settings otherwise), N times (p50, p99);
- density: idle zmachines (`sleep`) deployed until a fixed count or a memory budget,
  with the memory they use (their cgroups), the drop in MemAvailable, the agent's RSS
  (this process) and the log daemon's RSS; then everything is removed.

Run as root: `.venv/bin/python benchmarks/zmachine.py [--count 20] [--idle 50]
[--budget-mib 4096]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import pct  # beside this script

from zos.flist import Router, pack
from zos.flist.cache import FlistCache
from zos.gridtypes import Deployment
from zos.node.runtimes.runc import RuncRuntime, container_id
from zos.node.workloads.base import NodeServices, WorkloadContext
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.primitives import cgroups, logd
from zos.primitives.runc import ContainerSpec, Runc, write_bundle

MiB = 1 << 20
TWIN = 4_000_000_001


def busybox_rootfs(root: Path) -> Path:
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(
        [str(root / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    return root


def dep(contract: int, workloads: list[dict[str, Any]]) -> Deployment:
    return Deployment.from_dict(
        {"version": 0, "twin_id": TWIN, "contract_id": contract, "workloads": workloads}
    )


def ctx(node: NodeServices, d: Deployment, name: str) -> WorkloadContext:
    return WorkloadContext(d.twin_id, d.contract_id, d, d.get(name), node)


def machine(contract: int, rootfs: Path, ip: str) -> Deployment:
    data = {
        "flist": str(rootfs),  # a prepared tree, or an .fl for the flist cache
        "network": {"interfaces": [{"network": "bench", "ip": ip}]},
        "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
        "entrypoint": "sleep 1000000",
    }
    return dep(contract, [{"version": 0, "name": "m", "type": "zmachine", "data": data}])


def ip_for(i: int) -> str:
    return f"10.200.{i // 250}.{2 + i % 250}"


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {name:<34} p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms"
        f"   mean {statistics.mean(ms):7.1f} ms   (n={len(ms)})"
    )


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


async def baseline(work: Path, rootfs: Path, count: int) -> list[float]:
    runc = Runc(work / "runc-baseline")
    times = []
    for i in range(count):
        cid = f"bench-bare-{i}"
        bundle = work / "bare" / cid
        spec = ContainerSpec(id=cid, rootfs=rootfs, args=["sleep", "1000000"], cpu=1)
        spec.memory = 256 * MiB
        spec.readonly_rootfs = True  # shared tree, as the overlay keeps it
        write_bundle(bundle, spec)
        fd = os.open(os.devnull, os.O_WRONLY)
        start = time.perf_counter()
        try:
            await runc.run_detached(cid, bundle, fd)
        finally:
            os.close(fd)
        times.append(time.perf_counter() - start)
        await runc.delete(cid)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20, help="latency samples")
    parser.add_argument("--idle", type=int, default=50, help="idle containers to hold")
    parser.add_argument("--budget-mib", type=int, default=4096, help="stop at this memory use")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, mounts, runc)")
    work = Path(tempfile.mkdtemp(prefix="zos-bench-zm-"))
    rootfs = busybox_rootfs(work / "rootfs")
    node = NodeServices(data_dir=work / "node", local_flists=(work,))
    store = Router.parse([f"dir://{work / 'store'}"])
    fl = work / "busybox.fl"
    await pack(rootfs, fl, store)
    net, zm = NetworkManager(node), ZMachineManager(node)
    containers = zm.runtime(RuncRuntime.name)
    assert isinstance(containers, RuncRuntime)
    net_dep = dep(
        1,
        [
            {
                "version": 0,
                "name": "bench",
                "type": "network",
                "data": {
                    "ip_range": "10.200.0.0/16",
                    "subnet": "10.200.0.0/20",
                    "wireguard_private_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                    "wireguard_listen_port": 51820,
                },
            }
        ],
    )
    deployed: list[Deployment] = []
    try:
        await net.provision(ctx(node, net_dep, "bench"))
        print(f"zmachine benchmark ({os.cpu_count()} cores), work dir {work}")

        # warm-up (page cache, first runc) and an anchor machine that stays: a node with
        # machines keeps its log daemon, which the node's last removal stops.
        anchor = machine(2, rootfs, ip_for(0))
        await zm.provision(ctx(node, anchor, "m"))
        deployed.append(anchor)

        up, down = [], []
        for i in range(args.count):
            d = machine(10 + i, rootfs, ip_for(1 + i))
            start = time.perf_counter()
            await zm.provision(ctx(node, d, "m"))
            state = await containers.runc.state(container_id(ctx(node, d, "m").workload_id))
            assert state and state["status"] == "running"
            up.append(time.perf_counter() - start)
            start = time.perf_counter()
            await zm.deprovision(ctx(node, d, "m"))
            down.append(time.perf_counter() - start)
        cached, uncached = [], []
        for i in range(args.count):
            for fresh, samples in ((False, cached), (True, uncached)):
                cache_dir = work / (f"cache-{i}" if fresh else "cache")
                cache = FlistCache(cache_dir, 1 << 30, store)
                node.flist_cache = cache
                if not fresh and i == 0:
                    await cache.prepare(str(fl))  # the node has run this image before
                d = machine(500 + 2 * i + fresh, fl, ip_for(60 + 2 * i + fresh))
                start = time.perf_counter()
                await zm.provision(ctx(node, d, "m"))
                samples.append(time.perf_counter() - start)
                await zm.deprovision(ctx(node, d, "m"))
                cache.close()
                if fresh:
                    shutil.rmtree(cache_dir, ignore_errors=True)
        bare = await baseline(work, rootfs, args.count)
        print("deploy-to-running latency")
        print(row("zmachine provision (prepared tree)", up))
        print(row("zmachine from flist, cached", cached))
        print(row("zmachine from flist, not cached", uncached))
        print(row("bare `runc run --detach` (baseline)", bare))
        print(row("zmachine deprovision", down))

        rss_before = rss_kib()
        avail_before = mem_available_kib()
        start = time.perf_counter()
        used_kib = 0
        for i in range(args.idle):
            d = machine(1000 + i, rootfs, ip_for(100 + i))
            await zm.provision(ctx(node, d, "m"))
            deployed.append(d)
            used_kib = (avail_before - mem_available_kib()) if i % 5 == 4 else used_kib
            if used_kib > args.budget_mib * 1024:
                break
        elapsed = time.perf_counter() - start
        await asyncio.sleep(1)
        cg_mem = 0
        for d in deployed[1:]:
            st = await containers.runc.state(container_id(ctx(node, d, "m").workload_id))
            if st and st.get("pid"):
                cg_mem += cgroups.usage(st["pid"]).memory
        logd_pid = int((containers.logs_root / logd.PID).read_text())
        n = len(deployed) - 1  # without the anchor
        print(f"idle containers: {n} running (stopped at {args.idle} or {args.budget_mib} MiB)")
        print(f"  deployed in {elapsed:.1f} s ({n / elapsed:.1f}/s)")
        print(f"  container cgroups: {cg_mem / MiB:.1f} MiB ({cg_mem / MiB / n:.2f} MiB each)")
        print(f"  MemAvailable drop: {(avail_before - mem_available_kib()) / 1024:.1f} MiB")
        print(
            f"  agent RSS: {rss_kib() / 1024:.1f} MiB (before the idle run {rss_before / 1024:.1f})"
        )
        print(f"  log daemon RSS: {rss_kib(logd_pid) / 1024:.1f} MiB (one for all containers)")
    finally:
        for d in deployed:
            await zm.deprovision(ctx(node, d, "m"))
        await zm.close()
        await ZMachineManager(node).cleanup(set())
        await net.cleanup(set())
        await store.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
