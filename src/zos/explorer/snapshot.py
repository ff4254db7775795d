"""The registry as one snapshot: every farm, node and contract, read through
`RegistryClient` (so every answer is the registry's own, checked by the client), and the
grid's totals computed from it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from zos.registry import Capacity, Farm, NameContract, Node, NodeContract, RegistryClient

PAGE = 1000  # the most one registry query answers
T = TypeVar("T")


async def _pages(read: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    found: list[T] = []
    while True:
        page = await read(len(found))
        found += page
        if len(page) < PAGE:
            return found


def _sum(caps: list[Capacity]) -> Capacity:
    return Capacity(
        cru=sum(c.cru for c in caps),
        mru=sum(c.mru for c in caps),
        sru=sum(c.sru for c in caps),
        hru=sum(c.hru for c in caps),
    )


@dataclass(frozen=True)
class Totals:
    farms: int
    nodes: int
    up: int
    down: int
    capacity: Capacity  # offered by every node
    used: Capacity  # reported in the nodes' last heartbeats
    free_up: Capacity  # free on the nodes that are up (what a deployment can still get)
    public_ipv4_nodes: int  # nodes with a public IPv4 in their public config
    gateway_nodes: int  # nodes with a gateway domain
    node_contracts: int  # active
    name_contracts: int  # active
    contracts_ever: int  # every contract, cancelled ones too
    public_ips_reserved: int  # by active node contracts


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    farms: dict[int, Farm]
    nodes: dict[int, Node]
    contracts: list[NodeContract | NameContract]
    contracts_per_node: dict[int, int] = field(default_factory=dict)  # active only

    @classmethod
    def build(
        cls,
        farms: list[Farm],
        nodes: list[Node],
        contracts: list[NodeContract | NameContract],
        taken_at: float | None = None,
    ) -> Snapshot:
        per_node: dict[int, int] = {}
        for c in contracts:
            if isinstance(c, NodeContract) and c.state == "created":
                per_node[c.node_id] = per_node.get(c.node_id, 0) + 1
        return cls(
            taken_at=time.time() if taken_at is None else taken_at,
            farms={f.id: f for f in farms},
            nodes={n.id: n for n in sorted(nodes, key=lambda n: n.id)},
            contracts=contracts,
            contracts_per_node=per_node,
        )

    def totals(self) -> Totals:
        nodes = list(self.nodes.values())
        up = [n for n in nodes if n.status == "up"]
        active = [c for c in self.contracts if c.state == "created"]
        return Totals(
            farms=len(self.farms),
            nodes=len(nodes),
            up=len(up),
            down=len(nodes) - len(up),
            capacity=_sum([n.capacity for n in nodes]),
            used=_sum([n.used for n in nodes]),
            free_up=_sum([n.free for n in up]),
            public_ipv4_nodes=sum(1 for n in nodes if n.public_config.ipv4),
            gateway_nodes=sum(1 for n in nodes if n.public_config.domain),
            node_contracts=sum(1 for c in active if isinstance(c, NodeContract)),
            name_contracts=sum(1 for c in active if isinstance(c, NameContract)),
            contracts_ever=len(self.contracts),
            public_ips_reserved=sum(c.public_ips for c in active if isinstance(c, NodeContract)),
        )

    def farm_nodes(self, farm_id: int) -> list[Node]:
        return [n for n in self.nodes.values() if n.farm_id == farm_id]


async def read_snapshot(registry: RegistryClient) -> Snapshot:
    """Everything the registry holds about farms, nodes and contracts, a page at a time."""
    farms = await registry.list_farms()
    nodes = await _pages(lambda offset: registry.list_nodes(offset=offset, limit=PAGE))
    contracts = await _pages(lambda offset: registry.list_contracts(offset=offset, limit=PAGE))
    return Snapshot.build(farms, nodes, contracts)
