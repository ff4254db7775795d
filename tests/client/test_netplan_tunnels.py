"""The planner's output carries packets: real WireGuard (zos.primitives.wireguard,
wireguard-go here) on namespaces the test makes, configured from `plan_network`, and
laptops brought up with `wg-quick` from the file `wg_quick` wrote.

Two nodes on a bridge: A with an address the planner counts as public, B hidden (it
reports only a private address, so nothing dials it and it dials A), each with a
"machine" behind its network's bridge. The owner's laptop and a teammate's (granted by
public key) dial A. Revoking the teammate cuts it off and leaves everyone else's access.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "primitives"))

from netlab import Lan, ping, plug_machine

from zos.client.networks import (
    AccessRequest,
    NetworkPlan,
    NetworkRequest,
    NodeInfo,
    NodeNetwork,
    plan_network,
    wg_quick,
)
from zos.gridtypes.names import network_id
from zos.identity import Identity
from zos.primitives import netns, wireguard

pytestmark = [pytest.mark.root, pytest.mark.netns]

TAG = f"ztn{os.getpid() % 100000}"
LAN_HOST = "10.251.0.{}"  # the bridge between the test's nodes and laptops
LAN = ip_network(LAN_HOST.format("0/24"))
NAME = "mesh"
NETID = network_id(41, NAME)
OWNER = Identity.generate()
USERSPACE_ENV = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}


def node_config(plan: NetworkPlan, node: NodeNetwork) -> wireguard.Config:
    """What a node builds from its `network` workload (reference/network.md: address
    100.64.A.B/16, one route for ip_range). A hidden node keeps its NAT mapping to its
    access node open, so that the others can reach it without it speaking first."""
    data = node.data
    return wireguard.Config(
        private_key=data.wireguard_private_key,
        listen_port=data.wireguard_listen_port,
        address=wireguard.tunnel_address(data.subnet),
        routes=[IPv4Network(plan.ip_range)],
        peers=[
            wireguard.Peer(
                p.wireguard_public_key,
                list(p.allowed_ips),
                p.endpoint,
                25 if node.hidden and p.endpoint else 0,
            )
            for p in data.peers
        ],
    )


@dataclass
class Host:
    """A namespace on the LAN: a node's public side, or a laptop."""

    ns: str
    ip: str


@dataclass
class Node:
    name: str
    host: Host
    reported: str  # the address `zos.network.interfaces` answers with
    wg: wireguard.WireGuard

    @property
    def ns(self) -> str:
        return f"{TAG}{self.name}-n-{NETID}"

    @property
    def machine(self) -> str:
        return f"{TAG}-{self.name}-m"

    def info(self) -> NodeInfo:
        return NodeInfo(ord(self.name), None, {"zos": [self.reported]}, taken_ports=[51820])


@dataclass
class Lab:
    lan: Lan
    a: Node
    b: Node

    def host(self, name: str, last: int) -> Host:
        return Host(*self.lan.host(name, last))

    def plan(self, accesses: list[AccessRequest], current: NetworkPlan | None) -> NetworkPlan:
        request = NetworkRequest(NAME, "10.40.0.0/16", [self.a.info(), self.b.info()], accesses)
        return plan_network(
            request, current, owner_public_key=OWNER.public_key, public=lambda ip: ip in LAN
        )

    async def apply(self, plan: NetworkPlan) -> None:
        """Each changed node's interface made what its workload says (as a node would)."""
        for n in plan.changed:
            node = self.a if n.node_id == ord("a") else self.b
            await node.wg.ensure(NETID, node.ns, node_config(plan, n))


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lan = Lan(TAG, LAN_HOST)
    nodes: list[Node] = []
    try:
        for name, last, reported in (("a", 2, LAN_HOST.format(2)), ("b", 3, "192.168.77.3")):
            host = Host(*lan.host(name, last))
            wg = wireguard.WireGuard(tmp_path / name, host.ns, f"{TAG}{name}-", wireguard.USERSPACE)
            nodes.append(Node(name, host, reported, wg))
        yield Lab(lan, *nodes)
    finally:
        for node in nodes:
            await node.wg.remove(NETID)
            netns.delete(node.machine)
            netns.delete(node.ns)
        lan.close()


class Laptop:
    """A namespace on the LAN with a wg-quick interface from a file `wg_quick` wrote."""

    def __init__(self, host: Host, conf: Path) -> None:
        self.host = host
        self.conf = conf

    def up(self, text: str) -> None:
        self.conf.write_text(text)
        self.conf.chmod(0o600)
        self._wg_quick("up", check=True)

    def down(self) -> None:
        self._wg_quick("down", check=False)
        (wireguard.UAPI_DIR / f"{self.conf.stem}.sock").unlink(missing_ok=True)

    def _wg_quick(self, verb: str, check: bool) -> None:
        argv = ["ip", "netns", "exec", self.host.ns, "wg-quick", verb, str(self.conf)]
        done = subprocess.run(argv, env=USERSPACE_ENV, capture_output=True, text=True)
        assert done.returncode == 0 or not check, done.stderr


def teammate_key() -> tuple[str, str]:
    private = base64.b64encode(os.urandom(32)).decode()
    return private, wireguard.public_key(private)


async def test_a_planned_mesh_with_a_hidden_node_and_laptops_carries_packets(
    lab: Lab, tmp_path: Path
) -> None:
    plan = lab.plan([AccessRequest("laptop")], None)
    a, b = plan.node(ord("a")), plan.node(ord("b"))
    assert (a.endpoint_host, b.hidden, plan.access_node) == (lab.a.host.ip, True, a.node_id)
    a_machine = plug_machine(lab.a.ns, lab.a.machine, IPv4Network(a.subnet))
    b_machine = plug_machine(lab.b.ns, lab.b.machine, IPv4Network(b.subnet))
    await lab.apply(plan)

    # the hidden node dials its access node; both machines reach each other
    assert await ping(lab.b.machine, a_machine)
    assert await ping(lab.a.machine, b_machine)
    assert await ping(lab.a.machine, str(wireguard.tunnel_address(b.subnet).ip))

    suffix = os.getpid() % 100000
    owner = Laptop(lab.host("lt", 9), tmp_path / f"zo{suffix}.conf")
    mate = Laptop(lab.host("tm", 10), tmp_path / f"zt{suffix}.conf")
    try:
        owner.up(wg_quick(plan, "laptop", owner=OWNER))
        assert await ping(owner.host.ns, a_machine)
        assert await ping(owner.host.ns, b_machine)  # through the access node

        # a teammate admitted by public key: only the access node (and the route on the
        # other reachable nodes: none here) changes; the hidden node keeps its config
        mate_private, mate_public = teammate_key()
        keep = plan.access_requests()
        granted = lab.plan([*keep, AccessRequest("alice", public_key=mate_public)], plan)
        assert {n.node_id: n.change for n in granted.nodes} == {
            a.node_id: "update",
            b.node_id: "keep",
        }
        await lab.apply(granted)
        # her file names her key's file (PostUp), the key itself is never in it
        key_file = tmp_path / "alice.key"
        key_file.write_text(mate_private)
        key_file.chmod(0o600)
        text = wg_quick(granted, "alice", key_file=str(key_file))
        assert mate_private not in text and "PrivateKey" not in text
        mate.up(text)
        assert await ping(mate.host.ns, a_machine)
        assert await ping(mate.host.ns, b_machine)

        # revoked: the teammate reaches nothing; the owner's laptop and the mesh still do
        revoked = lab.plan(keep, granted)
        await lab.apply(revoked)
        status = await lab.a.wg.status(NETID)
        assert status is not None and status.peer(mate_public) is None
        assert not await ping(mate.host.ns, a_machine, wait=2)
        assert not await ping(mate.host.ns, b_machine, wait=2)
        assert await ping(owner.host.ns, b_machine)
        assert await ping(lab.a.machine, b_machine)
    finally:
        mate.down()
        owner.down()
