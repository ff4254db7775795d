"""A twin's network across the nodes of a local grid (`zos.grid.local.up`, three nodes,
the last one hidden behind its own NAT), planned as ThreeFold's clients plan it
(`zos.client.networks.plan_network`, from the nodes' own `zos.network.*` answers) and
built by the nodes' agents: machines on all three nodes ping each other and exchange
bytes over TCP through the tunnels, the hidden node's through the access node; adding a
node is an update that keeps an open connection alive; a port another network holds is
refused naming it; another twin's machines on the same nodes reach none of them, nor
does a WireGuard peer the network does not list; after kill -9 of an agent (the tunnels
carry on without it) and after a reboot-like restart (its namespaces, containers and
wireguard-go gone), the mesh works again with no manual step.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_interface
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import can_connect, free_udp_port, listen_in, machine
from nodehelpers import User, owned_deployment

from zos.bus import BusClient
from zos.client.networks import (
    AccessRequest,
    NetworkPlan,
    NetworkRequest,
    NodeInfo,
    plan_network,
    wg_quick,
)
from zos.client.networks.endpoints import is_public
from zos.flist import HubSigner, Router, pack
from zos.grid import local, procs
from zos.grid.state import GridState, NodeEntry
from zos.gridtypes.names import network_id
from zos.hub.client import publish_flist
from zos.identity import Identity
from zos.node.networks import machine_namespace, network_namespace
from zos.node.runtimes.runc import RuncRuntime
from zos.node.services import NodeServices
from zos.primitives import filesystem, links, netns, wireguard
from zos.primitives.nat import NS_UPLINK
from zos.registry import RegistryClient

for _helpers in ("grid", "primitives"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / _helpers))
from gridhelpers import GRID_MARKS, emergency_sweep, quiet  # noqa: E402
from netlab import ping  # noqa: E402

pytestmark = [*GRID_MARKS, pytest.mark.timeout(900)]

NAME = "net"  # the network's name (netzm_helpers.machine attaches to "net")
IP_RANGE = "10.77.0.0/16"


@dataclass
class GridNode:
    """A node of the grid as `User` needs it (its ids, its log)."""

    entry: NodeEntry
    log_file: Path

    @property
    def node_id(self) -> int:
        return self.entry.node_id

    @property
    def twin_id(self) -> int:
        return self.entry.twin_id

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@pytest.fixture(scope="module")
def grid() -> Iterator[GridState]:
    state_dir = Path(tempfile.mkdtemp(prefix="zos-mesh-")) / "grid"
    try:
        state, _ = local.up(state_dir, nodes=3, hidden=1, gateways=0, say=quiet, timeout=180)
        yield state
    finally:
        with contextlib.suppress(Exception):
            local.down(state_dir, say=quiet)
        emergency_sweep(state_dir)


def nodes_of(grid: GridState) -> list[GridNode]:
    logs = Path(grid.state_dir) / "logs"
    return [GridNode(n, logs / f"node{n.index}.log") for n in grid.nodes]


async def tenant(grid: GridState) -> User:
    identity = Identity.generate()
    registry = RegistryClient(
        grid.nats_url, identity, registry_key=bytes.fromhex(grid.registry_key)
    )
    await registry.connect()
    twin = await registry.register_twin()
    resolver = await registry.key_resolver()
    bus = await BusClient(registry.conn, identity, twin.id, resolver).connect()
    return User(identity, twin.id, registry, bus)


async def close(*users: User) -> None:
    for u in users:
        await u.bus.close()
        await u.registry.close()


async def push_busybox(grid: GridState, user: User, rootfs: Path, tmp: Path) -> str:
    """The busybox rootfs as an flist on the grid's hub (the nodes' one store)."""
    tmp.mkdir(parents=True, exist_ok=True)
    signer = HubSigner(user.identity, user.twin_id)
    router = Router.parse([grid.hub_url], signer)
    try:
        await pack(rootfs, tmp / "busybox.fl", router)
        await publish_flist(grid.hub_url, signer, tmp / "busybox.fl", "busybox.fl")
    finally:
        await router.close()
    return f"{grid.hub_url}/flists/{user.twin_id}/busybox.fl"


def grid_public(grid: GridState):  # type: ignore[no-untyped-def]
    """The local grid's bridge counts as public (what its client passes the planner)."""
    bridge = ip_interface(grid.host_address).network

    def public(ip: IPv4Address | IPv6Address) -> bool:
        return ip in bridge or is_public(ip)

    return public


async def node_info(user: User, node: GridNode) -> NodeInfo:
    client = user.node(node)  # type: ignore[arg-type]
    config = await client.public_config()
    return NodeInfo(
        node.node_id,
        config.model_dump() if config else None,
        (await client.interfaces()).model_dump(),
        await client.list_wg_ports(),
    )


async def plan(
    grid: GridState, user: User, nodes: list[GridNode], ip_range: str, current: Any = None
) -> NetworkPlan:
    infos = [await node_info(user, n) for n in nodes]
    request = NetworkRequest(name=NAME, ip_range=ip_range, nodes=infos)
    return plan_network(
        request, current, owner_public_key=user.identity.public_key, public=grid_public(grid)
    )


@dataclass
class Placed:
    node: GridNode
    contract_id: int
    ip: str  # the machine's address
    version: int = 0

    def namespace(self, twin: int) -> str:
        wid = f"{twin}-{self.contract_id}-vm"
        return machine_namespace(self.node.entry.netns_prefix, wid)


def machine_ip(subnet: str) -> str:
    return str(IPv4Network(subnet)[5])


async def apply(
    user: User, the_plan: NetworkPlan, nodes: dict[int, GridNode], flist: str,
    placed: dict[int, Placed],
) -> None:  # fmt: skip
    """Each changed node's deployment: its network workload and a machine on it."""
    for nn in the_plan.changed:
        node = nodes[nn.node_id]
        ip = machine_ip(nn.subnet)
        net = {k: v for k, v in nn.workload(NAME).to_dict().items() if k != "result"}
        vm = {**machine("vm", flist, ip), "version": 0}
        if nn.node_id not in placed:
            dep = user.deployment([{**net, "version": 0}, vm])
            await user.deploy(node, dep)  # type: ignore[arg-type]
            placed[nn.node_id] = Placed(node, dep.contract_id, ip)
        else:
            p = placed[nn.node_id]
            p.version += 1  # the network changed, the machine did not
            dep = owned_deployment(user.twin_id, [{**net, "version": p.version}, vm], p.version)
            dep.contract_id = p.contract_id
            await user.update(node, dep)  # type: ignore[arg-type]
    for nn in the_plan.changed:
        p = placed[nn.node_id]
        await user.wait_states(p.node, p.contract_id, {NAME: "ok", "vm": "ok"})  # type: ignore[arg-type]


async def deployed(
    grid: GridState, owner: User, nodes: list[GridNode], rootfs: Path, tmp: Path
) -> tuple[NetworkPlan, dict[int, Placed]]:
    """The owner's network over `nodes`, a machine on each; the plan and the machines."""
    flist = await push_busybox(grid, owner, rootfs, tmp)
    placed: dict[int, Placed] = {}
    the_plan = await plan(grid, owner, nodes, IP_RANGE)
    await apply(owner, the_plan, {n.node_id: n for n in nodes}, flist, placed)
    return the_plan, placed


async def reaches(ns: str, ip: str, guard: float = 30.0) -> bool:
    """Ping until it answers (the first packets wait for a handshake; after a restart,
    for the node to build the machine and its network again); False past `guard`."""
    deadline = time.monotonic() + guard
    while not await ping(ns, ip, wait=2):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def diagnose(grid: GridState) -> str:
    """What the tunnels look like (for a failed assertion's message)."""
    out = [subprocess.run(["wg", "show", "all"], capture_output=True, text=True).stdout]
    for n in grid.nodes:
        for ns in netns.names(prefix=f"{n.netns_prefix}n-"):
            for argv in (["ip", "addr"], ["ip", "route"], ["nft", "list", "ruleset"]):
                run = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True)
                out.append(f"--- {ns}: {' '.join(argv)}\n{run.stdout.decode()}")
    return "\n".join(out)


async def never_reaches(ns: str, ip: str) -> bool:
    return not await ping(ns, ip, wait=2)


async def tcp_exchange(src_ns: str, dst_ns: str, dst_ip: str, port: int = 7000) -> bytes:
    """A listener in `dst_ns`, a client in `src_ns`: what came back (echoed)."""
    server = listen_in(dst_ns, port)
    loop = asyncio.get_running_loop()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(1024).upper())

    served = loop.run_in_executor(None, serve)
    try:

        def client() -> bytes:
            import socket

            s = socket.create_connection((dst_ip, port), timeout=10)
            with s:
                s.sendall(b"over the tunnel")
                return s.recv(1024)

        answer = await asyncio.to_thread(netns.run_in, src_ns, client)
        await served
        return answer
    finally:
        server.close()


async def mesh_works(twin: int, placed: dict[int, Placed], guard: float = 30.0) -> None:
    """Every machine pings every other one, and one TCP exchange each way."""
    ps = list(placed.values())
    for a in ps:
        for b in ps:
            if a is not b:
                assert await reaches(a.namespace(twin), b.ip, guard), (a.node.entry.index, b.ip)
    first, last = ps[0], ps[-1]
    assert await tcp_exchange(first.namespace(twin), last.namespace(twin), last.ip) == (
        b"OVER THE TUNNEL"
    )
    assert await tcp_exchange(last.namespace(twin), first.namespace(twin), first.ip) == (
        b"OVER THE TUNNEL"
    )


def node_wireguard(entry: NodeEntry) -> wireguard.WireGuard:
    """The node's WireGuard interfaces, read from outside (their UAPI sockets)."""
    return wireguard.WireGuard(
        Path(entry.data_dir) / "networks" / "wireguard", prefix=entry.netns_prefix
    )


def wg_go_pids(entry: NodeEntry) -> list[int]:
    pids = []
    for f in (Path(entry.data_dir) / "networks" / "wireguard").glob("*.pid"):
        raw = json.loads(f.read_text())
        if procs.start_time(raw["pid"]) == raw["start_time"]:
            pids.append(raw["pid"])
    return pids


def kill_agent(grid: GridState, entry: NodeEntry) -> None:
    agent = next(p for p in grid.procs if p.name == f"node{entry.index}")
    os.kill(agent.pid, signal.SIGKILL)
    while procs.alive(agent):  # reaped by its parent (this process) or by init
        with contextlib.suppress(ChildProcessError):
            os.waitpid(agent.pid, os.WNOHANG)
        time.sleep(0.01)


def reboot(grid: GridState, entry: NodeEntry) -> None:
    """What a reboot does to a node: its agent, containers, wireguard-go and namespaces
    gone, its mounts undone; its data directory stays."""
    kill_agent(grid, entry)
    for pid in wg_go_pids(entry):
        os.kill(pid, signal.SIGKILL)
    root = RuncRuntime(NodeServices(data_dir=Path(entry.data_dir))).runc.root
    for c in list(root.iterdir()) if root.is_dir() else []:
        subprocess.run(["runc", "--root", str(root), "delete", "--force", c.name], check=True)
    for m in reversed(filesystem.mounts_under(Path(entry.data_dir))):
        subprocess.run(["umount", "-l", str(m.target)], check=False)
    for name in netns.names(prefix=entry.netns_prefix):
        netns.delete(name)


def restart(grid: GridState) -> None:
    """`zos grid up` again: it starts what stopped, with the same state."""
    local.up(Path(grid.state_dir), nodes=3, hidden=1, gateways=0, say=quiet, timeout=180)


async def test_mesh_across_three_nodes_one_hidden(
    grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    nodes = nodes_of(grid)
    by_id = {n.node_id: n for n in nodes}
    hidden = nodes[2]
    assert hidden.entry.hidden and not nodes[0].entry.hidden
    owner, stranger = await tenant(grid), await tenant(grid)
    try:
        flist = await push_busybox(grid, owner, busybox_rootfs, tmp_path)
        info = await node_info(owner, hidden)
        assert info.public_config is None and not grid_public(grid)(
            ip_interface(info.interfaces["zos"][0]).ip
        ), info  # the hidden node reports only its LAN address
        assert (await node_info(owner, nodes[0])).interfaces["zos"] == [
            nodes[0].entry.address.split("/")[0]
        ]

        # Two public nodes first, with an open TCP connection between their machines.
        placed: dict[int, Placed] = {}
        first = await plan(grid, owner, nodes[:2], IP_RANGE)
        await apply(owner, first, by_id, flist, placed)
        a, b = placed[nodes[0].node_id], placed[nodes[1].node_id]
        assert await reaches(a.namespace(owner.twin_id), b.ip), diagnose(grid)
        server = listen_in(b.namespace(owner.twin_id), 7100)
        conn = await asyncio.to_thread(
            netns.run_in,
            a.namespace(owner.twin_id),
            lambda: __import__("socket").create_connection((b.ip, 7100), timeout=10),
        )
        peer, _ = await asyncio.to_thread(server.accept)
        conn.sendall(b"before")
        assert peer.recv(16) == b"before"
        seen = await owner.node(nodes[0]).wg_peers(NAME)  # type: ignore[arg-type]
        b_key = first.node(nodes[1].node_id).public_key
        assert seen[b_key] > 0

        # The hidden node joins: an update of both (peers added in place) and a new one.
        second = await plan(grid, owner, nodes, IP_RANGE, current=first)
        assert second.access_node in (nodes[0].node_id, nodes[1].node_id)
        assert second.node(hidden.node_id).hidden
        await apply(owner, second, by_id, flist, placed)
        conn.sendall(b"after")  # the connection made before the update still carries
        assert peer.recv(16) == b"after"
        again = await owner.node(nodes[0]).wg_peers(NAME)  # type: ignore[arg-type]
        assert again[b_key] >= seen[b_key]  # the session was kept, not made again from 0
        conn.close(), peer.close(), server.close()
        await mesh_works(owner.twin_id, placed)
        # The hidden node's peers: its access node only, dialled with keepalives.
        status = await hidden_status(grid, hidden, owner, second)
        assert [p.keepalive for p in status.peers] == [25]

        # A port another network of the node holds: refused naming it, nothing changes.
        taken = second.node(nodes[0].node_id).listen_port
        clash = owner.deployment(
            [
                {
                    "name": "other",
                    "type": "network",
                    "data": {
                        **second.node(nodes[0].node_id).data.to_dict(),
                        "subnet": "10.79.2.0/24",
                        "ip_range": "10.79.0.0/16",
                        "wireguard_listen_port": taken,
                        "peers": [],
                    },
                }
            ]
        )
        await owner.deploy(nodes[0], clash)  # type: ignore[arg-type]
        got = await owner.wait_states(nodes[0], clash.contract_id, {"other": "error"})  # type: ignore[arg-type]
        message = got["workloads"][0]["result"]["message"]
        assert f"wireguard_listen_port: {taken} is already in use" in message
        assert await owner.node(nodes[0]).list_wg_ports() == [taken]  # type: ignore[arg-type]
        await mesh_works(owner.twin_id, placed)

        # Another twin with its network on the same nodes reaches none of the owner's.
        theirs: dict[int, Placed] = {}
        t_plan = await plan(grid, stranger, nodes, "10.78.0.0/16")
        t_flist = await push_busybox(grid, stranger, busybox_rootfs, tmp_path / "s")
        await apply(stranger, t_plan, by_id, t_flist, theirs)
        await mesh_works(stranger.twin_id, theirs)  # theirs works
        for t in theirs.values():
            for p in placed.values():
                assert await never_reaches(t.namespace(stranger.twin_id), p.ip)
                tunnel = str(wireguard.tunnel_address(second.node(p.node.node_id).subnet).ip)
                assert await never_reaches(t.namespace(stranger.twin_id), tunnel)
        for p in placed.values():  # and the owner's private ips are the owner's only
            assert await stranger.node(p.node).list_private_ips(NAME) == [  # type: ignore[arg-type]
                theirs[p.node.node_id].ip
            ]
            assert await owner.node(p.node).list_private_ips(NAME) == [p.ip]  # type: ignore[arg-type]
    finally:
        await close(owner, stranger)


async def hidden_status(
    grid: GridState, hidden: GridNode, owner: User, the_plan: NetworkPlan
) -> wireguard.Status:
    status = await node_wireguard(hidden.entry).status(network_id(owner.twin_id, NAME))
    assert status is not None
    assert [p.public_key for p in status.peers] == [the_plan.node(the_plan.access_node).public_key]
    return status


def wg_quick_in(ns: str, verb: str, conf: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    argv = ["ip", "netns", "exec", ns, "wg-quick", verb, str(conf)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


async def test_a_laptop_from_its_wg_quick_file(
    grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """A laptop (a namespace on the grid's bridge) brought up with the real `wg-quick`
    from the file the client writes reaches the machines on every node, the hidden one
    through the access node; once its access is revoked (an update of the access node)
    it reaches none, and the machines still reach each other."""
    nodes = nodes_of(grid)
    by_id = {n.node_id: n for n in nodes}
    owner = await tenant(grid)
    conf = tmp_path / f"{grid.tag}lap.conf"  # its name is the laptop's interface's
    try:
        flist = await push_busybox(grid, owner, busybox_rootfs, tmp_path)
        infos = [await node_info(owner, n) for n in nodes]
        request = NetworkRequest(
            name=NAME, ip_range=IP_RANGE, nodes=infos, accesses=[AccessRequest("laptop")]
        )
        public = grid_public(grid)
        key = owner.identity.public_key
        with_laptop = plan_network(request, owner_public_key=key, public=public)
        placed: dict[int, Placed] = {}
        await apply(owner, with_laptop, by_id, flist, placed)
        with on_bridge(grid, "laptop", 201) as laptop:
            conf.write_text(wg_quick(with_laptop, "laptop", owner=owner.identity))
            conf.chmod(0o600)
            up = wg_quick_in(laptop, "up", conf)
            assert up.returncode == 0, up.stderr
            try:
                for p in placed.values():
                    assert await reaches(laptop, p.ip), (p.node.entry.index, diagnose(grid))
                revoked = plan_network(
                    replace(request, accesses=[]), with_laptop, owner_public_key=key, public=public
                )
                await apply(owner, revoked, by_id, flist, placed)
                for p in placed.values():
                    assert await never_reaches(laptop, p.ip)
                await mesh_works(owner.twin_id, placed)
            finally:
                wg_quick_in(laptop, "down", conf)
                (wireguard.UAPI_DIR / f"{conf.stem}.sock").unlink(missing_ok=True)
    finally:
        await close(owner)


async def test_mesh_after_kill_9_and_after_a_reboot(
    grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    nodes = nodes_of(grid)
    by_id = {n.node_id: n for n in nodes}
    owner = await tenant(grid)
    try:
        the_plan, placed = await deployed(grid, owner, nodes, busybox_rootfs, tmp_path)
        await mesh_works(owner.twin_id, placed)
        twin = owner.twin_id
        a, b, hidden = (placed[n.node_id] for n in nodes)

        # kill -9 of node 2's agent: its tunnel carries on without it (wireguard-go is
        # detached), and the agent started again keeps it, with the same key.
        kill_agent(grid, nodes[1].entry)
        assert await reaches(a.namespace(twin), b.ip)
        assert await reaches(hidden.namespace(twin), b.ip)
        await asyncio.to_thread(restart, grid)
        await mesh_works(twin, placed)
        assert the_plan.node(nodes[1].node_id).public_key in (
            await owner.node(nodes[0]).wg_peers(NAME)  # type: ignore[arg-type]
        )

        # A reboot of the access node (the hidden node's only way in): everything it ran
        # is gone; started again, it builds the tunnels again with the same keys.
        access = by_id[the_plan.access_node]
        reboot(grid, access.entry)
        assert netns.names(prefix=f"{access.entry.netns_prefix}n-") == []
        await asyncio.to_thread(restart, grid)
        await mesh_works(twin, placed, guard=300.0)
        status = await owner.node(access).wg_peers(NAME)  # type: ignore[arg-type]
        assert set(status) == {n.public_key for n in the_plan.nodes if n.node_id != access.node_id}
        assert all(status.values()), status  # every peer handshook again
    finally:
        await close(owner)


@contextlib.contextmanager
def on_bridge(grid: GridState, name: str, host: int) -> Iterator[str]:
    """A namespace of the test's on the grid bridge at its address `.host`, beside the
    nodes (swept with the grid's prefix if the test fails)."""
    ns, veth = f"{grid.tag}-{name}", f"{grid.tag}{name[:3]}"
    bridge = ip_interface(grid.host_address).network
    netns.create(ns)
    try:
        links.ensure_veth(veth, "eth0", None, ns)
        links.set_master(veth, grid.bridge)
        links.set_up(veth)
        links.set_up("lo", ns)
        links.set_addresses("eth0", [ip_interface(f"{bridge[host]}/{bridge.prefixlen}")], ns)
        links.set_up("eth0", ns)
        yield ns
    finally:
        links.delete(veth)
        netns.delete(ns)


async def test_only_the_networks_own_peers_get_in(
    grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """A WireGuard peer the network does not list never handshakes nor reaches a machine;
    plain packets sent from the grid's side at the network's subnet, its uplink or its
    tunnel address reach nothing either."""
    nodes = nodes_of(grid)
    owner = await tenant(grid)
    try:
        the_plan, placed = await deployed(grid, owner, nodes[:2], busybox_rootfs, tmp_path)
        target = placed[nodes[0].node_id]
        node1 = the_plan.node(nodes[0].node_id)
        assert await reaches(placed[nodes[1].node_id].namespace(owner.twin_id), target.ip)

        with on_bridge(grid, "rogue", 200) as rogue:
            # A stranger's WireGuard, configured as if it were a peer of the network.
            wg = wireguard.WireGuard(tmp_path / "rogue-wg", public_ns=rogue, prefix=rogue)
            stranger_key = base64.b64encode(os.urandom(32)).decode()
            await wg.ensure(
                "rogue",
                rogue,
                wireguard.Config(
                    private_key=stranger_key,
                    listen_port=free_udp_port(),
                    address="100.64.77.250/16",
                    routes=[IP_RANGE],
                    peers=[
                        wireguard.Peer(
                            public_key=node1.public_key,
                            allowed_ips=(IP_RANGE, "100.64.0.0/16"),
                            endpoint=node1.endpoint,
                            keepalive=1,
                        )
                    ],
                ),
            )
            try:
                assert await never_reaches(rogue, target.ip)
                assert await never_reaches(rogue, str(wireguard.tunnel_address(node1.subnet).ip))
                status = await wg.status("rogue")
                assert status is not None and status.peers[0].latest_handshake == 0
                seen = await owner.node(nodes[0]).wg_peers(NAME)  # type: ignore[arg-type]
                assert wireguard.public_key(stranger_key) not in seen
            finally:
                await wg.remove("rogue", rogue)

            # Plain packets routed at node 1 for the subnet, the tunnels and the uplinks.
            node_ip = nodes[0].entry.address.split("/")[0]
            for net in (IP_RANGE, "100.64.0.0/16", "100.127.0.0/16"):
                await netns.exec_in(rogue, "ip", "route", "add", net, "via", node_ip)
            net_ns = network_namespace(nodes[0].entry.netns_prefix, network_id(owner.twin_id, NAME))
            uplink = links.addresses(NS_UPLINK, net_ns)[0].ip
            for dst in (target.ip, str(uplink), f"{IPv4Network(node1.subnet)[1]}"):
                assert await never_reaches(rogue, dst), dst
            assert not can_connect(rogue, target.ip, 22, timeout=1)
    finally:
        await close(owner)


TS_VECTORS = Path(__file__).resolve().parents[1] / "gridtypes" / "vectors" / "ts_client.json"


async def test_a_network_the_typescript_client_built_provisions_here(grid: GridState) -> None:
    """The `network-mesh` vector (a node's part of a mesh, by @threefold/grid_client):
    its network workload re-signed by a test twin, its one public endpoint rewritten to
    an address of the local grid, provisions unchanged: the interface has its key,
    port, peers and address, and a route for its ip_range."""
    case = next(
        c for c in json.loads(TS_VECTORS.read_text())["vectors"] if c["name"] == "network-mesh"
    )
    raw = json.loads(case["deployment_json"])
    workload = raw["workloads"][0]
    data = workload["data"]
    nodes = nodes_of(grid)
    owner = await tenant(grid)
    try:
        # The vector's port is its own; this module's other networks took random ports,
        # which can be the same: provision it on a node where it is free.
        for home in nodes:
            if data["wireguard_listen_port"] not in await owner.node(home).list_wg_ports():  # type: ignore[arg-type]
                break
        else:
            pytest.fail(f"port {data['wireguard_listen_port']} is taken on every node")
        other = next(n for n in nodes if n is not home)
        local_endpoint = f"{other.entry.address.split('/')[0]}:9550"
        public = [p for p in data["peers"] if p["endpoint"]]
        assert [p["endpoint"] for p in public] == ["[2a02:1802:5e:0:2::12]:9550"]
        for p in public:
            p["endpoint"] = local_endpoint  # never dial the real grid
        dep = owner.deployment([workload])
        await owner.deploy(home, dep)  # type: ignore[arg-type]
        await owner.wait_states(home, dep.contract_id, {"mesh": "ok"})  # type: ignore[arg-type]
        from zos.gridtypes.names import network_id

        netid = network_id(owner.twin_id, "mesh")
        entry = home.entry
        wg = wireguard.WireGuard(
            Path(entry.data_dir) / "networks" / "wireguard", prefix=entry.netns_prefix
        )
        status = await wg.status(netid)
        assert status is not None and status.name == f"w-{netid}"
        assert status.public_key == wireguard.public_key(data["wireguard_private_key"])
        assert status.listen_port == data["wireguard_listen_port"] == 19683
        assert {
            p.public_key: (
                sorted(p.allowed_ips),
                p.endpoint if p.endpoint == local_endpoint else "",
            )
            for p in status.peers
        } == {
            p["wireguard_public_key"]: (sorted(p["allowed_ips"]), p["endpoint"])
            for p in data["peers"]
        }
        ns = network_namespace(entry.netns_prefix, netid)
        assert links.addresses(status.name, ns) == [ip_interface("100.64.40.2/16")]
        routes = await netns.exec_in(ns, "ip", "route", "show", "10.40.0.0/16")
        assert f"dev {status.name}" in routes
        assert 19683 in await owner.node(home).list_wg_ports()  # type: ignore[arg-type]
        await owner.node(home).delete(dep.contract_id)  # type: ignore[arg-type]
        await owner.wait_states(home, dep.contract_id, {"mesh": "deleted"})  # type: ignore[arg-type]
        assert await wg.status(netid) is None
        assert not netns.exists(ns)
        assert 19683 not in await owner.node(home).list_wg_ports()  # type: ignore[arg-type]
    finally:
        await close(owner)


@pytest.mark.parametrize("hidden", [-1, 3, 4])
def test_hidden_nodes_leave_a_public_one(tmp_path: Path, hidden: int) -> None:
    with pytest.raises(local.GridError, match=r"--hidden: .* must be from 0 to 2"):
        local.up(tmp_path / "grid", nodes=3, hidden=hidden, say=quiet)
    assert not (tmp_path / "grid").exists()
