"""Where a network's plan is kept: in its `network` workloads, nowhere else.

The workload data holds each node's subnet, key, port and peers. User accesses are kept
in the workload metadata as ThreeFold's clients keep them,
`{"version":3,"user_accesses":[{"subnet","private_key","node_id"}]}`, with these
differences: each access is listed in the metadata of the node it goes through only (so
adding one changes no other node's metadata), `private_key` is always "" and the
laptop's private key is in `sealed_private_key` (base64 of a sealed box to the owner's
ed25519 key, `zos.identity.seal`, that only the owner's key opens); `name` and
`public_key` are added (a teammate's access has only those, no key of any kind).
A ThreeFold client's metadata (clear `private_key`) is read, and sealed when rewritten.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any

from zos.client.networks import wgkeys
from zos.client.networks.addressing import check_ip_range, check_subnet
from zos.client.networks.endpoints import split_endpoint
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import Access, NetworkPlan, NodeNetwork
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.workload import Workload
from zos.gridtypes.workloads.network import Network
from zos.identity import Identity, SealError, open_sealed, seal

METADATA_VERSION = 3


def seal_private_key(owner_public_key: bytes, private_key: str) -> str:
    """base64 of the laptop's 32-byte private key sealed to the owner."""
    return base64.b64encode(
        seal(owner_public_key, wgkeys.key_bytes(private_key, "private_key"))
    ).decode()


def open_private_key(owner: Identity, access: Access) -> str:
    """The laptop's private key of an access made by the planner, opened with the owner's key."""
    if access.private_key:
        return access.private_key
    if not access.sealed_private_key:
        raise NetworkPlanError(
            f"accesses.{access.name}",
            "was granted by its public key: its private key is the teammate's own",
        )
    try:
        raw = open_sealed(owner, base64.b64decode(access.sealed_private_key, validate=True))
    except (SealError, binascii.Error, ValueError):
        raise NetworkPlanError(
            f"accesses.{access.name}.sealed_private_key",
            "cannot be opened with this key (not the network owner's, or altered)",
        ) from None
    return wgkeys.check_key(base64.b64encode(raw).decode(), f"accesses.{access.name}")


def metadata_for(node_id: int, accesses: Sequence[Access]) -> str:
    """The metadata of a node's network workload: the accesses that go through it."""
    entries = [
        {
            "subnet": a.subnet,
            "private_key": "",
            "node_id": a.node_id,
            "name": a.name,
            "public_key": a.public_key,
            "sealed_private_key": a.sealed_private_key,
        }
        for a in accesses
        if a.node_id == node_id
    ]
    return json.dumps(
        {"version": METADATA_VERSION, "user_accesses": entries}, separators=(",", ":")
    )


def _access_entry(raw: Any, ip_range: IPv4Network, node_id: int, field: str) -> Access:
    if not isinstance(raw, Mapping):
        raise NetworkPlanError(field, "must be an object")
    subnet = str(check_subnet(raw.get("subnet"), ip_range, f"{field}.subnet"))
    private = raw.get("private_key") or ""
    public = raw.get("public_key") or ""
    sealed = raw.get("sealed_private_key") or ""
    if private:
        private = wgkeys.check_key(private, f"{field}.private_key")
        derived = wgkeys.public_key(private)
        if public and wgkeys.check_key(public, f"{field}.public_key") != derived:
            raise NetworkPlanError(f"{field}.public_key", "is not the key of private_key")
        public = derived
    elif public:
        public = wgkeys.check_key(public, f"{field}.public_key")
    else:
        raise NetworkPlanError(field, "has neither private_key nor public_key")
    if sealed:
        try:
            base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError):
            raise NetworkPlanError(f"{field}.sealed_private_key", "is not base64") from None
    owner_node = raw.get("node_id", node_id)
    if not isinstance(owner_node, int) or isinstance(owner_node, bool) or owner_node <= 0:
        raise NetworkPlanError(f"{field}.node_id", f"{owner_node!r} is not a node id")
    name = raw.get("name") or ""
    if not isinstance(name, str):
        raise NetworkPlanError(f"{field}.name", "must be a string")
    return Access(
        name=name or unnamed_access(subnet),
        subnet=subnet,
        public_key=public,
        node_id=owner_node,
        sealed_private_key=str(sealed),
        private_key=private,
    )


def unnamed_access(subnet: str) -> str:
    """The name of an access some other client made without one: `access-<third octet>`."""
    return f"access-{IPv4Network(subnet).network_address.packed[2]}"


def read_metadata(
    text: str, ip_range: IPv4Network, node_id: int, field: str = "metadata"
) -> list[Access]:
    """The user accesses a network workload's metadata lists (ours or a ThreeFold client's)."""
    if not text:
        return []
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise NetworkPlanError(field, f"is not JSON ({e})") from None
    if not isinstance(raw, Mapping):
        raise NetworkPlanError(field, "must be a JSON object")
    entries = raw.get("user_accesses")
    if entries is None:  # absent or null: no accesses
        entries = []
    if not isinstance(entries, list):
        raise NetworkPlanError(f"{field}.user_accesses", "must be a list")
    return [
        _access_entry(e, ip_range, node_id, f"{field}.user_accesses[{i}]")
        for i, e in enumerate(entries)
    ]


def _add_access(accesses: dict[str, Access], access: Access, field: str) -> None:
    """One access per subnet: the same one may be listed by several nodes (ThreeFold's
    clients list it in every node's metadata), two different ones may not."""
    seen = accesses.setdefault(access.subnet, access)
    if seen.public_key != access.public_key:
        raise NetworkPlanError(field, f"lists two user accesses with subnet {access.subnet}")


def plan_from_workloads(name: str, workloads: Mapping[int, Workload]) -> NetworkPlan:
    """The current plan of network `name` from its `network` workload on each node
    (node id → the workload as `zos.deployment.get` returns it): what `plan_network`
    takes as `current`. Works for networks ThreeFold's clients made too.

    A node's endpoint is known here only from the peers other nodes have for it (a lone
    node's is not): `plan_network` with the nodes' fresh NodeInfo fills them in, and
    changes nothing when nothing changed."""
    if not workloads:
        raise NetworkPlanError("workloads", f"network '{name}' has no workload on any node")
    datas: dict[int, Network] = {}
    ip_range: IPv4Network | None = None
    for node_id, wl in sorted(workloads.items()):
        field = f"workloads[{node_id}]"
        if wl.type != "network" or wl.name != name:
            raise NetworkPlanError(field, f"is a {wl.type} '{wl.name}', not network '{name}'")
        data = wl.data
        if not isinstance(data, Network):
            try:
                data = Network.from_raw(data)
            except GridTypeError as e:
                raise NetworkPlanError(f"{field}.data", str(e)) from None
        rng = check_ip_range(data.ip_range, f"{field}.data.ip_range")
        if ip_range is not None and rng != ip_range:
            raise NetworkPlanError(
                f"{field}.data.ip_range", f"{rng} differs from the other nodes' {ip_range}"
            )
        ip_range = rng
        check_subnet(data.subnet, rng, f"{field}.data.subnet")
        wgkeys.check_key(data.wireguard_private_key, f"{field}.data.wireguard_private_key")
        datas[node_id] = data
    assert ip_range is not None
    keys = {nid: wgkeys.public_key(d.wireguard_private_key) for nid, d in datas.items()}
    node_of_key = {k: nid for nid, k in keys.items()}
    if len(node_of_key) != len(keys):
        raise NetworkPlanError("workloads", f"two nodes of network '{name}' share a key")
    subnets = [d.subnet for d in datas.values()]
    if len(set(subnets)) != len(subnets):
        raise NetworkPlanError("workloads", f"two nodes of network '{name}' share a subnet")
    # A node's endpoint is what the others dial; one no other node dials is hidden.
    hosts: dict[int, str] = {}
    dialled_by: dict[int, set[int]] = {}
    for nid, data in datas.items():
        for i, peer in enumerate(data.peers):
            target = node_of_key.get(peer.wireguard_public_key)
            if target is not None and peer.endpoint:
                hosts[target], _ = split_endpoint(peer.endpoint, f"workloads[{nid}].peers[{i}]")
                dialled_by.setdefault(nid, set()).add(target)
    hidden = {nid for nid in datas if nid not in hosts and len(datas) > 1}
    access_node = 0
    for nid in sorted(hidden):
        access_node = next(iter(sorted(dialled_by.get(nid, ()))), 0) or access_node
    accesses: dict[str, Access] = {}
    for nid, wl in sorted(workloads.items()):
        for a in read_metadata(wl.metadata, ip_range, nid, f"workloads[{nid}].metadata"):
            _add_access(accesses, a, f"workloads[{nid}].metadata")
    # Peers without endpoint that are no node and in no metadata: accesses other clients
    # granted by public key.
    for nid, data in sorted(datas.items()):
        for peer in data.peers:
            if peer.endpoint or peer.wireguard_public_key in node_of_key:
                continue
            if peer.subnet not in accesses:
                accesses[peer.subnet] = Access(
                    name=unnamed_access(peer.subnet),
                    subnet=str(check_subnet(peer.subnet, ip_range, f"workloads[{nid}].peers")),
                    public_key=wgkeys.check_key(peer.wireguard_public_key, "peers"),
                    node_id=nid,
                )
    node_subnets = {IPv4Network(d.subnet) for d in datas.values()}
    for a in accesses.values():
        if IPv4Network(a.subnet) in node_subnets:
            raise NetworkPlanError("workloads", f"access '{a.name}' has a node's subnet {a.subnet}")
        if a.public_key in node_of_key:
            raise NetworkPlanError("workloads", f"access '{a.name}' has the key of a node")
    names = [a.name for a in accesses.values()]
    if len(set(names)) != len(names):
        raise NetworkPlanError("workloads", "two user accesses have the same name")
    if not access_node and accesses:
        access_node = min(accesses.values(), key=lambda a: IPv4Network(a.subnet)).node_id
    nodes = [
        NodeNetwork(
            node_id=nid,
            subnet=data.subnet,
            public_key=keys[nid],
            listen_port=data.wireguard_listen_port,
            endpoint_host=hosts.get(nid, ""),
            hidden=nid in hidden,
            is_access_node=nid == access_node,
            data=data,
            metadata=workloads[nid].metadata,
            version=workloads[nid].version,
            change="keep",
        )
        for nid, data in datas.items()
    ]
    return NetworkPlan(
        name=name,
        ip_range=str(ip_range),
        access_node=access_node,
        nodes=tuple(sorted(nodes, key=lambda n: IPv4Network(n.subnet))),
        accesses=tuple(sorted(accesses.values(), key=lambda a: IPv4Network(a.subnet))),
    )
