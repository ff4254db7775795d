"""What the network planner takes and gives: plain frozen data classes.

In: a `NetworkRequest` (the network, the `NodeInfo` of every node it spans, the user
accesses wanted) and the current `NetworkPlan`, if any. Out: the new `NetworkPlan`, one
`NodeNetwork` per node (its `network` workload data, metadata, version and what to do
with it) and one `Access` per user access.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from zos.client.networks.addressing import tunnel_ip
from zos.gridtypes.workload import Workload
from zos.gridtypes.workloads.network import Network

# What `zos.client.networks` re-exports.
__all__ = [
    "Access",
    "AccessRequest",
    "NetworkPlan",
    "NetworkRequest",
    "NodeInfo",
    "NodeNetwork",
    "Randomness",
    "SeededRandomness",
    "SystemRandomness",
]

# ---- in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """A node as it describes itself (the answers of its `zos.network.*` commands)."""

    node_id: int
    # `zos.network.public_config_get` ({type, ipv4, ipv6, gw4, gw6, domain}); None when it
    # answered an error (the node has no public config)
    public_config: Mapping[str, Any] | None = None
    # `zos.network.interfaces`: {"zos": [ips], "ygg": [ips]}
    interfaces: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # `zos.network.list_wg_ports`: listen ports already taken on the node
    taken_ports: Sequence[int] = ()


@dataclass(frozen=True)
class AccessRequest:
    """A user access (a laptop) wanted on the network.

    `public_key` empty: the planner makes the key pair (your own laptop; its private key is
    kept sealed to you). Set: a teammate's laptop, admitted by its WireGuard public key
    (the plan never has its private key). `node_id` 0: through the network's access node.
    An access already in the current plan keeps its subnet and keys (a new `public_key`
    replaces the key, not the subnet)."""

    name: str
    public_key: str = ""
    node_id: int = 0


@dataclass(frozen=True)
class NetworkRequest:
    name: str
    ip_range: str  # a private /16, e.g. 10.40.0.0/16
    nodes: Sequence[NodeInfo]  # the nodes the network spans (where machines are)
    # every user access the network is to have (those of the current plan to keep too:
    # `NetworkPlan.access_requests()`); an access of the current plan not listed is revoked
    accesses: Sequence[AccessRequest] = ()
    # public nodes the planner may add as access node when none of `nodes` can be one
    access_candidates: Sequence[NodeInfo] = ()
    # force the access node (a node of `nodes` or `access_candidates`); 0: the planner picks
    access_node: int = 0


class Randomness(Protocol):
    """Where keys and ports come from (inject a seeded one for reproducible plans)."""

    def token_bytes(self, n: int) -> bytes: ...

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        ...


class SystemRandomness:
    """The operating system's randomness (`secrets`): what real plans use."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def below(self, n: int) -> int:
        return secrets.randbelow(n)


class SeededRandomness:
    """A repeatable source for tests and examples: never for keys that protect anything."""

    def __init__(self, seed: int | str) -> None:
        self._random = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)

    def below(self, n: int) -> int:
        return self._random.randrange(n)


# ---- out -----------------------------------------------------------------------------

Change = Literal["create", "update", "keep"]


@dataclass(frozen=True)
class NodeNetwork:
    """One node's part of the network: the `network` workload to have there."""

    node_id: int
    subnet: str  # this node's /24
    public_key: str  # of data.wireguard_private_key
    listen_port: int
    endpoint_host: str  # `IPv4` or `[IPv6]` other nodes dial; "" when hidden
    hidden: bool
    is_access_node: bool  # the network's access node (hidden nodes and laptops dial it)
    data: Network  # the workload data (ip_range, subnet, key, port, peers[, mycelium])
    metadata: str  # the workload metadata (user accesses through this node, see stored.py)
    version: int  # the workload version to send
    change: Change  # create: new here; update: data or metadata changed; keep: as it was

    @property
    def endpoint(self) -> str:
        """`IP:PORT` / `[IPv6]:PORT`, or "" for a hidden node."""
        return f"{self.endpoint_host}:{self.listen_port}" if self.endpoint_host else ""

    def workload(self, name: str, description: str = "") -> Workload:
        """The `network` workload (named after the network) for this node's deployment."""
        return Workload(
            version=self.version,
            name=name,
            type="network",
            data=self.data,
            metadata=self.metadata,
            description=description,
        )


@dataclass(frozen=True)
class Access:
    """A user access: a laptop's subnet and key, reaching the network through `node_id`."""

    name: str
    subnet: str
    public_key: str
    node_id: int
    # base64 of the laptop's private key sealed to the owner (zos.identity.seal); "" for a
    # teammate's access (granted by public key)
    sealed_private_key: str = ""
    # the private key in clear: only while the plan that made it (or read it from a
    # ThreeFold client's metadata) is in memory; never written anywhere by the planner
    private_key: str = field(default="", repr=False)

    @property
    def granted(self) -> bool:
        """A teammate's access: admitted by public key, its private key is theirs."""
        return not self.sealed_private_key and not self.private_key

    @property
    def address(self) -> str:
        """The laptop's address on the tunnels: 100.64.A.B/32 of its subnet 10.A.B.0/24."""
        return tunnel_ip(self.subnet)


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    ip_range: str
    access_node: int  # 0: the network has none (no hidden node among several, no access)
    nodes: tuple[NodeNetwork, ...]  # ordered by subnet
    accesses: tuple[Access, ...] = ()  # ordered by subnet
    removed: tuple[int, ...] = ()  # nodes of the previous plan whose workload is to go

    def node(self, node_id: int) -> NodeNetwork:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(f"node {node_id} is not in network '{self.name}'")

    def access(self, name: str) -> Access:
        for a in self.accesses:
            if a.name == name:
                return a
        raise KeyError(f"network '{self.name}' has no user access '{name}'")

    @property
    def changed(self) -> tuple[NodeNetwork, ...]:
        """The nodes whose workload is to be deployed (create) or updated (update)."""
        return tuple(n for n in self.nodes if n.change != "keep")

    def access_requests(self) -> list[AccessRequest]:
        """The requests that keep every access of this plan as it is (each through the
        node it uses while that node can still be an access node)."""
        return [AccessRequest(a.name) for a in self.accesses]
