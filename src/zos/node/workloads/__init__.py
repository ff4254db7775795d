"""One manager per workload type, all behind `zos.node.workloads.base.Manager`.

`MANAGERS` maps a workload type to its manager class; a later issue adds its type
with one line here (or `register`), and `default_managers` builds them for a node.
A type without a manager fails that workload with "not supported on this node".
"""

from __future__ import annotations

from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.volume import VolumeManager, volume_path
from zos.node.workloads.zmount import ZMountManager, zmount_path

MANAGERS: dict[str, type[Manager]] = {
    VolumeManager.type: VolumeManager,
    ZMountManager.type: ZMountManager,
}


def register(manager: type[Manager]) -> None:
    """Add a manager class for its `type` (a second one for the same type is a bug)."""
    if MANAGERS.get(manager.type, manager) is not manager:
        raise ValueError(f"workload type {manager.type} already has a manager")
    MANAGERS[manager.type] = manager


def default_managers(services: NodeServices) -> dict[str, Manager]:
    return {wtype: cls(services) for wtype, cls in MANAGERS.items()}


__all__ = [
    "MANAGERS",
    "Manager",
    "NodeServices",
    "WorkloadContext",
    "WorkloadError",
    "default_managers",
    "register",
    "volume_path",
    "zmount_path",
]
