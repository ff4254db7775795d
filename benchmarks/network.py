"""Network benchmark: what a private network's WireGuard tunnel costs.

In one run, between two network namespaces:

- baseline: a bare veth pair;
- underlay: the two nodes' public sides over the bridge between them (the path the
  tunnel's UDP packets take);
- tunnel: each node's network namespace (`n-<netid>`) over `w-<netid>`, built by
  `zos.primitives.wireguard` (wireguard-go here, the kernel's where it has WireGuard),
  its UDP socket on the node's public side;
- machines: on a local grid of 3 nodes (`zos.grid.local.up`), two machines of one
  network on nodes 1 and 2, from one machine's namespace to the other's address, over
  the nodes' bridges, network namespaces and tunnel;

TCP throughput (iperf3, one stream) and ping round trips (busybox ping, adaptive) for
each, the time `WireGuard.ensure` takes to build a node's interface, and the time from
deploying a manifest with a machine on each of the 3 nodes (`GridClient.deploy_across`,
what `zos deploy` runs; its flist pushed before) until a machine on node 1 has an
answer from the machines on the other two.

Run as root: `.venv/bin/python benchmarks/network.py [--seconds 5] [--pings 200]`
(`--no-grid`: the namespaces' rows only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from zos.primitives import links, netns
from zos.primitives.wireguard import Config, Peer, WireGuard, public_key, tunnel_address

TAG = f"zbn{os.getpid() % 100000}"
NETID = f"b{os.getpid() % 100000}"
IP_RANGE = IPv4Network("10.30.0.0/16")
IPERF_PORT = 5201


def ns_run(ns: str, *argv: str) -> str:
    """Run a program in namespace `ns`; its output."""
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} in {ns}: {done.stderr.strip()}")
    return done.stdout


def throughput(server_ns: str, client_ns: str, host: str, seconds: int) -> tuple[float, int]:
    """Gbit/s of one iperf3 TCP stream from `client_ns` to `host` in `server_ns`, and
    the segments it sent again."""
    serve = ["iperf3", "-s", "-1", "--forceflush", "-B", host, "-p", str(IPERF_PORT)]
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, *serve],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "listening" in line:
                break
        out = ns_run(
            client_ns, "iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"
        )
        end = json.loads(out)["end"]
        return end["sum_received"]["bits_per_second"] / 1e9, end["sum_sent"]["retransmits"]
    finally:
        server.wait(30)


def round_trips(ns: str, host: str, count: int) -> list[float]:
    """Milliseconds of `count` pings, each sent as soon as the last answer came."""
    out = ns_run(ns, "busybox", "ping", "-A", "-c", str(count), host)
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", out)]


def measure(name: str, server_ns: str, client_ns: str, host: str, args: argparse.Namespace) -> None:
    ns_run(client_ns, "busybox", "ping", "-c", "1", "-W", "5", host)  # handshake, ARP
    rtt = sorted(round_trips(client_ns, host, args.pings))
    gbits, resent = throughput(server_ns, client_ns, host, args.seconds)
    p50 = statistics.median(rtt)
    p99 = rtt[min(len(rtt) - 1, int(len(rtt) * 0.99))]
    print(f"{name:<10} {gbits:>8.2f} {resent:>8} {p50:>8.3f} {p99:>8.3f} {len(rtt):>6}")


def pair(a: str, b: str, a_ip: str, b_ip: str) -> None:
    """Namespaces `a` and `b` joined by a bare veth pair."""
    for ns in (a, b):
        netns.create(ns)
        links.set_up("lo", ns)
    links.ensure_veth("v0", "v0", a, b)
    for ns, ip in ((a, a_ip), (b, b_ip)):
        links.set_addresses("v0", [IPv4Interface(f"{ip}/24")], ns)
        links.set_up("v0", ns)


def lan_host(lan: str, ns: str, port: str, ip: str) -> None:
    """Namespace `ns` on the bridge in `lan` (through its `port`), at `ip`."""
    netns.create(ns)
    links.set_up("lo", ns)
    links.ensure_veth("lan0", port, ns, lan)
    links.set_master(port, "br0", lan)
    links.set_up(port, lan)
    links.set_addresses("lan0", [IPv4Interface(f"{ip}/24")], ns)
    links.set_up("lan0", ns)


async def tunnel(state: Path) -> tuple[list[tuple[WireGuard, str]], list[float]]:
    """Two nodes with the same network, peered; returns them and each build's seconds."""
    lan = f"{TAG}-lan"
    netns.create(lan)
    links.ensure_bridge("br0", lan)
    nodes = []
    for i in (0, 1):
        pub = f"{TAG}-pub{i}"
        lan_host(lan, pub, f"p{i}", f"10.251.1.{2 + i}")
        key = base64.b64encode(os.urandom(32)).decode()
        nodes.append((pub, key, IPv4Network(f"10.30.{2 + i}.0/24"), f"10.251.1.{2 + i}:51820"))
    made, took = [], []
    for i, (pub, key, subnet, _) in enumerate(nodes):
        _, okey, osubnet, oend = nodes[1 - i]
        other = Peer(public_key(okey), [str(osubnet), f"{tunnel_address(osubnet).ip}/32"], oend)
        wg = WireGuard(state / str(i), pub, f"{TAG}{i}-")
        ns = f"{TAG}{i}-n-{NETID}"
        start = time.monotonic()
        await wg.ensure(NETID, ns, Config(key, 51820, tunnel_address(subnet), [IP_RANGE], [other]))
        took.append(time.monotonic() - start)
        made.append((wg, ns))
    return made, took


MESH = """\
name: bench
network: {{name: benchnet, ip_range: 10.40.0.0/16}}
machines:
"""
MACHINE = """\
  - {{name: m{i}, flist: "{flist}", memory: 256M, node: {node},
     entrypoint: /bin/busybox sleep 100000}}
"""


def answers(ns: str, ip: str) -> bool:
    got = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", ip],
        capture_output=True,
    )
    return got.returncode == 0


async def machines_on_grid(work: Path, args: argparse.Namespace) -> None:
    """The grid's rows: deploy to first packet over 3 nodes, then node 1 <-> node 2."""
    from zmachine import busybox_rootfs

    from zos.client import GridClient
    from zos.grid.local import down, up
    from zos.identity import Identity

    state_dir = work / "grid"
    try:
        state, _ = await asyncio.to_thread(up, state_dir, 3, None, lambda _: None, gateways=0)
        async with await GridClient.connect(
            state_dir=state_dir, identity=Identity.generate()
        ) as grid:
            flist = await grid.push_image(busybox_rootfs(work / "rootfs"), "bench.fl")
            text = MESH.format() + "".join(
                MACHINE.format(i=i, flist=flist, node=n.node_id) for i, n in enumerate(state.nodes)
            )
            start = time.monotonic()
            done = await grid.deploy_across(text)
            deployed = time.monotonic() - start
            prefix = {n.node_id: n.netns_prefix for n in state.nodes}
            machines = [
                (f"{prefix[d.node_id]}c-{grid.twin_id}-{d.contract_id}-{x.name}", x.ip)
                for d in done.deployments
                for x in d.machines
            ]
            first, others = machines[0], machines[1:]
            waiting = set(others)
            while waiting:
                waiting = {m for m in waiting if not answers(first[0], m[1])}
            packet = time.monotonic() - start
            print(
                f"deploy of 3 nodes: deploy_across returned after {deployed:.2f}s, "
                f"first answers from both other nodes after {packet:.2f}s"
            )
            measure("machines", others[0][0], first[0], others[0][1], args)
    finally:
        await asyncio.to_thread(down, state_dir, lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 run per path")
    parser.add_argument("--pings", type=int, default=200, help="pings per path")
    parser.add_argument("--no-grid", action="store_true", help="skip the local grid's rows")
    args = parser.parse_args()
    made: list[tuple[WireGuard, str]] = []
    with tempfile.TemporaryDirectory(prefix="zos-bench-net-") as tmp:
        try:
            pair(f"{TAG}-x", f"{TAG}-y", "10.251.0.1", "10.251.0.2")
            made, took = asyncio.run(tunnel(Path(tmp)))
            backend = asyncio.run(made[0][0].status(NETID))
            print(f"backend: {backend.backend if backend else '?'}")
            print(f"ensure (build a node's interface): {', '.join(f'{t:.2f}s' for t in took)}")
            head = ("Gbit/s", "resent", "p50 ms", "p99 ms")
            print(f"{'path':<10} {' '.join(f'{h:>8}' for h in head)} {'pings':>6}")
            measure("veth", f"{TAG}-y", f"{TAG}-x", "10.251.0.2", args)
            measure("underlay", f"{TAG}-pub1", f"{TAG}-pub0", "10.251.1.3", args)
            measure("tunnel", made[1][1], made[0][1], str(tunnel_address("10.30.3.0/24").ip), args)
            if not args.no_grid:
                asyncio.run(machines_on_grid(Path(tmp), args))
        finally:

            async def remove() -> None:
                for wg, _ in made:
                    await wg.remove(NETID)

            asyncio.run(remove())
            for ns in netns.names(TAG):
                netns.delete(ns)


if __name__ == "__main__":
    main()
