"""A one-machine stand-in for the internet around a gateway, for tests and benchmarks.

Three network namespaces on one bridge (in the first):
- `world`: the rest of the internet: the ACME CA, the world's DNS, the web clients;
- `public`: the gateway node's public namespace, where the proxy and the node's DNS run;
- `backend`: a server the gateway publishes.
Addresses come from one private /24 that exists only inside these namespaces, so
nothing sent here leaves the machine. `destroy` removes the namespaces and with them
every link.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from zos.grid.acme import LocalAcme
from zos.primitives import links, netns
from zos.primitives.nodedns import acme_zone

SUBNET = IPv4Network("10.239.0.0/24")


@dataclass(frozen=True)
class GatewayLab:
    tag: str  # makes the namespace names unique on this machine
    subnet: IPv4Network = SUBNET

    @property
    def world_ns(self) -> str:
        return f"zgw-{self.tag}-world"

    @property
    def public_ns(self) -> str:
        return f"zgw-{self.tag}-pub"

    @property
    def backend_ns(self) -> str:
        return f"zgw-{self.tag}-back"

    def _addr(self, n: int) -> IPv4Interface:
        return IPv4Interface(f"{self.subnet[n]}/{self.subnet.prefixlen}")

    @property
    def world_ip(self) -> str:
        return str(self.subnet[1])

    @property
    def gateway_ip(self) -> str:
        return str(self.subnet[2])

    @property
    def backend_ip(self) -> str:
        return str(self.subnet[3])

    def acme(self, run_dir: Path, names: tuple[str, ...], domain: str) -> LocalAcme:
        """The world's ACME CA and DNS: `names` and `*.domain` resolve to the gateway,
        `domain`'s DNS-01 challenges are delegated to the gateway's own DNS server."""
        ip = self.gateway_ip
        return LocalAcme(
            run_dir,
            self.world_ip,
            self.world_ns,
            addresses={**{n: (ip,) for n in names}, f"*.{domain}": (ip,)},
            delegations={acme_zone(domain): (ip, 53)},
        )

    def create(self) -> GatewayLab:
        """Blocks (netlink): call through `asyncio.to_thread` from a running loop."""
        for ns in (self.world_ns, self.public_ns, self.backend_ns):
            netns.create(ns)
            links.set_up("lo", ns)
        links.ensure_bridge("br0", self.world_ns)
        links.set_addresses("br0", [self._addr(1)], self.world_ns)
        for port, ns, n in (("gw0", self.public_ns, 2), ("back0", self.backend_ns, 3)):
            links.ensure_veth(port, "eth0", self.world_ns, ns)
            links.set_master(port, "br0", self.world_ns)
            links.set_up(port, self.world_ns)
            links.set_addresses("eth0", [self._addr(n)], ns)
            links.set_up("eth0", ns)
        return self

    def destroy(self) -> None:
        for ns in (self.backend_ns, self.public_ns, self.world_ns):
            netns.delete(ns)
