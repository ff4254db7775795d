"""A manifest whose machines run on several nodes: where each goes, and each node's part.

Every machine goes to its own `node:`, else the node its own `nodes:` filter (or the
manifest's `node`/`nodes`) picks: of the up nodes that fit, the one with the most memory
left once the machines already placed are counted, so alike machines spread out. A disk
goes with the machines that mount it (all on one node). Each node's part is a manifest
of its own (`part`), built into a deployment that joins the network the client planned
across the nodes (`building.build_deployment(..., subnet=...)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from zos.client import gateways, placement
from zos.client.manifest import MachineSpec, Manifest, ManifestError, NodeFilter
from zos.client.networks import Applied
from zos.client.views import DeploymentInfo
from zos.registry import Node

NodeById = Callable[[int], Awaitable[Node]]
UpNodes = Callable[[int | None], Awaitable[list[Node]]]  # farm -> its up nodes


@dataclass
class SpanningDeployment:
    """What `GridClient.deploy_across` did: the network on each node, then one deployment
    per node with the machines it runs."""

    network: Applied
    deployments: list[DeploymentInfo] = field(default_factory=list)


async def place_machines(m: Manifest, node_by_id: NodeById, up_nodes: UpNodes) -> dict[str, int]:
    """Machine name -> node id; ManifestError (with the machine's line) when one does not fit."""
    used: dict[int, tuple[int, int]] = {}  # node -> (memory, disk) placed here so far
    where: dict[str, int] = {}
    for i, x in enumerate(m.machines):
        memory, disk = placement.needs(only(m, [x]))
        node_id = x.node if x.node is not None else (m.node if x.nodes is None else None)
        if node_id is not None:
            try:
                node = await node_by_id(node_id)
            except Exception as e:
                raise ManifestError(
                    f"machines[{i}].node: {e}", m.source_line("machines", i, "node")
                ) from None
            had = used.get(node.id, (0, 0))
            placement.check_named(m, node, memory + had[0], disk + had[1])
        else:
            wanted = x.nodes or m.nodes or NodeFilter()
            node = _roomiest(m, i, await up_nodes(wanted.farm), used, memory, disk, wanted)
        had = used.get(node.id, (0, 0))
        used[node.id] = (had[0] + memory, had[1] + disk)
        where[x.name] = node.id
    return where


def _roomiest(
    m: Manifest,
    i: int,
    up: Sequence[Node],
    used: dict[int, tuple[int, int]],
    memory: int,
    disk: int,
    wanted: NodeFilter,
) -> Node:
    def left(n: Node) -> tuple[int, int]:
        had = used.get(n.id, (0, 0))
        return n.free.mru - had[0], n.free.sru - had[1]

    floor = max(memory, wanted.free_memory or 0)
    fits = [n for n in up if left(n)[0] >= floor and left(n)[1] >= disk]
    if not fits:
        where = f" in farm {wanted.farm}" if wanted.farm else ""
        raise ManifestError(
            f"machines[{i}]: needs {placement.size(memory)} of memory and "
            f"{placement.size(disk)} of disk; no up node{where} has that left",
            m.source_line("machines", i),
        )
    return max(fits, key=lambda n: (left(n)[0], -n.id))


def only(m: Manifest, machines: list[MachineSpec]) -> Manifest:
    """`m` with only `machines` and the disks they mount."""
    mounted = {mount.disk for x in machines for mount in x.mounts}
    disks = [d for d in m.disks if d.name in mounted]
    return m.model_copy(update={"machines": machines, "disks": disks})


def parts(m: Manifest, where: dict[str, int]) -> dict[int, Manifest]:
    """Node id -> the part of `m` it runs. A disk mounted on two nodes is refused; one no
    machine mounts goes with the first machine."""
    by_node: dict[int, list[MachineSpec]] = {}
    for x in m.machines:
        by_node.setdefault(where[x.name], []).append(x)
    for i, d in enumerate(m.disks):
        nodes = {where[x.name] for x in m.machines if any(t.disk == d.name for t in x.mounts)}
        if len(nodes) > 1:
            raise ManifestError(
                f"disks[{i}]: '{d.name}' is mounted by machines on nodes "
                f"{', '.join(map(str, sorted(nodes)))}; a disk lives on one node",
                m.source_line("disks", i),
            )
    out = {node_id: only(m, xs) for node_id, xs in by_node.items()}
    unmounted = [
        d for d in m.disks if not any(d.name == t.disk for x in m.machines for t in x.mounts)
    ]
    if unmounted:
        first = out[where[m.machines[0].name]]
        first.disks = [*first.disks, *unmounted]
    return out


def as_one(infos: Sequence[DeploymentInfo], node_id: int) -> DeploymentInfo:
    """A one-node manifest whose gateways run on other nodes, as one deployment: the one
    on its machines' node, with the gateways of the others beside its own."""
    info = next(i for i in infos if i.node_id == node_id)
    others = [g for i in infos if i is not info for g in i.gateways]
    return info.model_copy(update={"gateways": [*info.gateways, *others]})


def gateway_only_nodes(
    removed: Sequence[DeploymentInfo], others: Sequence[DeploymentInfo]
) -> set[tuple[str, int]]:
    """(network, node) where `removed` had gateways on the network but no machine, and
    nothing of `others` uses the network on that node."""
    found = set()
    for d in removed:
        for net in {g.network for g in d.gateways if g.network}:
            here = [x for x in [*removed, *others] if x.node_id == d.node_id]
            if any(x.network == net for x in here for x in x.machines):
                continue
            if not any(gateways.uses_network(x, net) for x in others if x.node_id == d.node_id):
                found.add((net, d.node_id))
    return found
