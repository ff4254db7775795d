"""Namespaces WireGuard tests make: a LAN (a bridge in its own namespace) with hosts on
it, a network's bridge with a machine behind it, and ping. Every name starts with the
test's tag; `Lan.close` removes what it made."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from zos.primitives import links, netns
from zos.primitives.command import CommandError


class Lan:
    """A namespace holding a bridge: the public network between a test's nodes.
    `address` formats a host's last octet into its address (a /24)."""

    def __init__(self, tag: str, address: str = "10.250.0.{}") -> None:
        self.tag = tag
        self.address = address
        self.ns = f"{tag}-lan"
        self.made: list[str] = []
        netns.create(self.ns)
        links.ensure_bridge("br0", self.ns)

    def host(self, name: str, last: int) -> tuple[str, str]:
        """A namespace `<tag>-<name>` plugged into the bridge: (its name, its address)."""
        ns = f"{self.tag}-{name}"
        netns.create(ns)
        self.made.append(ns)
        links.ensure_veth("lan0", f"p-{name}", ns, self.ns)
        links.set_master(f"p-{name}", "br0", self.ns)
        links.set_up(f"p-{name}", self.ns)
        links.set_addresses("lan0", [IPv4Interface(f"{self.address.format(last)}/24")], ns)
        links.set_up("lan0", ns)
        links.set_up("lo", ns)
        return ns, self.address.format(last)

    def close(self) -> None:
        for ns in [*self.made, self.ns]:
            netns.delete(ns)


def plug_machine(ns: str, machine: str, subnet: IPv4Network) -> str:
    """The network namespace `ns` with its bridge at the subnet's .1 and a machine
    namespace at .2 (as the network and zmachine managers make them); its address."""
    netns.create(ns)
    netns.create(machine)
    links.set_up("lo", ns)
    links.ensure_bridge("b0", ns)
    links.set_addresses("b0", [IPv4Interface(f"{subnet[1]}/24")], ns)
    netns.set_sysctl(ns, "net/ipv4/ip_forward", "1")
    links.ensure_veth("m0", "eth0", ns, machine)
    links.set_master("m0", "b0", ns)
    links.set_up("m0", ns)
    links.set_up("lo", machine)
    links.set_addresses("eth0", [IPv4Interface(f"{subnet[2]}/24")], machine)
    links.set_up("eth0", machine)
    links.set_default_route(IPv4Address(str(subnet[1])), machine)
    return str(subnet[2])


async def ping(ns: str, dst: str, wait: int = 5) -> bool:
    try:
        await netns.exec_in(ns, "busybox", "ping", "-c", "1", "-W", str(wait), dst)
        return True
    except CommandError:
        return False
