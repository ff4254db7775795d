"""`network`: a twin's private network on this node.

Per network (id = base58(md5("<twin>:<name>"))[:13], see gridtypes.names):
namespace `n-<netid>` holding bridge `b-<netid>` with the subnet's `.1`, an uplink
veth to the host (`u-<netid>` ↔ `pub`) with NAT out, and nftables walls around it
(`zos.primitives.nat`). WireGuard fields are validated and kept for a later issue.

A network is shared by name across one twin's deployments: every network workload
that names it is a user, and so is every zmachine attached to its bridge. It is
removed when the last user goes. What users there are is kept in
`<data>/networks/<netid>.json` (rebuilt by the engine's provisioning after a loss).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_network
from pathlib import Path
from typing import Any

from zos.gridtypes.names import network_id
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.primitives import links, nat, netns
from zos.primitives.command import CommandError

_locks: dict[str, asyncio.Lock] = {}


def network_lock(netid: str) -> asyncio.Lock:
    """Serialises everything done to one network (provision, attach, removal)."""
    return _locks.setdefault(netid, asyncio.Lock())


def namespace_name(node: NodeServices, netid: str) -> str:
    # A prefix lets several nodes share one machine's /var/run/netns (zos grid up).
    return f"{node.netns_prefix}n-{netid}"


def bridge_name(netid: str) -> str:
    return f"b-{netid}"


def uplink_name(netid: str) -> str:
    return f"{nat.UPLINK_PREFIX}{netid}"


@dataclass
class NetworkInfo:
    """What a node keeps about one network (and what a zmachine needs to join it)."""

    netid: str
    twin_id: int
    name: str
    subnet: str
    ip_range: str
    namespace: str
    bridge: str
    wireguard_listen_port: int = 0
    wireguard: dict[str, Any] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @property
    def gateway(self) -> IPv4Address:
        return self.network[1]


def state_dir(node: NodeServices) -> Path:
    path = node.data_dir / "networks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(node: NodeServices, netid: str) -> NetworkInfo | None:
    try:
        raw = json.loads((state_dir(node) / f"{netid}.json").read_text())
    except FileNotFoundError:
        return None
    return NetworkInfo(**raw)


def save(node: NodeServices, info: NetworkInfo) -> None:
    path = state_dir(node) / f"{info.netid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info), indent=1))
    os.replace(tmp, path)


def lookup(node: NodeServices, twin_id: int, name: str) -> NetworkInfo:
    """The network `name` of `twin_id` on this node; a WorkloadError if it is not here."""
    info = load(node, network_id(twin_id, name))
    if info is None or not netns.exists(info.namespace):
        raise WorkloadError(f"network '{name}' does not exist on this node (deploy it first)")
    return info


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
    netid = network_id(ctx.twin_id, ctx.workload.name)
    return NetworkInfo(
        netid=netid,
        twin_id=ctx.twin_id,
        name=ctx.workload.name,
        subnet=str(subnet),
        ip_range=str(ip_range),
        namespace=namespace_name(ctx.node, netid),
        bridge=bridge_name(netid),
        wireguard_listen_port=port,
        # Kept for the WireGuard issue; the private key stays on this node only.
        wireguard={"private_key": _field(data, "wireguard_private_key"), "peers": peers},
    )


# ---- kernel objects ------------------------------------------------------------------


def attached(info: NetworkInfo) -> list[str]:
    """Interfaces of zmachines on the network's bridge (besides nothing else)."""
    if not netns.exists(info.namespace):
        return []
    return links.ports(info.bridge, info.namespace)


async def build(info: NetworkInfo, control: list[IPv4Address]) -> None:
    ns, bridge = info.namespace, info.bridge
    await asyncio.to_thread(netns.create, ns)

    def inside() -> None:
        links.set_up("lo", ns)
        links.ensure_bridge(bridge, ns)
        links.set_addresses(bridge, [IPv4Interface(f"{info.gateway}/{info.network.prefixlen}")], ns)

    await asyncio.to_thread(inside)
    await nat.setup_host(control)
    await nat.ensure_uplink(ns, uplink_name(info.netid))
    await nat.apply_namespace_rules(ns, bridge, info.network, info.wireguard_listen_port)


async def teardown(node: NodeServices, netid: str, namespace: str | None = None) -> None:
    """Remove the network's namespace (and with it its bridge and veths), uplink and state."""
    ns = namespace or namespace_name(node, netid)
    # The uplink first: a deleted namespace's links disappear asynchronously.
    await nat.remove_uplink(uplink_name(netid))
    await asyncio.to_thread(netns.delete, ns)
    with contextlib.suppress(FileNotFoundError):
        (state_dir(node) / f"{netid}.json").unlink()


async def release_if_unused(node: NodeServices, netid: str) -> bool:
    """Remove the network if no workload uses it any more (called after a detach)."""
    info = load(node, netid)
    if info is None or info.users or await asyncio.to_thread(attached, info):
        return False
    await teardown(node, netid, info.namespace)
    return True


class NetworkManager(Manager):
    type = "network"
    updatable = True

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        wanted = parse(ctx)
        wid = ctx.workload_id
        async with network_lock(wanted.netid):
            have = load(self.node, wanted.netid)
            existed = have is not None and netns.exists(wanted.namespace)
            if have is not None and have.subnet != wanted.subnet:
                others = [u for u in have.users if u != wid]
                if others or await asyncio.to_thread(attached, have):
                    raise WorkloadError(
                        f"subnet: network '{wanted.name}' exists on this node with subnet "
                        f"{have.subnet} and is in use; it cannot become {wanted.subnet}"
                    )
            wanted.users = sorted({*(have.users if have else []), wid})
            # Recorded before building, so a crash half way is found and finished (or removed).
            save(self.node, wanted)
            try:
                await build(wanted, list(self.node.control_plane))
            except (CommandError, OSError, links.LinkError, nat.NatError) as exc:
                if not existed:
                    await teardown(self.node, wanted.netid, wanted.namespace)
                elif have is not None:
                    save(self.node, have)
                raise WorkloadError(f"network {wanted.name}: {exc}") from None
        return {}

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        netid = network_id(ctx.twin_id, ctx.workload.name)
        async with network_lock(netid):
            await self._drop_user(netid, ctx.workload_id)

    async def _drop_user(self, netid: str, wid: str) -> None:
        info = load(self.node, netid)
        if info is None:
            if netns.exists(namespace_name(self.node, netid)):
                await teardown(self.node, netid)
            return
        info.users = [u for u in info.users if u != wid]
        save(self.node, info)
        await release_if_unused(self.node, netid)

    async def cleanup(self, keep: set[str]) -> None:
        for path in sorted(state_dir(self.node).glob("*.json")):
            netid = path.stem
            async with network_lock(netid):
                info = load(self.node, netid)
                if info is None:
                    continue
                gone = [u for u in info.users if u not in keep]
                if gone:
                    info.users = [u for u in info.users if u in keep]
                    save(self.node, info)
                await release_if_unused(self.node, netid)
