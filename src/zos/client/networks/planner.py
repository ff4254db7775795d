"""Plan a network over several nodes as ThreeFold's clients do (reference/network.md).

- Every node gets a /24 of the range (x.y.2.0 upward), a WireGuard key and a listen port
  in 1024-32767 its node has not taken; each user access (laptop) a /24 and a key.
- Reachable nodes peer with each other: allowed_ips = [peer's /24, its 100.64.A.B/32],
  plus the /24 and tunnel IP of everything that goes through that peer (hidden nodes and
  laptops behind the access node).
- A hidden node has one peer, the access node, with [ip_range, 100.64.0.0/16]; the access
  node lists each hidden node and each laptop as a peer without endpoint.
- Updates keep what exists (subnets, keys, ports: no tunnel drops); only the nodes whose
  workload data or metadata changes get version + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network

from zos.client.networks import wgkeys
from zos.client.networks.addressing import (
    TUNNEL_RANGE,
    candidate_subnets,
    check_ip_range,
    subnet_capacity,
    tunnel_ip,
)
from zos.client.networks.endpoints import PublicTest, endpoint_host, is_public
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import (
    Access,
    AccessRequest,
    NetworkPlan,
    NetworkRequest,
    NodeInfo,
    NodeNetwork,
    Randomness,
    SystemRandomness,
)
from zos.client.networks.stored import metadata_for, seal_private_key
from zos.gridtypes.names import name_error
from zos.gridtypes.workloads.network import Network, Peer

PORT_RANGE = range(1024, 32768)  # above the privileged ports, below the ephemeral ones
MAX_ACCESS_NAME = 64


@dataclass
class _Node:
    """A node while the plan is built."""

    node_id: int
    subnet: IPv4Network
    private_key: str
    port: int
    host: str  # "" hidden
    spanned: bool  # a node of the request (not only the access node)
    before: NodeNetwork | None

    @property
    def public_key(self) -> str:
        return wgkeys.public_key(self.private_key)


def _check_node_id(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise NetworkPlanError(field, f"{value!r} is not a node id (a positive integer)")
    return value


def _check_ports(info: NodeInfo, field: str) -> set[int]:
    ports = info.taken_ports
    if isinstance(ports, (str, bytes)) or not isinstance(ports, Sequence):
        raise NetworkPlanError(f"{field}.taken_ports", "must be a list of ports")
    for i, p in enumerate(ports):
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < 65536:
            raise NetworkPlanError(f"{field}.taken_ports[{i}]", f"{p!r} is not a port")
    return set(ports)


def _check_infos(infos: Sequence[NodeInfo], field: str) -> dict[int, NodeInfo]:
    out: dict[int, NodeInfo] = {}
    for i, info in enumerate(infos):
        if not isinstance(info, NodeInfo):
            raise NetworkPlanError(f"{field}[{i}]", "must be a NodeInfo")
        nid = _check_node_id(info.node_id, f"{field}[{i}].node_id")
        if nid in out:
            raise NetworkPlanError(f"{field}[{i}].node_id", f"node {nid} is listed twice")
        _check_ports(info, f"{field}[{i}]")
        out[nid] = info
    return out


def _check_accesses(accesses: Sequence[AccessRequest]) -> list[AccessRequest]:
    seen: set[str] = set()
    out = []
    for i, req in enumerate(accesses):
        field = f"accesses[{i}]"
        if not isinstance(req, AccessRequest):
            raise NetworkPlanError(field, "must be an AccessRequest")
        name = req.name
        if not isinstance(name, str) or not name or len(name) > MAX_ACCESS_NAME:
            raise NetworkPlanError(f"{field}.name", f"must be 1 to {MAX_ACCESS_NAME} characters")
        if not name.isascii() or not name.isprintable() or " " in name:
            raise NetworkPlanError(f"{field}.name", f"{name!r}: printable ASCII without spaces")
        if name in seen:
            raise NetworkPlanError(f"{field}.name", f"access '{name}' is listed twice")
        seen.add(name)
        if req.node_id:
            _check_node_id(req.node_id, f"{field}.node_id")
        key = wgkeys.check_key(req.public_key, f"{field}.public_key") if req.public_key else ""
        out.append(replace(req, public_key=key))
    return out


class _Subnets:
    """Hands out the lowest free /24s of the range."""

    def __init__(self, ip_range: IPv4Network, taken: set[IPv4Network], needed: int) -> None:
        self._free: Iterator[IPv4Network] = (
            s for s in candidate_subnets(ip_range) if s not in taken
        )
        self._range = ip_range
        self._needed = needed

    def next(self) -> IPv4Network:
        subnet = next(self._free, None)
        if subnet is None:
            raise NetworkPlanError(
                "nodes",
                f"{self._needed} nodes and user accesses need a /24 each and ip_range "
                f"{self._range} holds {subnet_capacity(self._range)} "
                f"({next(candidate_subnets(self._range))} upward)",
            )
        return subnet


class _Keys:
    """Makes private keys whose public keys no one in the network has yet (a repeated
    key could only come from a broken or reused randomness source, never silently)."""

    def __init__(self, rng: Randomness, used: set[str]) -> None:
        self._rng = rng
        self._used = used

    def new(self) -> str:
        while True:
            private = wgkeys.private_key_from(self._rng.token_bytes(wgkeys.KEY_SIZE))
            public = wgkeys.public_key(private)
            if public not in self._used:
                self._used.add(public)
                return private


def _free_port(info: NodeInfo, rng: Randomness, field: str) -> int:
    taken = set(info.taken_ports)
    free = [p for p in PORT_RANGE if p not in taken]
    if not free:
        raise NetworkPlanError(f"{field}.taken_ports", f"node {info.node_id} has no free port")
    return free[rng.below(len(free))]


def plan_network(
    request: NetworkRequest,
    current: NetworkPlan | None = None,
    *,
    owner_public_key: bytes,
    rng: Randomness | None = None,
    public: PublicTest = is_public,
) -> NetworkPlan:
    """The plan of `request`, changing of `current` only what must change.

    `owner_public_key`: the ed25519 key of the twin that owns the network (new laptops'
    private keys are sealed to it). `rng`: where keys and ports come from (the system's
    by default). `public`: which addresses count as public endpoints (a local grid passes
    one that accepts its bridge's addresses too). Raises NetworkPlanError naming the field.
    """
    rng = rng or SystemRandomness()
    reason = name_error(request.name) if isinstance(request.name, str) else "must be a string"
    if reason:
        raise NetworkPlanError("name", reason)
    ip_range = check_ip_range(request.ip_range)
    if not request.nodes:
        raise NetworkPlanError("nodes", "a network needs at least one node")
    spanned = _check_infos(request.nodes, "nodes")
    candidates = _check_infos(request.access_candidates, "access_candidates")
    wanted = _check_accesses(request.accesses)
    if current is not None:
        if current.name != request.name:
            raise NetworkPlanError("name", f"the current plan is network '{current.name}'")
        if IPv4Network(current.ip_range) != ip_range:
            raise NetworkPlanError(
                "ip_range",
                f"network '{request.name}' uses {current.ip_range}; a range cannot change",
            )
    before = {n.node_id: n for n in current.nodes} if current else {}
    had = {a.name: a for a in current.accesses} if current else {}

    def host_of(nid: int) -> str:
        info = spanned.get(nid) or candidates.get(nid)
        if info is None:  # a former access node no longer listed: as last seen
            return before[nid].endpoint_host
        field = "nodes" if nid in spanned else "access_candidates"
        return endpoint_host(
            info.public_config, info.interfaces, public=public, field=f"{field}[node {nid}]"
        )

    hosts = {nid: host_of(nid) for nid in spanned}
    hidden = [nid for nid in spanned if not hosts[nid]]
    needs_access = bool(wanted or request.access_node) or (bool(hidden) and len(spanned) > 1)
    access_node = 0
    if needs_access:
        access_node = _choose_access_node(
            request, spanned, candidates, before, current, hosts, host_of
        )
    if access_node and access_node not in hosts:
        hosts[access_node] = host_of(access_node)

    # Nodes: the ones there were keep subnet, key and port; new ones get fresh ones.
    node_ids = list(spanned) + ([access_node] if access_node and access_node not in spanned else [])
    kept_accesses = {a.name: a for a in had.values() if a.name in {r.name for r in wanted}}
    taken = {IPv4Network(before[n].subnet) for n in node_ids if n in before}
    taken |= {IPv4Network(a.subnet) for a in kept_accesses.values()}
    subnets = _Subnets(ip_range, taken, len(node_ids) + len(wanted))
    used = {before[n].public_key for n in node_ids if n in before}
    used |= {a.public_key for a in kept_accesses.values()} | {r.public_key for r in wanted}
    keys = _Keys(rng, used)
    nodes: dict[int, _Node] = {}
    for nid in node_ids:
        old = before.get(nid)
        info = spanned.get(nid) or candidates.get(nid)
        if old is not None:
            nodes[nid] = _Node(
                nid,
                IPv4Network(old.subnet),
                old.data.wireguard_private_key,
                old.listen_port,
                hosts[nid],
                nid in spanned,
                old,
            )
        else:
            assert info is not None
            field = "nodes" if nid in spanned else "access_candidates"
            nodes[nid] = _Node(
                nid,
                subnets.next(),
                keys.new(),
                _free_port(info, rng, f"{field}[node {nid}]"),
                hosts[nid],
                nid in spanned,
                None,
            )

    accesses = _plan_accesses(wanted, had, nodes, access_node, subnets, owner_public_key, keys)
    _check_unique_keys(nodes, accesses)

    out = []
    for node in nodes.values():
        data = _network_data(node, nodes, accesses, access_node, ip_range)
        metadata = metadata_for(node.node_id, accesses)
        old = node.before
        if old is None:
            change, version = "create", 0
        else:
            if _same_network(old.data, data):
                data = old.data  # as deployed (peer order is no change)
            if old.data is data and old.metadata == metadata:
                change, version = "keep", old.version
            else:
                change, version = "update", old.version + 1
        out.append(
            NodeNetwork(
                node_id=node.node_id,
                subnet=str(node.subnet),
                public_key=node.public_key,
                listen_port=node.port,
                endpoint_host=node.host,
                hidden=not node.host,
                is_access_node=node.node_id == access_node,
                data=data,
                metadata=metadata,
                version=version,
                change=change,  # type: ignore[arg-type]
            )
        )
    return NetworkPlan(
        name=request.name,
        ip_range=str(ip_range),
        access_node=access_node,
        nodes=tuple(sorted(out, key=lambda n: IPv4Network(n.subnet))),
        accesses=tuple(sorted(accesses, key=lambda a: IPv4Network(a.subnet))),
        removed=tuple(sorted(set(before) - set(nodes))),
    )


def _first_reachable(hosts: list[tuple[int, str]]) -> int:
    """The first node with an IPv4 endpoint, else the first with an IPv6 one (laptops
    mostly have IPv4 only), else 0."""
    for want_v6 in (False, True):
        for nid, host in hosts:
            if host and host.startswith("[") == want_v6:
                return nid
    return 0


def _choose_access_node(
    request: NetworkRequest,
    spanned: dict[int, NodeInfo],
    candidates: dict[int, NodeInfo],
    before: dict[int, NodeNetwork],
    current: NetworkPlan | None,
    hosts: dict[int, str],
    host_of: Callable[[int], str],
) -> int:
    """The network's access node: the one asked for; else the current one while it can
    still be one (laptops keep their config); else a reachable node of the network,
    IPv4 first; else one of the candidates (public nodes the caller offers)."""
    if request.access_node:
        nid = _check_node_id(request.access_node, "access_node")
        if nid not in spanned and nid not in candidates:
            raise NetworkPlanError(
                "access_node", f"node {nid} is neither in nodes nor in access_candidates"
            )
        if not host_of(nid):
            raise NetworkPlanError(
                "access_node", f"node {nid} is hidden (no public IPv4 or IPv6 endpoint)"
            )
        return nid
    if current is not None and current.access_node in before and host_of(current.access_node):
        return current.access_node
    nid = _first_reachable([(n, hosts[n]) for n in spanned])
    nid = nid or _first_reachable([(c, host_of(c)) for c in candidates if c not in spanned])
    if nid:
        return nid
    hidden = [n for n in spanned if not hosts[n]]
    if hidden and len(spanned) > 1:
        raise NetworkPlanError(
            "nodes",
            f"node {hidden[0]} is hidden (no public IPv4 or IPv6 endpoint) and network "
            f"'{request.name}' has no node that can be its access node: add a node with a "
            "public address, or offer one in access_candidates",
        )
    raise NetworkPlanError(
        "accesses",
        f"a user access needs an access node with a public address and network "
        f"'{request.name}' has none: add one, or offer one in access_candidates",
    )


def _plan_accesses(
    wanted: list[AccessRequest],
    had: dict[str, Access],
    nodes: dict[int, _Node],
    access_node: int,
    subnets: _Subnets,
    owner_public_key: bytes,
    keys: _Keys,
) -> list[Access]:
    out = []
    for i, req in enumerate(wanted):
        field = f"accesses[{i}]"
        old = had.get(req.name)
        if req.node_id:
            node = nodes.get(req.node_id)
            if node is None:
                raise NetworkPlanError(
                    f"{field}.node_id", f"node {req.node_id} is not a node of this network"
                )
            if not node.host:
                raise NetworkPlanError(
                    f"{field}.node_id",
                    f"node {req.node_id} is hidden; a laptop dials a node with a public address",
                )
            via = req.node_id
        elif old is not None and old.node_id in nodes and nodes[old.node_id].host:
            via = old.node_id  # keeps working with the config the laptop has
        else:
            via = access_node
        if old is not None and (not req.public_key or req.public_key == old.public_key):
            access = replace(old, node_id=via)
            if access.private_key and not access.sealed_private_key:
                # read in clear from a ThreeFold client's metadata: sealed from now on
                sealed = seal_private_key(owner_public_key, access.private_key)
                access = replace(access, sealed_private_key=sealed)
            out.append(access)
            continue
        subnet = IPv4Network(old.subnet) if old is not None else subnets.next()
        if req.public_key:
            out.append(Access(req.name, str(subnet), req.public_key, via))
            continue
        private = keys.new()
        out.append(
            Access(
                name=req.name,
                subnet=str(subnet),
                public_key=wgkeys.public_key(private),
                node_id=via,
                sealed_private_key=seal_private_key(owner_public_key, private),
                private_key=private,
            )
        )
    return out


def _check_unique_keys(nodes: dict[int, _Node], accesses: list[Access]) -> None:
    """WireGuard tells peers apart by key only: one key, one peer."""
    seen = {n.public_key: f"node {n.node_id}" for n in nodes.values()}
    for i, a in enumerate(accesses):
        if a.public_key in seen:
            raise NetworkPlanError(
                f"accesses[{i}].public_key", f"is already the key of {seen[a.public_key]}"
            )
        seen[a.public_key] = f"access '{a.name}'"


def _canonical(data: Network) -> dict[str, object]:
    raw = data.to_dict()
    raw["peers"] = sorted(
        (p["wireguard_public_key"], p["subnet"], p["endpoint"], tuple(sorted(p["allowed_ips"])))
        for p in raw["peers"]
    )
    return raw


def _same_network(old: Network, new: Network) -> bool:
    """The same configuration: WireGuard does not care in which order peers or their
    allowed_ips come."""
    return _canonical(old) == _canonical(new)


def _routes(subnet: IPv4Network | str) -> list[str]:
    return [str(subnet), tunnel_ip(subnet)]


def _network_data(
    node: _Node,
    nodes: dict[int, _Node],
    accesses: list[Access],
    access_node: int,
    ip_range: IPv4Network,
) -> Network:
    old = node.before.data if node.before is not None else None
    mycelium = old.mycelium if old is not None else None  # kept as it was deployed

    def behind(nid: int) -> list[tuple[IPv4Network, str]]:
        """(subnet, key) of what reaches the network through node `nid`."""
        out = [
            (n.subnet, n.public_key) for n in nodes.values() if not n.host and nid == access_node
        ]
        out += [(IPv4Network(a.subnet), a.public_key) for a in accesses if a.node_id == nid]
        return sorted(out)

    peers: list[Peer] = []
    if not node.host:
        via = nodes.get(access_node)
        if via is not None:
            peers.append(
                Peer(
                    subnet=str(via.subnet),
                    wireguard_public_key=via.public_key,
                    allowed_ips=[str(ip_range), str(TUNNEL_RANGE)],
                    endpoint=f"{via.host}:{via.port}",
                )
            )
    else:
        for other in sorted(nodes.values(), key=lambda n: n.subnet):
            if other is node or not other.host:
                continue
            allowed = _routes(other.subnet)
            for subnet, _ in behind(other.node_id):
                allowed += _routes(subnet)
            peers.append(
                Peer(
                    subnet=str(other.subnet),
                    wireguard_public_key=other.public_key,
                    allowed_ips=allowed,
                    endpoint=f"{other.host}:{other.port}",
                )
            )
        for subnet, key in behind(node.node_id):
            peers.append(
                Peer(subnet=str(subnet), wireguard_public_key=key, allowed_ips=_routes(subnet))
            )
    return Network(
        ip_range=str(ip_range),
        subnet=str(node.subnet),
        wireguard_private_key=node.private_key,
        wireguard_listen_port=node.port,
        peers=peers,
        mycelium=mycelium,
    )
