"""The `network` manager on real namespaces, bridges, veths and nftables."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from netzm_helpers import (
    can_connect,
    ctx,
    deployment,
    listen_in,
    network_data,
    unique_twin,
)

from zos.gridtypes.names import network_id
from zos.node.networks import bridge_name, uplink_name
from zos.node.workloads.base import NodeServices, WorkloadError
from zos.node.workloads.network import NetworkManager
from zos.primitives import links, nat, netns

pytestmark = [pytest.mark.netns, pytest.mark.root]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeServices]:
    services = NodeServices(data_dir=tmp_path / "node")
    try:
        yield services
    finally:
        # whatever a failed test left: namespaces and uplinks of networks it recorded
        for path in (services.data_dir / "networks").glob("*.json"):
            netid = path.stem
            netns.delete(services.networks.namespace(netid))
            links.delete(uplink_name(netid))


@pytest.fixture
async def manager(node: NodeServices) -> AsyncIterator[NetworkManager]:
    yield NetworkManager(node)


def attach_machine(net_ns: str, bridge: str, ip: str, gateway: str) -> str:
    """A bare namespace plugged into a network's bridge, like a zmachine's."""
    name = f"zt-m-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    port = f"v{uuid.uuid4().hex[:10]}"
    links.ensure_veth(port, "eth0", net_ns, name)
    links.set_master(port, bridge, net_ns)
    links.set_up(port, net_ns)
    links.set_up("lo", name)
    links.set_addresses("eth0", [IPv4Interface(ip)], name)
    links.set_up("eth0", name)
    from ipaddress import IPv4Address

    links.set_default_route(IPv4Address(gateway), name)
    return name


async def test_network_lifecycle_shared_by_name(
    node: NodeServices, manager: NetworkManager
) -> None:
    twin = unique_twin()
    dep1 = deployment(
        twin, 1, [{"name": "net", "type": "network", "data": network_data("10.77.1.0/24")}]
    )
    dep2 = deployment(
        twin, 2, [{"name": "net", "type": "network", "data": network_data("10.77.1.0/24")}]
    )
    netid = network_id(twin, "net")
    ns, bridge = node.networks.namespace(netid), bridge_name(netid)
    assert await manager.provision(ctx(node, dep1, "net")) == {}
    assert await manager.provision(ctx(node, dep1, "net")) == {}  # idempotent
    assert netns.exists(ns)
    assert links.addresses(bridge, ns) == [IPv4Interface("10.77.1.1/24")]
    uplink = links.addresses(uplink_name(netid))
    assert len(uplink) == 1 and uplink[0].ip in nat.UPLINK_RANGE
    assert links.default_gateway(ns) == uplink[0].ip
    rules = await netns.exec_in(ns, "nft", "list", "table", "inet", nat.NS_TABLE)
    assert "masquerade" in rules and "10.0.0.0/8" in rules
    # a second deployment of the same twin names the same network: shared, not duplicated
    await manager.provision(ctx(node, dep2, "net"))
    info = node.networks.state.load(netid)
    assert info is not None and info.users == sorted([f"{twin}-1-net", f"{twin}-2-net"])
    assert netns.names(ns) == [ns]
    await manager.deprovision(ctx(node, dep1, "net"))
    assert netns.exists(ns), "still used by the second deployment"
    await manager.deprovision(ctx(node, dep2, "net"))
    assert not netns.exists(ns)
    assert not links.exists(uplink_name(netid))
    assert node.networks.state.load(netid) is None
    await manager.deprovision(ctx(node, dep2, "net"))  # a no-op when gone


async def test_refuses_bad_data_and_leaves_nothing(
    node: NodeServices, manager: NetworkManager
) -> None:
    twin = unique_twin()
    cases = {
        "subnet": network_data("10.1.0.0/24", ip_range="192.168.0.0/16"),
        "wireguard_private_key": {**network_data("10.1.0.0/24"), "wireguard_private_key": "abc"},
        "wireguard_listen_port": {**network_data("10.1.0.0/24"), "wireguard_listen_port": 0},
    }
    for i, (field, data) in enumerate(cases.items()):
        dep = deployment(twin, 10 + i, [{"name": "net", "type": "network", "data": data}])
        with pytest.raises(WorkloadError, match=field):
            await manager.provision(ctx(node, dep, "net"))
    assert not netns.exists(node.networks.namespace(network_id(twin, "net")))
    # in use with one subnet: another deployment cannot change it
    dep = deployment(
        twin, 20, [{"name": "n2", "type": "network", "data": network_data("10.2.0.0/24")}]
    )
    other = deployment(
        twin, 21, [{"name": "n2", "type": "network", "data": network_data("10.3.0.0/24")}]
    )
    await manager.provision(ctx(node, dep, "n2"))
    try:
        with pytest.raises(WorkloadError, match="subnet: network 'n2' exists"):
            await manager.provision(ctx(node, other, "n2"))
        assert links.addresses(
            bridge_name(network_id(twin, "n2")), node.networks.namespace(network_id(twin, "n2"))
        ) == [IPv4Interface("10.2.0.1/24")]
    finally:
        await manager.deprovision(ctx(node, dep, "n2"))


async def test_subnets_of_the_node_itself_are_refused(
    node: NodeServices, manager: NetworkManager
) -> None:
    # Issue 12, finding 11: subnets 0.0.0.0/0, 127.0.0.0/24, the uplink range
    # 100.127.0.0/16 and the grid bridge's subnet were accepted. Each is refused with the
    # rule, and nothing is made.
    twin = unique_twin()
    octet = random.randrange(100, 250)
    bridge = f"zs{uuid.uuid4().hex[:8]}"  # a network the node is on (the grid's bridge)
    links.ensure_bridge(bridge)
    try:
        links.set_addresses(bridge, [IPv4Interface(f"10.201.{octet}.1/24")])
        cases = [
            ("0.0.0.0/0", "0.0.0.0/0", "must be a private range, inside 10.0.0.0/8"),
            ("127.0.0.0/24", "127.0.0.0/8", "must be a private range"),
            ("100.127.0.0/16", "100.64.0.0/10", "the range of the node's uplinks"),
            ("100.127.9.0/24", "100.127.0.0/16", "the range of the node's uplinks"),
            (f"10.201.{octet}.0/24", "10.0.0.0/8", "a network of this node"),
        ]
        for i, (subnet, ip_range, why) in enumerate(cases):
            data = network_data(subnet, ip_range=ip_range)
            dep = deployment(twin, 30 + i, [{"name": "net", "type": "network", "data": data}])
            with pytest.raises(WorkloadError, match=rf"^subnet: {subnet} .*{why}"):
                await manager.provision(ctx(node, dep, "net"))
        assert not netns.exists(node.networks.namespace(network_id(twin, "net")))
        assert node.networks.state.load(network_id(twin, "net")) is None
    finally:
        links.delete(bridge)


async def test_isolation_and_nat(node: NodeServices, manager: NetworkManager) -> None:
    twin_a, twin_b = unique_twin(), unique_twin()
    dep_a = deployment(
        twin_a, 1, [{"name": "net", "type": "network", "data": network_data("10.61.1.0/24")}]
    )
    dep_b = deployment(
        twin_b, 1, [{"name": "net", "type": "network", "data": network_data("10.62.1.0/24")}]
    )
    await manager.provision(ctx(node, dep_a, "net"))
    await manager.provision(ctx(node, dep_b, "net"))
    id_a, id_b = network_id(twin_a, "net"), network_id(twin_b, "net")
    ns_a, ns_b = node.networks.namespace(id_a), node.networks.namespace(id_b)
    machines: list[str] = []
    ext = f"zt-x-{uuid.uuid4().hex[:8]}"
    ext_host = f"zx{uuid.uuid4().hex[:8]}"
    try:
        a1 = attach_machine(ns_a, bridge_name(id_a), "10.61.1.2/24", "10.61.1.1")
        a2 = attach_machine(ns_a, bridge_name(id_a), "10.61.1.3/24", "10.61.1.1")
        b1 = attach_machine(ns_b, bridge_name(id_b), "10.62.1.2/24", "10.62.1.1")
        machines += [a1, a2, b1]
        # "the internet": a namespace behind the host on a documentation range
        netns.create(ext)
        links.ensure_veth(ext_host, "eth0", None, ext)
        links.set_addresses(ext_host, [IPv4Interface("198.51.100.1/24")])
        links.set_up(ext_host)
        links.set_addresses("eth0", [IPv4Interface("198.51.100.2/24")], ext)
        links.set_up("eth0", ext)
        internet = listen_in(ext, 8080)
        svc_a2 = listen_in(a2, 8080)
        svc_b1 = listen_in(b1, 8080)
        host = listen_in(None, 0)  # the node's own service (its bus connection, say)
        host_port = host.getsockname()[1]
        host_ip = next(
            str(a.ip)
            for a in links.all_addresses()
            if not a.ip.is_loopback and a.ip not in nat.UPLINK_RANGE
        )
        gw_a = str(links.addresses(uplink_name(id_a))[0].ip)
        uplink_b = str(links.default_gateway(ns_b))
        probes = await asyncio.gather(
            *(
                asyncio.to_thread(can_connect, src, ip, port)
                for src, ip, port in [
                    (a1, "10.61.1.3", 8080),  # same network
                    (a1, "198.51.100.2", 8080),  # out through NAT
                    (a1, "10.62.1.2", 8080),  # another twin's machine
                    (b1, "10.61.1.3", 8080),
                    (a1, host_ip, host_port),  # the host
                    (a1, gw_a, host_port),  # the host over the uplink
                    (a1, uplink_b, host_port),
                    (a1, "10.61.1.1", 22),  # the network namespace itself
                ]
            )
        )
        assert probes == [True, True, False, False, False, False, False, False]
        conn, peer = internet.accept()
        conn.close()
        assert peer[0] == "198.51.100.1", "masqueraded twice: subnet → uplink → host"
        for s in (internet, svc_a2, svc_b1, host):
            s.close()
    finally:
        for m in machines:
            # its veth first: links of a deleted namespace go asynchronously
            links.delete("eth0", m)
            netns.delete(m)
        netns.delete(ext)
        links.delete(ext_host)
        await manager.deprovision(ctx(node, dep_a, "net"))
        await manager.deprovision(ctx(node, dep_b, "net"))
    assert not netns.exists(ns_a) and not netns.exists(ns_b)


async def test_neither_the_host_nor_the_control_plane_whatever_their_address(
    node: NodeServices, manager: NetworkManager
) -> None:
    # Issue 12, finding 2: the walls were a list of the agent namespace's addresses made
    # once, so what belongs to the host or the grid elsewhere was reachable. Now any local
    # address of the host (even one added after the network was built) and the control
    # plane (NATS servers, configured stores, here on a public-looking address) are walled
    # off; the internet next to them is not.
    base = 8 * random.randrange(1, 31)  # a /29 of 203.0.113.0/24 (documentation range)
    ctl_ip, internet_ip = f"203.0.113.{base + 2}", f"203.0.113.{base + 3}"
    node.control_plane = (IPv4Address(ctl_ip),)
    twin = unique_twin()
    dep = deployment(
        twin, 1, [{"name": "net", "type": "network", "data": network_data("10.64.1.0/24")}]
    )
    await manager.provision(ctx(node, dep, "net"))
    netid = network_id(twin, "net")
    ext, ext_host = f"zt-c-{uuid.uuid4().hex[:8]}", f"zc{uuid.uuid4().hex[:8]}"
    extra_host = f"zd{uuid.uuid4().hex[:8]}"
    machine = None
    try:
        machine = attach_machine(
            node.networks.namespace(netid), bridge_name(netid), "10.64.1.2/24", "10.64.1.1"
        )
        netns.create(ext)
        links.ensure_veth(ext_host, "eth0", None, ext)
        links.set_addresses(ext_host, [IPv4Interface(f"203.0.113.{base + 1}/29")])
        links.set_up(ext_host)
        links.set_addresses(
            "eth0", [IPv4Interface(f"{ctl_ip}/29"), IPv4Interface(f"{internet_ip}/29")], ext
        )
        links.set_up("eth0", ext)
        service = listen_in(ext, 8080)
        # an address of the host on another interface, added after the walls were made
        links.ensure_bridge(extra_host)
        links.set_addresses(extra_host, [IPv4Interface(f"203.0.113.{base + 6}/32")])
        links.set_up(extra_host)
        on_host = listen_in(None, 0)  # every address of the host
        probes = [
            await asyncio.to_thread(can_connect, machine, ip, port)
            for ip, port in [
                (internet_ip, 8080),
                (ctl_ip, 8080),
                (f"203.0.113.{base + 6}", on_host.getsockname()[1]),
                (f"203.0.113.{base + 1}", on_host.getsockname()[1]),
            ]
        ]
        assert probes == [True, False, False, False]
        service.close()
        on_host.close()
    finally:
        if machine is not None:
            links.delete("eth0", machine)
            netns.delete(machine)
        netns.delete(ext)
        links.delete(ext_host)
        links.delete(extra_host)
        await manager.deprovision(ctx(node, dep, "net"))


async def test_cleanup_and_crash_convergence(node: NodeServices) -> None:
    twin = unique_twin()
    dep = deployment(
        twin, 5, [{"name": "net", "type": "network", "data": network_data("10.63.1.0/24")}]
    )
    netid = network_id(twin, "net")
    first = NetworkManager(node)
    await first.provision(ctx(node, dep, "net"))
    # a crash: the manager is gone without cleanup; a new one provisions again
    del first
    second = NetworkManager(node)
    await second.provision(ctx(node, dep, "net"))
    assert netns.names(node.networks.namespace(netid)) == [node.networks.namespace(netid)]
    assert len(links.addresses(uplink_name(netid))) == 1
    assert [p for p in links.ports(bridge_name(netid), node.networks.namespace(netid))] == []
    # the engine's start-up: nothing of it is wanted any more
    await second.cleanup(set())
    assert not netns.exists(node.networks.namespace(netid))
    with contextlib.suppress(FileNotFoundError):
        assert not list((node.data_dir / "networks").glob("*.json"))


async def test_workloads_attach_and_detach_through_the_service(
    node: NodeServices, manager: NetworkManager
) -> None:
    """What zmachines (and later gateways and VMs) use: an interface on the network,
    its address checked and recorded, the network kept while anything is attached."""
    twin = unique_twin()
    dep = deployment(
        twin, 1, [{"name": "net", "type": "network", "data": network_data("10.67.1.0/24")}]
    )
    await manager.provision(ctx(node, dep, "net"))
    nets, netid = node.networks, network_id(twin, "net")
    net_ns, wid = nets.namespace(netid), f"{twin}-2-a"
    a = await nets.attach(twin, "net", wid, "10.67.1.2")
    assert (a.kind, a.netid, str(a.address), str(a.gateway)) == (
        "veth",
        netid,
        "10.67.1.2/24",
        "10.67.1.1",
    )
    assert links.ports(bridge_name(netid), net_ns) == [a.port]
    assert links.addresses("eth0", a.namespace) == [IPv4Interface("10.67.1.2/24")]
    assert links.default_gateway(a.namespace) == IPv4Address("10.67.1.1")
    assert await nets.attach(twin, "net", wid, "10.67.1.2") == a  # again: nothing new
    assert nets.attachments(netid) == [a]
    # refused, changing nothing: a taken address, one outside, a kind not supported
    other = f"{twin}-3-b"
    for ip, kind, message in (
        ("10.67.1.2", "veth", "ip: 10.67.1.2 is already used by another machine"),
        ("10.68.1.2", "veth", "ip: 10.68.1.2 is outside the subnet 10.67.1.0/24"),
        ("10.67.1.3", "vhost", "network: attachments of kind 'vhost' are not supported"),
    ):
        with pytest.raises(WorkloadError, match=message):
            await nets.attach(twin, "net", other, ip, kind=kind)
        assert nets.attachments(netid) == [a]
        assert not netns.exists(f"c-{other}")
    with pytest.raises(WorkloadError, match="network 'nope' does not exist"):
        await nets.attach(twin, "nope", other, "10.67.1.3")
    # the network workload goes; the attachment keeps the network up
    await manager.deprovision(ctx(node, dep, "net"))
    assert netns.exists(net_ns) and links.exists(uplink_name(netid))
    # the last one to go removes it: its namespace, the bridge's end, uplink and state
    await nets.detach(netid, wid)
    assert not netns.exists(a.namespace) and not netns.exists(net_ns)
    assert not links.exists(uplink_name(netid)) and nets.state.load(netid) is None
    assert nets.attachments(netid) == []
    await nets.detach(netid, wid)  # a no-op for what is gone
