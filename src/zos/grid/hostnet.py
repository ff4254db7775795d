"""The local grid's wiring: a host bridge, and one network namespace per node with a veth
on it, so every node agent has its own address and reaches NATS and the hub on the host
side of the bridge, and nothing else of the host (an nftables table in the root
namespace: the host is "the host" a node's tenants must never reach, whatever its
addresses). A node's address on the bridge is its public side: other nodes reach its
WireGuard ports there.

A *hidden* node sits behind a NAT router of its own instead, as a node at home does: a
router namespace holds the bridge address and a LAN (192.168.(200+i).0/24) with the
node at `.2`; what the node opens goes out masqueraded, nothing can dial it. It has no
public endpoint, so its networks reach the others through an access node.
All kernel work goes through `zos.primitives` (links, netns, nat)."""

from __future__ import annotations

import asyncio
import hashlib
from ipaddress import IPv4Interface, IPv4Network

from zos.primitives import links, nat, netns

# Host side of the bridge is .1; node i is .(10 + i).
NODE_BASE = 10
HIDDEN_BASE = 200  # hidden node i's LAN: 192.168.(200 + i).0/24


def pick_subnet(tag: str) -> IPv4Network:
    """A /24 in 10.200.0.0/13 (from the tag) that no address on this host overlaps."""
    used = [a.network for a in links.all_addresses()]
    start = int(hashlib.sha256(tag.encode()).hexdigest()[:6], 16)
    for i in range(2048):
        n = (start + i) % 2048
        net = IPv4Network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 for the grid bridge in 10.200.0.0/13")


def bridge_name(tag: str) -> str:
    return f"{tag}br"


def node_netns(tag: str, index: int) -> str:
    return f"{tag}-node{index}"


def node_veth(tag: str, index: int) -> str:
    return f"{tag}v{index}"


def ensure_bridge(tag: str, host: IPv4Interface) -> str:
    name = bridge_name(tag)
    links.ensure_bridge(name)
    if host not in links.addresses(name):
        links.set_addresses(name, [host])
    links.set_up(name)
    return name


def _on_bridge(tag: str, index: int, host: IPv4Interface, ns: str) -> IPv4Interface:
    """Namespace `ns` with `eth0` on the bridge at node `index`'s address, the host as
    its default route; returns the address."""
    veth = node_veth(tag, index)
    addr = IPv4Interface(f"{host.network[NODE_BASE + index]}/{host.network.prefixlen}")
    netns.create(ns)
    links.ensure_veth(veth, "eth0", None, ns)
    links.set_master(veth, bridge_name(tag))
    links.set_up(veth)
    links.set_up("lo", ns)
    links.set_addresses("eth0", [addr], ns)
    links.set_up("eth0", ns)
    links.set_default_route(host.ip, ns)
    return addr


def ensure_node(tag: str, index: int, host: IPv4Interface) -> tuple[str, IPv4Interface, str]:
    """The node's namespace, its veth on the bridge and its address; returns all three."""
    ns = node_netns(tag, index)
    return ns, _on_bridge(tag, index, host, ns), node_veth(tag, index)


def router_netns(tag: str, index: int) -> str:
    return f"{tag}-nat{index}"


def hidden_lan(index: int) -> IPv4Network:
    return IPv4Network(f"192.168.{HIDDEN_BASE + index}.0/24")


def ensure_hidden_node(tag: str, index: int, host: IPv4Interface) -> tuple[str, IPv4Interface, str]:
    """The node's namespace behind its router (which has the bridge address and the
    veth on the bridge); returns the node's namespace, its LAN address, the veth."""
    router, ns = router_netns(tag, index), node_netns(tag, index)
    _on_bridge(tag, index, host, router)
    lan = hidden_lan(index)
    gateway = IPv4Interface(f"{lan[1]}/{lan.prefixlen}")
    addr = IPv4Interface(f"{lan[2]}/{lan.prefixlen}")
    netns.create(ns)
    links.ensure_veth("lan", "eth0", router, ns)
    links.set_addresses("lan", [gateway], router)
    links.set_up("lan", router)
    links.set_up("lo", ns)
    links.set_addresses("eth0", [addr], ns)
    links.set_up("eth0", ns)
    links.set_default_route(gateway.ip, ns)
    asyncio.run(nat.apply_router_rules(router, "eth0", "lan"))
    return ns, addr, node_veth(tag, index)


def guard_host(tag: str, host: IPv4Interface, ports: list[int]) -> None:
    """From the nodes' namespaces, only `host.ip:ports` (NATS, the hub) reach the host."""
    asyncio.run(nat.guard_grid_host(tag, bridge_name(tag), host.ip, ports))


def remove(tag: str) -> list[str]:
    """Every namespace and link of grid `tag` (nodes' own and what they made), and its
    table in the root namespace; what went."""
    asyncio.run(nat.remove_table(nat.grid_table(tag)))
    gone = []
    for ns in netns.names(prefix=f"{tag}-"):
        netns.delete(ns)
        gone.append(ns)
    for name in links.names():
        if name and name.startswith(tag):
            links.delete(name)
            gone.append(name)
    return gone
