"""Bus and registry figures against a local nats-server, beside bare NATS in the same run.

    .venv/bin/python benchmarks/bus_registry.py [--requests 2000] [--nodes 1000]

Prints, for a small JSON payload: request/response round trips one at a time (p50, p99)
and throughput with many requests in flight, for a bare NATS request/reply (the
baseline: no envelope, no signature), the bus without sealing (signed envelopes) and
the bus with sealing (signed and sealed both ways). Then registers `--nodes` nodes with
the registry service and times node searches, beside reading every node straight from
the KV bucket (what a search would cost without the service's in-memory mirror).
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

import nats

from zos.bus import BusClient, Request, Router, StaticResolver
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import Capacity, RegistryClient, RegistryService

PAYLOAD = {"command": "deployment.get", "contract_id": 1234, "note": "x" * 200}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    print(f"  {name:<44} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms  {rate_text}")


async def bench_bus(url: str, n: int, in_flight: int) -> None:
    print(f"bus: {n} round trips one at a time, {n * 2} with {in_flight} in flight")
    nc_server = await nats.connect(url)
    nc_client = await nats.connect(url)

    async def echo_raw(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc_server.subscribe("bench.echo", cb=echo_raw)
    await nc_server.flush()
    data = Router()

    async def echo(req: Request) -> Any:
        return req.payload

    data.add("echo", echo)
    alice, bob = Identity.generate(), Identity.generate()
    keys = StaticResolver({1: alice.public_key, 2: bob.public_key})
    server = BusClient(nc_server, bob, 2, keys)
    await server.serve(data)
    client = BusClient(nc_client, alice, 1, keys)
    raw = json.dumps(PAYLOAD).encode()

    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("bare NATS request/reply (baseline)", lambda: nc_client.request("bench.echo", raw, 5)),
        ("bus, signed, not sealed", lambda: client.request(2, "echo", PAYLOAD, seal=False)),
        ("bus, signed and sealed", lambda: client.request(2, "echo", PAYLOAD, seal=True)),
    ]
    figures = await latency(cases, n)
    for name, call in cases:
        rate = await throughput(call, n * 2, in_flight)
        row(name, *figures[name], rate)
    await server.close()
    await nc_server.close()
    await nc_client.close()


async def bench_registry(url: str, nodes: int, n: int) -> None:
    print(f"registry: {nodes} nodes registered, {n} searches each")
    async with RegistryService(url) as service:
        nc = await nats.connect(url)
        farmer = RegistryClient(nc, Identity.generate())
        await farmer.register_twin()
        farm = await farmer.create_farm("bench-farm")
        token = await farmer.farm_join_token(farm.id)
        t = time.perf_counter()

        async def add(i: int) -> None:
            node = RegistryClient(nc, Identity.generate())
            await node.register_twin()
            cap = Capacity(cru=1 + i % 64, mru=(1 + i % 256) << 30, sru=(i % 2048) << 30)
            await node.register_node(farm.id, token, cap)

        for start in range(0, nodes, 50):
            await asyncio.gather(*(add(i) for i in range(start, min(nodes, start + 50))))
        elapsed = time.perf_counter() - t
        print(
            f"  registered {nodes} twins + nodes in {elapsed:.1f}s "
            f"({2 * nodes / elapsed:.0f} transactions/s)"
        )
        user = RegistryClient(nc)
        kv = service.store.kv["nodes"]

        async def scan_kv() -> None:
            for key in await kv.keys():
                await kv.get(key)

        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("bare NATS request/reply (baseline)", lambda: nc.request("bench.none", b"", 5)),
            ("get_node", lambda: user.get_node(nodes // 2)),
            ("list_nodes(limit=100)", lambda: user.list_nodes(limit=100)),
            (
                "list_nodes(status=up, free_cru=60)",
                lambda: user.list_nodes(status="up", free_cru=60),
            ),
            (
                "list_nodes(free_mru=200G, free_sru=1T)",
                lambda: user.list_nodes(free_mru=200 << 30, free_sru=1 << 40),
            ),
            (
                "list_nodes(farm, limit=1000) (all nodes)",
                lambda: user.list_nodes(farm=farm.id, limit=1000),
            ),
        ]

        async def empty(msg: Any) -> None:
            await msg.respond(b"")

        echo = await nc.subscribe("bench.none", cb=empty)
        figures = await latency(cases, n)
        for name, _ in cases:
            row(name, *figures[name])
        scan = "read all nodes straight from KV (no mirror)"
        figures = await latency([(scan, scan_kv)], max(5, n // 20))
        row(scan, *figures[scan])
        await echo.unsubscribe()
        await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats").start()
        try:
            version = await _server_version(server.url)
            print(f"nats-server {version} on {server.url}, Python {sys.version.split()[0]}")
            await bench_bus(server.url, args.requests, args.in_flight)
            await bench_registry(server.url, args.nodes, args.searches)
        finally:
            server.stop()


async def _server_version(url: str) -> str:
    nc = await nats.connect(url)
    try:
        return str(nc.connected_server_version)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
