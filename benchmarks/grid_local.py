"""Local grid benchmark: what a newcomer waits for, and what the host port costs.

Starts a local grid (`zos.grid.local.up`, N nodes) in a temporary state dir, then:

- `up` from nothing, a second `up` (finds the running grid), `down`;
- deploy-to-reachable: `GridClient.deploy` of a busybox httpd (image packed and pushed
  on the first run, `replacing` on the next ones) until its page answers from the host;
- HTTP GET latency (p50, p99) through the grid's port forwarder at 127.0.0.1, beside
  the baseline of the same GET from a socket made inside the machine's own namespace
  (no forwarder).

Run as root: `.venv/bin/python benchmarks/grid_local.py [--nodes 2] [--deploys 3] [--gets 200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from figures import pct  # beside this script

from zos.client import GridClient
from zos.grid.local import down, up
from zos.identity import Identity
from zos.primitives import netns

ROOT = Path(__file__).resolve().parents[1]
GET = b"GET / HTTP/1.0\r\n\r\n"


def http_get(make: Callable[[], socket.socket], addr: tuple[str, int]) -> float:
    started = time.perf_counter()
    with make() as s:
        s.settimeout(5)
        s.connect(addr)
        s.sendall(GET)
        while s.recv(65536):
            pass
    return time.perf_counter() - started


async def deploys(state_dir: Path, app: Path, count: int, gets: int) -> None:
    grid = await GridClient.connect(state_dir=state_dir, identity=Identity.generate())
    try:
        for i in range(count):
            started = time.perf_counter()
            info = await grid.deploy(app)
            url = info.machines[0].urls[0]
            host, port = url.removeprefix("http://").split(":")
            await asyncio.to_thread(http_get, socket.socket, (host, int(port)))
            took = time.perf_counter() - started
            print(f"deploy {i + 1} to reachable: {took:.2f}s (node {info.node_id})")
        local = grid.local
        assert local is not None
        entry = next(n for n in local.nodes if n.node_id == info.node_id)
        ns = f"{entry.netns_prefix}c-{grid.twin_id}-{info.contract_id}-web"
        ip = info.machines[0].ip
        via = [http_get(socket.socket, (host, int(port))) for _ in range(gets)]
        direct = [
            http_get(lambda: netns.run_in(ns, socket.socket), (ip, 8080)) for _ in range(gets)
        ]
        print(
            f"GET via forwarder 127.0.0.1: p50 {pct(via, 0.5) * 1000:.2f} ms, "
            f"p99 {pct(via, 0.99) * 1000:.2f} ms"
        )
        print(
            f"GET inside the machine's netns (baseline): p50 {pct(direct, 0.5) * 1000:.2f} ms, "
            f"p99 {pct(direct, 0.99) * 1000:.2f} ms"
        )
        await grid.rm(info.name)
    finally:
        await grid.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--deploys", type=int, default=3)
    p.add_argument("--gets", type=int, default=200)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zos-bench-grid-"))
    state_dir = work / "grid"
    rootfs = ROOT / "examples" / "hello" / "rootfs"
    if not (rootfs / "bin" / "busybox").exists():
        (rootfs / "bin").mkdir(exist_ok=True)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    try:
        t = time.perf_counter()
        up(state_dir, nodes=args.nodes, say=lambda _: None)
        print(f"grid up ({args.nodes} nodes) from nothing: {time.perf_counter() - t:.2f}s")
        t = time.perf_counter()
        up(state_dir, nodes=args.nodes, say=lambda _: None)
        print(f"second up (finds it): {time.perf_counter() - t:.3f}s")
        asyncio.run(
            deploys(state_dir, ROOT / "examples" / "hello" / "app.yaml", args.deploys, args.gets)
        )
    finally:
        t = time.perf_counter()
        down(state_dir, say=lambda _: None)
        print(f"grid down: {time.perf_counter() - t:.2f}s")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
