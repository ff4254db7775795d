"""`network`: a twin's private network on this node.

The manager checks a network workload's data and decides when the network exists;
what it is made of and how workloads attach to it is `zos.node.networks` (the node's
`Networks`, `NodeServices.networks`), its WireGuard interface included: the key,
port and peers of the workload, changed in place by an update (peers one by one, so
the tunnels that stay never drop); a port another network holds is refused naming it,
and nothing changes.

A network is shared by name across one twin's deployments: every network workload
that names it is a user, and so is every workload attached to it. It is removed when
the last user goes. What users there are is kept in `<data>/networks/<netid>.json`
(rebuilt by the engine's provisioning after a loss).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from ipaddress import IPv4Network, ip_network
from typing import Any

from zos.gridtypes.names import network_id
from zos.node.networks import NetworkInfo, Networks, network_lock
from zos.node.networks.service import PLUMBING_ERRORS, tunnel_config
from zos.node.workloads.base import Manager, WorkloadContext, WorkloadError
from zos.primitives import links, nat, netns
from zos.primitives.wireguard import PortInUse, WireGuardError

# ---- validation ----------------------------------------------------------------------


def _field(data: Any, name: str, default: Any = None) -> Any:
    if isinstance(data, dict):
        return data.get(name, default)
    return getattr(data, name, default)


def _wg_key(value: str, field_name: str) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise WorkloadError(f"{field_name}: must be a base64 WireGuard key (32 bytes)")


def _net(value: str, field_name: str) -> IPv4Network:
    try:
        net = ip_network(str(value), strict=False)
    except ValueError:
        raise WorkloadError(f"{field_name}: {value!r} is not an IP network") from None
    if not isinstance(net, IPv4Network):
        raise WorkloadError(f"{field_name}: only IPv4 networks are supported")
    return net


PRIVATE_RANGES = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SHARED = IPv4Network("100.64.0.0/10")  # CGNAT space, where the uplinks' range lies


def _check_subnet(subnet: IPv4Network) -> None:
    """A private range that is not the node's own: not its uplinks, nor a network one of
    its interfaces is on (the grid's bridge, say), where the tenant's gateway would
    shadow the node's neighbours."""
    if subnet.overlaps(nat.UPLINK_RANGE) and subnet.subnet_of(_SHARED):
        raise WorkloadError(
            f"subnet: {subnet} overlaps {nat.UPLINK_RANGE}, the range of the node's uplinks"
        )
    if not any(subnet.subnet_of(r) for r in PRIVATE_RANGES):
        raise WorkloadError(
            f"subnet: {subnet} must be a private range, inside "
            + ", ".join(map(str, PRIVATE_RANGES))
        )
    for addr in links.all_addresses():
        if subnet.overlaps(addr.network):
            raise WorkloadError(f"subnet: {subnet} overlaps {addr.network}, a network of this node")


def parse(ctx: WorkloadContext) -> NetworkInfo:
    """Check the network's data (the rules a node needs beyond gridtypes validation)."""
    data = ctx.workload.data
    subnet = _net(_field(data, "subnet", ""), "subnet")
    ip_range = _net(_field(data, "ip_range", ""), "ip_range")
    if not subnet.subnet_of(ip_range):
        raise WorkloadError(f"subnet: {subnet} is not inside ip_range {ip_range}")
    if subnet.prefixlen > 29:
        raise WorkloadError(f"subnet: {subnet} is too small (at most /29)")
    _check_subnet(subnet)
    _wg_key(_field(data, "wireguard_private_key", ""), "wireguard_private_key")
    port = int(_field(data, "wireguard_listen_port", 0) or 0)
    if not 0 < port < 65536:
        raise WorkloadError(f"wireguard_listen_port: {port} is not a port (1-65535)")
    peers = []
    for i, peer in enumerate(_field(data, "peers", []) or []):
        _wg_key(_field(peer, "wireguard_public_key", ""), f"peers[{i}].wireguard_public_key")
        _net(_field(peer, "subnet", ""), f"peers[{i}].subnet")
        allowed = list(_field(peer, "allowed_ips", []) or [])
        for j, ip in enumerate(allowed):
            _net(ip, f"peers[{i}].allowed_ips[{j}]")
        peers.append(
            {
                "subnet": str(_field(peer, "subnet")),
                "wireguard_public_key": _field(peer, "wireguard_public_key"),
                "allowed_ips": [str(a) for a in allowed],
                "endpoint": _field(peer, "endpoint", "") or "",
            }
        )
    info = ctx.node.networks.info(
        ctx.twin_id,
        ctx.workload.name,
        subnet=str(subnet),
        ip_range=str(ip_range),
        wireguard_listen_port=port,
        # The private key stays on this node only (its data directory, mode 0700).
        wireguard={"private_key": _field(data, "wireguard_private_key"), "peers": peers},
    )
    try:
        tunnel_config(info)  # every peer's endpoint and allowed_ips, before anything is built
    except WireGuardError as e:
        raise WorkloadError(str(e)) from None
    return info


def _port_in_use(e: PortInUse) -> WorkloadError:
    return WorkloadError(f"wireguard_listen_port: {e.port} is already in use on this node")


class NetworkManager(Manager):
    type = "network"
    rank = 40
    shared = True  # machines and gateways of other deployments attach to it by name
    updatable = True

    @property
    def networks(self) -> Networks:
        return self.node.networks

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        wanted = parse(ctx)
        wid = ctx.workload_id
        nets = self.networks
        async with network_lock(wanted.netid):
            have = nets.state.load(wanted.netid)
            existed = have is not None and netns.exists(wanted.namespace)
            try:
                await nets.check_port(wanted)
            except PortInUse as e:
                raise _port_in_use(e) from None
            if (
                have is not None
                and have.subnet != wanted.subnet
                and await asyncio.to_thread(nets.in_use, have, wid)
            ):
                raise WorkloadError(
                    f"subnet: network '{wanted.name}' exists on this node with subnet "
                    f"{have.subnet} and is in use; it cannot become {wanted.subnet}"
                )
            wanted.users = sorted({*(have.users if have else []), wid})
            # Recorded before building, so a crash half way is found and finished (or removed).
            nets.state.save(wanted)
            try:
                await nets.ensure(wanted)
            except PLUMBING_ERRORS as exc:
                if not existed:
                    await nets.teardown(wanted.netid, wanted.namespace)
                elif have is not None:
                    nets.state.save(have)
                    with contextlib.suppress(*PLUMBING_ERRORS):
                        await nets.ensure(have)  # its walls and tunnel as they were
                if isinstance(exc, PortInUse):
                    raise _port_in_use(exc) from None
                raise WorkloadError(f"network {wanted.name}: {exc}") from None
        return {}

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        netid = network_id(ctx.twin_id, ctx.workload.name)
        async with network_lock(netid):
            await self._drop_user(netid, ctx.workload_id)

    async def _drop_user(self, netid: str, wid: str) -> None:
        nets = self.networks
        info = nets.state.load(netid)
        if info is None:
            if netns.exists(nets.namespace(netid)):
                await nets.teardown(netid)
            return
        info.users = [u for u in info.users if u != wid]
        nets.state.save(info)
        await nets.release_if_unused(netid)

    async def cleanup(self, keep: set[str]) -> None:
        nets = self.networks
        for netid in nets.state.netids():
            async with network_lock(netid):
                info = nets.state.load(netid)
                if info is None:
                    continue
                gone = [u for u in info.users if u not in keep]
                if gone:
                    info.users = [u for u in info.users if u in keep]
                    nets.state.save(info)
                await nets.release_if_unused(netid)
        for netid in nets.wireguard.netids():  # an interface whose network was lost
            async with network_lock(netid):
                if nets.state.load(netid) is None:
                    await nets.wireguard.remove(netid, nets.namespace(netid))
