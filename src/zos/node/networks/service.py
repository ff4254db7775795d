"""The node's networks service: a twin's networks, and workloads attached to them.

The network manager makes and removes networks (`ensure`, `release_if_unused`); every
workload that needs an interface on one (a zmachine now; gateways and VMs later) asks
`attach` and gives it back with `detach`, never touching namespaces or bridges itself.

A network, per `ensure`: namespace `n-<netid>` holding bridge `b-<netid>` with the
subnet's `.1`, an uplink veth to the host (`u-<netid>` ↔ `pub`) with NAT out, the
nftables walls around it (`zos.primitives.nat`), and its WireGuard interface `w-<netid>`
(`zos.primitives.wireguard`): made on the node's public side (the agent's namespace,
where its UDP socket stays), moved in, with the workload's key, port and peers. An
update changes the peers in place; after a restart or a reboot `ensure` builds what is
missing, with the same key; `teardown` removes it.

An attachment, per kind ("veth": a container's namespace; "tap": a VM's NIC, a tap on
the network's bridge named and MAC'd as zos does, `zos.primitives.taps`): its
address is checked (inside the subnet, not reserved, not another attachment's) and
recorded under the network's lock before its links are made, so two workloads never
get one address. A network is in use while a network workload names it or anything
is attached to it; the last one to go removes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path

from zos.gridtypes.names import network_id
from zos.node.errors import WorkloadError
from zos.node.networks.names import (
    bridge_name,
    machine_namespace,
    network_namespace,
    uplink_name,
    veth_port,
)
from zos.node.networks.state import Attachment, NetworkInfo, NetworkState
from zos.primitives import links, nat, netns, taps
from zos.primitives.command import CommandError
from zos.primitives.wireguard import (
    Config,
    Peer,
    PortInUse,
    WireGuard,
    WireGuardError,
    interface_name,
    tunnel_address,
)

_locks: dict[str, asyncio.Lock] = {}
# What plumbing one kind of attachment may fail with (reported as a WorkloadError).
PLUMBING_ERRORS = (CommandError, OSError, links.LinkError, nat.NatError, WireGuardError)
# Seconds between keepalives to a peer this node dials: a node behind NAT (hidden) keeps
# its way in open, as ThreeFold's clients set for laptops.
KEEPALIVE = 25


def tunnel_config(info: NetworkInfo) -> Config:
    """The network's WireGuard interface as its workload asks: its key, port and peers,
    address 100.64.A.B/16, one route for the whole ip_range. A peer with an endpoint is
    dialled, with keepalives; one without dials us."""
    wg = info.wireguard
    peers = [
        Peer(
            public_key=p["wireguard_public_key"],
            allowed_ips=tuple(p["allowed_ips"]),
            endpoint=p["endpoint"],
            keepalive=KEEPALIVE if p["endpoint"] else 0,
        )
        for p in wg.get("peers", [])
    ]
    return Config(
        private_key=wg["private_key"],
        listen_port=info.wireguard_listen_port,
        address=tunnel_address(info.subnet),
        routes=(IPv4Network(info.ip_range),),
        peers=peers,
    )


def network_lock(netid: str) -> asyncio.Lock:
    """Serialises everything done to one network (provision, attach, removal)."""
    return _locks.setdefault(netid, asyncio.Lock())


class AddressError(WorkloadError):
    """An attachment's address is refused; `field` is "ip", `rule` says why."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"ip: {rule}")
        self.rule = rule


@dataclass(frozen=True)
class _Kind:
    """How one kind of attachment is named, made and removed (in a thread: netlink)."""

    port: Callable[[str, int, str], str]  # (workload id, index, network) -> link on the bridge
    namespace: Callable[[str, str, str], str]  # (prefix, workload id, network's ns) -> ns
    plumb: Callable[[Attachment, NetworkInfo], None]
    unplumb: Callable[[str, str, str], None]  # (port, namespace, network's namespace)


def _plumb_veth(a: Attachment, info: NetworkInfo) -> None:
    ns = a.namespace
    netns.create(ns)
    links.ensure_veth(a.port, a.ifname, info.namespace, ns)
    links.set_master(a.port, info.bridge, info.namespace)
    links.set_up(a.port, info.namespace)
    links.set_up("lo", ns)
    links.set_addresses(a.ifname, [a.address], ns)
    links.set_up(a.ifname, ns)
    links.set_default_route(a.gateway, ns)
    # ping without CAP_NET_RAW (ICMP datagram sockets)
    netns.set_sysctl(ns, "net/ipv4/ping_group_range", "0 2147483647")


def _unplumb_veth(port: str, ns: str, net_ns: str) -> None:
    # The bridge's end first: a namespace's links go asynchronously after it is deleted,
    # and a network counts its bridge ports to know whether it is used.
    if netns.exists(net_ns):
        links.delete(port, net_ns)
    netns.delete(ns)


def _plumb_tap(a: Attachment, info: NetworkInfo) -> None:
    # The tap stays in the network's namespace; QEMU is started there to open it.
    links.ensure_tap(a.port, info.bridge, info.namespace)


def _unplumb_tap(port: str, _ns: str, net_ns: str) -> None:
    if netns.exists(net_ns):  # else it went with the namespace
        links.delete(port, net_ns)


_KINDS: dict[str, _Kind] = {
    "veth": _Kind(
        port=lambda wid, index, _network: veth_port(wid, index),
        namespace=lambda prefix, wid, _net_ns: machine_namespace(prefix, wid),
        plumb=_plumb_veth,
        unplumb=_unplumb_veth,
    ),
    "tap": _Kind(
        port=lambda wid, _index, network: taps.for_interface(wid, network).name,
        namespace=lambda _prefix, _wid, net_ns: net_ns,
        plumb=_plumb_tap,
        unplumb=_unplumb_tap,
    ),
}


def _kind(kind: str) -> _Kind:
    try:
        return _KINDS[kind]
    except KeyError:
        raise WorkloadError(f"network: attachments of kind {kind!r} are not supported") from None


class Networks:
    def __init__(
        self, data_dir: Path, prefix: str = "", control_plane: tuple[IPv4Address, ...] = ()
    ) -> None:
        self.state = NetworkState(data_dir)
        self.prefix = prefix
        self.control_plane = control_plane
        # Sockets in the agent's own namespace: the node's public side.
        self.wireguard = WireGuard(self.state.dir / "wireguard", prefix=prefix)

    # ---- names and state -------------------------------------------------------------

    def namespace(self, netid: str) -> str:
        return network_namespace(self.prefix, netid)

    def info(self, twin_id: int, name: str, **fields: object) -> NetworkInfo:
        """A network of `twin_id` named `name` as this node names its parts."""
        netid = network_id(twin_id, name)
        return NetworkInfo(
            netid=netid,
            twin_id=twin_id,
            name=name,
            namespace=self.namespace(netid),
            bridge=bridge_name(netid),
            **fields,  # type: ignore[arg-type]
        )

    def lookup(self, twin_id: int, name: str) -> NetworkInfo:
        """The network `name` of `twin_id` on this node; a WorkloadError if it is not here."""
        info = self.state.load(network_id(twin_id, name))
        if info is None or not netns.exists(info.namespace):
            raise WorkloadError(f"network '{name}' does not exist on this node (deploy it first)")
        return info

    def attachments(self, netid: str) -> list[Attachment]:
        return self.state.attachments(netid)

    async def taken_ports(self) -> list[int]:
        """Listen ports of the node's WireGuard interfaces, and those its networks
        reserve (one being built, or to be built again after a reboot)."""
        reserved = {info.wireguard_listen_port for info in self.state.infos()}
        return sorted((reserved | set(await self.wireguard.listen_ports())) - {0})

    def bridge_ports(self, info: NetworkInfo) -> list[str]:
        """Interfaces on the network's bridge (what is plugged into it)."""
        if not netns.exists(info.namespace):
            return []
        return links.ports(info.bridge, info.namespace)

    def in_use(self, info: NetworkInfo, ignore_user: str = "") -> bool:
        return (
            any(u != ignore_user for u in info.users)
            or bool(self.attachments(info.netid))
            or bool(self.bridge_ports(info))
        )

    # ---- networks (the network manager) ---------------------------------------------

    async def ensure(self, info: NetworkInfo) -> None:
        """Make the network's kernel objects (or confirm they are there)."""
        ns, bridge = info.namespace, info.bridge
        await asyncio.to_thread(netns.create, ns)

        def inside() -> None:
            links.set_up("lo", ns)
            links.ensure_bridge(bridge, ns)
            gateway = IPv4Interface(f"{info.gateway}/{info.network.prefixlen}")
            links.set_addresses(bridge, [gateway], ns)

        await asyncio.to_thread(inside)
        await nat.setup_host(list(self.control_plane))
        await nat.ensure_uplink(ns, uplink_name(info.netid))
        tunnel = interface_name(info.netid)
        await nat.apply_namespace_rules(
            ns, bridge, info.network, tunnel, IPv4Network(info.ip_range)
        )
        await self.wireguard.ensure(info.netid, ns, tunnel_config(info))

    async def check_port(self, info: NetworkInfo) -> None:
        """Refuse (`PortInUse`, naming it) a listen port another of the node's networks
        holds or reserves, before anything is changed."""
        port = info.wireguard_listen_port
        for other in self.state.infos():
            if other.netid != info.netid and other.wireguard_listen_port == port:
                raise PortInUse(port)
        if port in await self.wireguard.listen_ports():
            status = await self.wireguard.status(info.netid)
            if status is None or status.listen_port != port:
                raise PortInUse(port)

    async def teardown(self, netid: str, namespace: str | None = None) -> None:
        """Remove the network's namespace (and with it its bridge and veths), uplink and
        state."""
        ns = namespace or self.namespace(netid)
        # The uplink first: a deleted namespace's links disappear asynchronously.
        await nat.remove_uplink(uplink_name(netid))
        await self.wireguard.remove(netid, ns)
        await asyncio.to_thread(netns.delete, ns)
        self.state.forget(netid)

    async def release_if_unused(self, netid: str) -> bool:
        """Remove the network if nothing uses it any more (called with its lock held)."""
        info = self.state.load(netid)
        if info is None or await asyncio.to_thread(self.in_use, info):
            return False
        await self.teardown(netid, info.namespace)
        return True

    # ---- attachments (zmachines; later gateways and VMs) ----------------------------

    def check_address(self, info: NetworkInfo, ip: str, workload_id: str) -> IPv4Address:
        """`ip` as an address `workload_id` may take on the network (AddressError if not).
        Checked again under the network's lock by `attach`."""
        try:
            addr = ip_address(str(ip))
        except ValueError:
            raise AddressError(f"{ip!r} is not an IP") from None
        subnet = info.network
        if addr not in subnet:
            raise AddressError(f"{addr} is outside the subnet {subnet} of network '{info.name}'")
        if addr in (subnet.network_address, subnet.broadcast_address, info.gateway):
            raise AddressError(
                f"{addr} is reserved in {subnet} (network, broadcast or the gateway .1)"
            )
        if not isinstance(addr, IPv4Address):
            raise AddressError("only IPv4 is supported")
        for other in self.attachments(info.netid):
            if other.workload_id != workload_id and other.address.ip == addr:
                raise AddressError(
                    f"{addr} is already used by another machine on network '{info.name}'"
                )
        return addr

    def _attachment(
        self, info: NetworkInfo, workload_id: str, addr: IPv4Address, kind: str, index: int
    ) -> Attachment:
        how = _kind(kind)
        return Attachment(
            workload_id=workload_id,
            kind=kind,
            netid=info.netid,
            network=info.name,
            port=how.port(workload_id, index, info.name),
            namespace=how.namespace(self.prefix, workload_id, info.namespace),
            address=IPv4Interface(f"{addr}/{info.network.prefixlen}"),
            gateway=info.gateway,
        )

    async def attach(
        self,
        twin_id: int,
        network: str,
        workload_id: str,
        ip: str,
        kind: str = "veth",
        index: int = 0,
    ) -> Attachment:
        """Give `workload_id` interface `index` on `twin_id`'s network `network` at `ip`.
        Idempotent: attaching again (after a restart) makes what is missing."""
        netid = network_id(twin_id, network)
        async with network_lock(netid):
            info = self.lookup(twin_id, network)
            addr = self.check_address(info, ip, workload_id)
            attachment = self._attachment(info, workload_id, addr, kind, index)
            self.state.record(attachment)  # before the links: a crash leaves a record to undo
            try:
                await asyncio.to_thread(_KINDS[kind].plumb, attachment, info)
            except PLUMBING_ERRORS as exc:
                await self._unplumb(netid, workload_id, kind, index)
                raise WorkloadError(f"network '{network}': {exc}") from None
        return attachment

    async def detach(
        self, netid: str, workload_id: str, *, kind: str = "veth", index: int = 0
    ) -> None:
        """Remove what `attach` made (a no-op for what is gone) and the network itself if
        nothing uses it any more."""
        async with network_lock(netid):
            await self._unplumb(netid, workload_id, kind, index)
            await self.release_if_unused(netid)

    async def _unplumb(self, netid: str, workload_id: str, kind: str, index: int) -> None:
        # The names are derived from the workload id, so even an attachment made before
        # its record (or by an older agent) is removed.
        how = _kind(kind)
        info = self.state.load(netid)
        net_ns = info.namespace if info else self.namespace(netid)
        ns = how.namespace(self.prefix, workload_id, net_ns)
        port = how.port(workload_id, index, info.name if info else "")
        await asyncio.to_thread(how.unplumb, port, ns, net_ns)
        self.state.drop(netid, workload_id)
