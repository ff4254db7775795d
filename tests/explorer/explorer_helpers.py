"""Helpers of the explorer tests: registry models for snapshots, many nodes seeded into
a registry's store, and the real `zos explorer serve` in a subprocess."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable

from zos.bus.connection import connect
from zos.identity import Identity
from zos.registry import Capacity, Farm, Location, Node, PublicConfig, Twin
from zos.registry.signing import RegistrySigner
from zos.registry.store import Store

GiB = 1 << 30
URL_LINE = re.compile(r"explorer \((?P<who>[^)]*)\) at (?P<url>http://\S+)")


def farm(farm_id: int, name: str) -> Farm:
    return Farm(id=farm_id, name=name, owner_twin=1, created=1000.0)


def node(
    node_id: int,
    farm_id: int = 1,
    *,
    status: str = "up",
    mru: int = 8 * GiB,
    used_mru: int = 0,
    sru: int = 100 * GiB,
    used_sru: int = 0,
    cru: int = 4,
    domain: str = "",
    city: str = "",
    heartbeat: float = 2000.0,
) -> Node:
    return Node(
        id=node_id,
        farm_id=farm_id,
        twin_id=100 + node_id,
        capacity=Capacity(cru=cru, mru=mru, sru=sru),
        used=Capacity(mru=used_mru, sru=used_sru),
        location=Location(city=city, country="BE"),
        public_config=PublicConfig(domain=domain),
        created=1000.0,
        last_heartbeat=heartbeat,
        status=status,  # type: ignore[arg-type]
    )


async def seed_nodes(url: str, registry: Identity, farm_id: int, count: int) -> range:
    """`count` new twins, each a node of `farm_id`, written into the registry's state as
    its service writes them once it has accepted their `register_twin` and
    `register_node`: through the service's own `Store`, on the registry key's connection,
    every value signed by that key; ids taken from its counters (one block for all), each
    index before the record it points to. Left out: the audit entries of those
    transactions (nothing reads them back). The ids of the nodes."""
    conn = await connect(url, registry, name="zos-registry-seed")
    try:
        store = Store(conn.nc.jetstream(timeout=10.0), RegistrySigner(registry))
        await store.setup()  # the service's buckets, already there: opened as they are
        first_twin = await store.next_id("twin", count)
        first_node = await store.next_id("node", count)
        gate = asyncio.Semaphore(64)  # enough writes in flight to keep JetStream busy

        async def write(op: Awaitable[int | None]) -> None:
            async with gate:
                assert await op is not None, "the seed wrote over a key the registry had"

        async def one(i: int) -> None:
            now = time.time()
            twin = Twin(id=first_twin + i, public_key=Identity.generate().public_hex, created=now)
            await write(store.create("twin-keys", twin.public_key, twin.id))
            await write(store.create("twins", twin.id, twin))
            node = Node(
                id=first_node + i,
                farm_id=farm_id,
                twin_id=twin.id,
                capacity=Capacity(cru=1 + i % 32, mru=(1 + i % 64) * GiB, sru=(10 + i) * GiB),
                location=Location(country="BE", city=f"city-{i % 97}"),
                created=now,
                last_heartbeat=now,
            )
            await write(store.create("node-twins", twin.id, node.id))
            await write(store.create("nodes", node.id, node))

        await asyncio.gather(*(one(i) for i in range(count)))
        return range(first_node, first_node + count)
    finally:
        await conn.close()


class ExplorerProcess:
    """`zos explorer serve ...` in a subprocess; `url` is the address it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, wait: float = 60) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zos.cli",
                "explorer",
                "serve",
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        seen = []
        deadline = time.monotonic() + wait  # it prints its address after a first read
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = URL_LINE.search(line)
            if m:
                self.who, self.url = m["who"], m["url"]
                self.base = self.url.split("/session")[0]
                return
        self.stop()
        raise RuntimeError("zos explorer serve did not start:\n" + "".join(seen))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
