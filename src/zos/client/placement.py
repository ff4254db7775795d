"""Placement: what a manifest needs of a node, and which node gives it.

The SDK asks the registry for the candidates (the node the manifest names, or the up
nodes of its farm); these functions only decide, so they read without a grid.
"""

from __future__ import annotations

from zos.client.manifest import Manifest, ManifestError
from zos.registry import Node

MiB = 1 << 20
MIN_ROOT_DISK = 500 * MiB  # what a node reserves for a machine's root at least


def size(n: int) -> str:
    """Bytes as people read them: 1.5G, 256M, 12B."""
    for unit, div in (("T", 1 << 40), ("G", 1 << 30), ("M", MiB)):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return f"{n}B"


def needs(m: Manifest) -> tuple[int, int]:
    """(memory, disk) in bytes the manifest's machines and disks take on one node."""
    memory = sum(x.memory for x in m.machines)
    disk = sum(d.size for d in m.disks) + sum(
        max(x.disk_size or 0, MIN_ROOT_DISK) for x in m.machines
    )
    return memory, disk


def check_named(m: Manifest, node: Node, memory: int, disk: int) -> Node:
    """The node the manifest names, if it is up and has room (ManifestError if not)."""
    if node.status != "up":
        raise ManifestError(
            f"node: node {node.id} is down (`zos nodes` lists up nodes)", m.source_line("node")
        )
    free = node.free
    if memory > free.mru:
        raise ManifestError(
            f"machines: need {size(memory)} of memory, node {node.id} has {size(free.mru)} free",
            m.source_line("machines", m.largest_machine(), "memory"),
        )
    if disk > free.sru:
        raise ManifestError(
            f"disks: need {size(disk)} of disk, node {node.id} has {size(free.sru)} free",
            m.source_line("disks"),
        )
    return node


def choose(m: Manifest, up: list[Node], memory: int, disk: int) -> Node:
    """Of the up nodes, the one with the most free memory that fits (ManifestError if none)."""
    farm = m.nodes.farm if m.nodes else None
    if not up:
        raise ManifestError(
            "no node is up" + (f" in farm {farm}" if farm else "") + " (`zos nodes`)",
            m.source_line("nodes"),
        )
    want_mem = max(memory, m.nodes.free_memory or 0 if m.nodes else 0)
    fits = [n for n in up if n.free.mru >= want_mem and n.free.sru >= disk]
    if not fits:
        best = max(up, key=lambda n: n.free.mru)
        raise ManifestError(
            f"machines: need {size(memory)} of memory and {size(disk)} of disk; no node "
            f"has that free (most memory free: {size(best.free.mru)} on node {best.id})",
            m.source_line("machines", m.largest_machine(), "memory"),
        )
    return max(fits, key=lambda n: (n.free.mru, -n.id))
