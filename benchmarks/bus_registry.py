"""Bus and registry figures with authorization on, beside bare NATS in the same run.

    .venv/bin/python benchmarks/bus_registry.py [--requests 2000] [--nodes 1000]

Two nats-servers run side by side: a baseline whose one configured NKey user may do
anything (nats-server checks the key itself: no callout, no permissions), and a grid's
server (the registry's auth callout decides every connection, nats-server enforces each
role's permissions). Prints:

- connect time (p50, p99): the baseline user, a registered twin and an unregistered key
  through the callout, and a first connection's whole way in (connect, register the
  twin, reconnect with its role);
- request/response round trips one at a time (p50, p99) and with many in flight, for a
  small JSON payload: bare NATS request/reply on the baseline server, the same between a
  twin and a node under the grid's permissions, the bus signed (not sealed, a command
  the node allows unsealed) and the bus signed and sealed both ways;
- registering `--nodes` nodes, each from its own connection (twin, node, two
  reconnects), then the registry's transactions per second (name contracts from a few
  twins, many in flight, every answer signed), and node searches beside reading every
  node straight from the KV bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from figures import pct  # beside this script

from zos.bus import BusClient, Request, Router, StaticResolver, connect
from zos.bus.subjects import twin_subject
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import Capacity, RegistryClient, RegistryService

PAYLOAD = {"command": "deployment.get", "contract_id": 1234, "note": "x" * 200}


async def latency(
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]], n: int, rounds: int = 5
) -> dict[str, tuple[float, float]]:
    """p50 and p99 (ms) of each case, measured in interleaved rounds so that a change
    in the machine's load during the run falls on every case alike."""
    samples: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _, call in cases:  # warm up
        for _ in range(min(100, n)):
            await call()
    for _ in range(rounds):
        for name, call in cases:
            for _ in range(max(1, n // rounds)):
                t = time.perf_counter()
                await call()
                samples[name].append(time.perf_counter() - t)
    return {k: (pct(v, 0.5) * 1e3, pct(v, 0.99) * 1e3) for k, v in samples.items()}


async def throughput(call: Callable[[], Awaitable[Any]], n: int, in_flight: int) -> float:
    sem = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with sem:
            await call()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t)


def row(name: str, p50: float, p99: float, rate: float | None = None) -> None:
    rate_text = f"{rate:10.0f} req/s" if rate is not None else ""
    print(f"  {name:<52} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms  {rate_text}")


class Grid:
    """The grid's server with its registry, a farm, and members connected by role."""

    def __init__(self, server: NatsServer, key: Identity) -> None:
        self.server, self.key, self.url = server, key, server.url
        self.clients: list[RegistryClient] = []

    async def start(self) -> Grid:
        self.service = await RegistryService(self.url, self.key).start()
        self.farmer = await self.twin()
        self.farm = await self.farmer.create_farm("bench-farm")
        self.token = await self.farmer.farm_join_token(self.farm.id)
        return self

    async def twin(self, identity: Identity | None = None) -> RegistryClient:
        key = self.key.public_key
        client = RegistryClient(self.url, identity or Identity.generate(), registry_key=key)
        await client.connect()
        await client.ensure_twin()
        self.clients.append(client)
        return client

    async def node(self, capacity: Capacity | None = None) -> RegistryClient:
        client = await self.twin()
        await client.register_node(self.farm.id, self.token, capacity or Capacity(cru=1))
        return client

    async def stop(self) -> None:
        for c in self.clients:
            await c.close()
        await self.service.stop()


async def bench_connect(base: NatsServer, base_key: Identity, grid: Grid, n: int) -> None:
    print(f"connect: {n} connections each (open, then close)")
    twin_key = Identity.generate()
    await (await grid.twin(twin_key)).conn.settle()

    async def open_close(url: str, identity: Identity) -> None:
        conn = await connect(url, identity)
        await conn.close()

    async def first_time() -> None:
        client = RegistryClient(grid.url, Identity.generate(), registry_key=grid.key.public_key)
        await client.connect()
        await client.ensure_twin()  # registers, reconnects as a twin
        await client.close()

    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("nats-server's own NKey check (baseline)", lambda: open_close(base.url, base_key)),
        ("auth callout: a registered twin", lambda: open_close(grid.url, twin_key)),
        ("auth callout: an unregistered key", lambda: open_close(grid.url, Identity.generate())),
        ("a new key: connect, register, reconnect as twin", first_time),
    ]
    figures = await latency(cases, n)
    for name, _ in cases:
        row(name, *figures[name])


async def bench_bus(base: NatsServer, base_key: Identity, grid: Grid, n: int, in_flight: int):
    print(f"bus: {n} round trips one at a time, {n * 2} with {in_flight} in flight")
    raw = json.dumps(PAYLOAD).encode()

    async def echo_raw(msg: Any) -> None:
        await msg.respond(msg.data)

    base_server = await connect(base.url, base_key)
    base_client = await connect(base.url, base_key)
    await base_server.subscribe("bench.echo", echo_raw)
    await base_server.settle()

    # On the grid: a twin asks a node, the node answers (its role may respond).
    alice, bob = await grid.twin(), await grid.node()
    router = Router()

    async def echo(req: Request) -> Any:
        return req.payload

    router.add("echo", echo)
    keys = StaticResolver({alice.twin_id: alice.identity.public_key})
    keys.keys[bob.twin_id] = bob.identity.public_key
    server = BusClient(
        bob.conn, bob.identity, bob.twin_id, keys, unsealed_commands=frozenset({"echo"})
    )
    client = BusClient(alice.conn, alice.identity, alice.twin_id, keys)
    node = bob.twin_id
    subject = twin_subject(node)
    # First a raw echo on the node's subject (the node's key, a second connection).
    raw_node = await connect(grid.url, bob.identity)
    await raw_node.subscribe(subject, echo_raw)
    await raw_node.settle()

    async def bare_grid() -> Any:
        return await alice.conn.request(subject, raw, 5)

    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("bare NATS request/reply (baseline)", lambda: base_client.request("bench.echo", raw, 5)),
        ("bare NATS, twin to node under the grid's permissions", bare_grid),
    ]
    figures = await latency(cases, n)
    rates = {name: await throughput(call, n * 2, in_flight) for name, call in cases}
    await raw_node.close()
    await server.serve(router)
    await bob.conn.settle()
    bus_cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("bus, signed, not sealed", lambda: client.request(node, "echo", PAYLOAD, seal=False)),
        ("bus, signed and sealed", lambda: client.request(node, "echo", PAYLOAD, seal=True)),
    ]
    figures.update(await latency(bus_cases, n))
    for name, call in bus_cases:
        rates[name] = await throughput(call, n * 2, in_flight)
    for name, _ in cases + bus_cases:
        row(name, *figures[name], rates[name])
    await server.close()
    for c in (base_server, base_client):
        await c.close()


async def bench_registry(grid: Grid, nodes: int, n: int, in_flight: int) -> None:
    print(f"registry: {nodes} nodes registered, each from its own connection")
    t = time.perf_counter()

    async def add(i: int) -> None:
        client = RegistryClient(grid.url, Identity.generate(), registry_key=grid.key.public_key)
        await client.connect()
        await client.register_twin()
        cap = Capacity(cru=1 + i % 64, mru=(1 + i % 256) << 30, sru=(i % 2048) << 30)
        await client.register_node(grid.farm.id, grid.token, cap)
        await client.close()

    for start in range(0, nodes, 50):
        await asyncio.gather(*(add(i) for i in range(start, min(nodes, start + 50))))
    elapsed = time.perf_counter() - t
    print(
        f"  registered {nodes} twins + nodes in {elapsed:.1f}s ({nodes / elapsed:.0f} nodes/s: "
        "connect, register twin, reconnect, register node, reconnect)"
    )

    writers = [await grid.twin() for _ in range(4)]
    count = 0

    async def name_contract() -> None:
        nonlocal count
        count += 1
        await writers[count % len(writers)].create_name_contract(f"bench-{count}")

    rate = await throughput(name_contract, n * 5, in_flight)
    print(f"  transactions: {rate:.0f} tx/s (create_name_contract, {in_flight} in flight)")

    user = await grid.twin()
    node = await grid.node()
    kv = grid.service.store.kv["nodes"]

    keys = list(grid.service.nodes.items)  # (nats-py's kv.keys() found none at times)

    async def scan_kv() -> None:
        for key in keys:
            await kv.get(key)

    async def echo_raw(msg: Any) -> None:
        await msg.respond(b"")

    raw_node = await connect(grid.url, node.identity)
    await raw_node.subscribe(twin_subject(node.twin_id), echo_raw)
    await raw_node.settle()
    subject = twin_subject(node.twin_id)
    first = (await user.list_nodes(limit=1))[0].id
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("bare NATS request/reply under permissions (baseline)",
         lambda: user.conn.request(subject, b"", 5)),
        ("get_node (signed answer)", lambda: user.get_node(first + nodes // 2)),
        ("list_nodes(limit=100)", lambda: user.list_nodes(limit=100)),
        ("list_nodes(status=up, free_cru=60)", lambda: user.list_nodes(status="up", free_cru=60)),
        ("list_nodes(free_mru=200G, free_sru=1T)",
         lambda: user.list_nodes(free_mru=200 << 30, free_sru=1 << 40)),
        ("list_nodes(farm, limit=1000) (all nodes)",
         lambda: user.list_nodes(farm=grid.farm.id, limit=1000)),
    ]  # fmt: skip
    figures = await latency(cases, n)
    for name, _ in cases:
        row(name, *figures[name])
    scan = "read all nodes straight from KV (no mirror)"
    figures = await latency([(scan, scan_kv)], max(5, n // 20))
    row(scan, *figures[scan])
    await raw_node.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=200)
    args = parser.parse_args()
    base_key, grid_key = Identity.generate(), Identity.generate()
    with tempfile.TemporaryDirectory() as tmp:
        base = NatsServer(
            store_dir=Path(tmp) / "base", registry_key=base_key.public_key, callout=False
        ).start()
        server = NatsServer(store_dir=Path(tmp) / "grid", registry_key=grid_key.public_key)
        server.start()
        grid = None
        try:
            grid = await Grid(server, grid_key).start()
            version = grid.service.nc.connected_server_version
            print(f"nats-server {version}, Python {sys.version.split()[0]}")
            await bench_connect(base, base_key, grid, args.connects)
            await bench_bus(base, base_key, grid, args.requests, args.in_flight)
            await bench_registry(grid, args.nodes, args.searches, args.in_flight)
        finally:
            if grid is not None:
                await grid.stop()
            server.stop()
            base.stop()


if __name__ == "__main__":
    asyncio.run(main())
