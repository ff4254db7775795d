"""Node deploy benchmark: deploy-to-ok latency and deployments per second.

Starts a nats-server, the registry service and one node agent (`python -m zos.cli
node run`, a real subprocess), then:

- latency: one twin deploys a small volume N times, one after the other; the time
  from sending `zos.deployment.deploy` until `get` shows the volume `ok` (p50, p99);
- throughput: T twins deploy concurrently, M deployments each (contract creation in
  the registry included, as a user would see it); deployments per second;
- the node's resident memory after the runs;
- baseline: the same volume made by hand with the raw primitives (truncate, mkfs.ext4,
  mount -o loop) in this process, N times (p50, p99).

Run as root: `.venv/bin/python benchmarks/node_deploy.py [--count 50] [--twins 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import pct  # beside this script

from zos.bus import BusClient
from zos.grid.natsserver import NatsServer
from zos.gridtypes import Deployment, SignatureRequest, SignatureRequirement, Workload
from zos.identity import Identity, load_key_file
from zos.nodeapi import NodeClient
from zos.primitives import filesystem, loop
from zos.primitives.capacity import rss_bytes
from zos.registry import RegistryClient, RegistryService

MiB = 1 << 20
SIZE = 16 * MiB


class Twin:
    def __init__(self, nats: str, registry_key: bytes) -> None:
        self.nats = nats
        self.registry_key = registry_key
        self.identity = Identity.generate()

    async def connect(self) -> Twin:
        self.registry = RegistryClient(self.nats, self.identity, registry_key=self.registry_key)
        await self.registry.connect()
        self.id = (await self.registry.register_twin()).id
        resolver = await self.registry.key_resolver()
        self.bus = await BusClient(self.registry.conn, self.identity, self.id, resolver).connect()
        return self

    async def close(self) -> None:
        await self.bus.close()
        await self.registry.close()

    async def contract(self, node_id: int) -> Deployment:
        dep = Deployment(
            twin_id=self.id,
            signature_requirement=SignatureRequirement(
                requests=[SignatureRequest(twin_id=self.id, required=True, weight=1)],
                weight_required=1,
            ),
            workloads=[Workload.from_raw({"name": "v", "type": "volume", "data": {"size": SIZE}})],
        )
        dep.contract_id = (await self.registry.create_node_contract(node_id, dep.hash_hex())).id
        dep.sign(self.id, self.identity)
        return dep

    async def deploy_until_ok(self, node_twin: int, dep: Deployment) -> float:
        node = NodeClient(self.bus, node_twin)
        start = time.perf_counter()
        await node.deploy(dep)
        while True:
            got = await node.get(dep.contract_id)
            state = got["workloads"][0]["result"]["state"]
            if state == "ok":
                return time.perf_counter() - start
            if state == "error":
                raise RuntimeError(got["workloads"][0]["result"]["message"])
            await asyncio.sleep(0.002)


async def baseline(work: Path, count: int) -> list[float]:
    """The same volume by hand: sparse file, mkfs.ext4, loop mount."""
    times = []
    for i in range(count):
        image, target = work / f"b{i}.img", work / f"b{i}"
        start = time.perf_counter()
        filesystem.create_sparse(image, SIZE)
        await filesystem.mkfs_ext4(image)
        await filesystem.mount_image(image, target)
        times.append(time.perf_counter() - start)
    for i in range(count):
        await filesystem.umount(work / f"b{i}")
    return times


async def wait_node(twin: Twin, data_dir: Path, proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    key_file = data_dir / "node-key.json"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError("the node agent exited")
        if key_file.exists():
            node_twin = await twin.registry.twin_by_key(load_key_file(key_file).public_key)
            node = await twin.registry.node_by_twin(node_twin.id) if node_twin else None
            if node is not None:
                try:
                    await NodeClient(twin.bus, node_twin.id).version(timeout=1)
                    return node.id, node_twin.id
                except Exception:
                    pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the node agent did not come up")


async def main(count: int, twins: int, per_twin: int, work: Path) -> None:
    key = Identity.generate()
    nats = NatsServer(store_dir=work / "nats", registry_key=key.public_key).start()
    registry = await RegistryService(nats.url, key).start()
    farmer = await Twin(nats.url, key.public_key).connect()
    farm = await farmer.registry.create_farm("bench")
    token = await farmer.registry.farm_join_token(farm.id)
    data_dir = work / "node"
    log = open(work / "node.log", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "zos.cli", "node", "run", "--farm-id", str(farm.id)]
    argv += ["--nats", nats.url, "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ZOS_JOIN_TOKEN": token},
    )
    users: list[Twin] = []
    try:
        node_id, node_twin = await wait_node(farmer, data_dir, proc)
        rss_idle = rss_bytes(proc.pid)

        one = await Twin(nats.url, key.public_key).connect()
        users.append(one)
        latencies = []
        for _ in range(count):
            dep = await one.contract(node_id)
            latencies.append(await one.deploy_until_ok(node_twin, dep))

        users += [await Twin(nats.url, key.public_key).connect() for _ in range(twins)]

        async def run(twin: Twin) -> None:
            for _ in range(per_twin):
                await twin.deploy_until_ok(node_twin, await twin.contract(node_id))

        start = time.perf_counter()
        await asyncio.gather(*(run(t) for t in users[1:]))
        wall = time.perf_counter() - start
        rss = rss_bytes(proc.pid)

        base_dir = work / "baseline"
        base_dir.mkdir()
        base = await baseline(base_dir, count)
    finally:
        for u in users:
            await u.close()
        await farmer.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        await registry.stop()
        nats.stop()
        for m in reversed(filesystem.mounts_under(work)):
            subprocess.run(["umount", "-l", str(m.target)], check=False)
        for dev in loop.devices_under(work):
            subprocess.run(["losetup", "-d", dev], check=False)

    total = twins * per_twin
    ms = 1000.0
    print(f"node deploy benchmark: volume of {SIZE // MiB} MiB, {os.cpu_count()} cpus")
    print(f"{'':44} {'p50 ms':>9} {'p99 ms':>9}")
    print(
        f"{'node: deploy -> ok, one twin (n=' + str(count) + ')':44} "
        f"{pct(latencies, 0.5) * ms:9.1f} {pct(latencies, 0.99) * ms:9.1f}"
    )
    print(
        f"{'baseline: truncate+mkfs+mount (n=' + str(count) + ')':44} "
        f"{pct(base, 0.5) * ms:9.1f} {pct(base, 0.99) * ms:9.1f}"
    )
    print(
        f"node: {total} deployments from {twins} concurrent twins (contract + deploy + ok): "
        f"{total / wall:.1f} deployments/s ({wall:.2f} s)"
    )
    print(
        f"baseline: raw primitives, sequential: {count / sum(base):.1f} volumes/s; "
        f"mean {statistics.mean(base) * ms:.1f} ms"
    )
    print(
        f"node RSS: {rss_idle / MiB:.1f} MiB idle, "
        f"{rss / MiB:.1f} MiB after {count + total} deployments"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="sequential deployments (latency)")
    parser.add_argument("--twins", type=int, default=8, help="concurrent twins (throughput)")
    parser.add_argument("--per-twin", type=int, default=10, help="deployments per twin")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the node mounts loop devices")
    with tempfile.TemporaryDirectory(prefix="zos-bench-") as tmp:
        asyncio.run(main(args.count, args.twins, args.per_twin, Path(tmp)))
