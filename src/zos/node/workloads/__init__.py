"""One manager per workload type, all behind `zos.node.workloads.base.Manager`.

`MANAGERS` maps a workload type to its manager class (volume, zmount, network,
zmachine); a later issue adds its type with one line here (or `register`), and
`default_managers` builds them for a node; `close_managers` lets go of what they hold
when the agent stops.
A type without a manager fails that workload with "not supported on this node".
"""

from __future__ import annotations

import inspect

from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager, volume_path
from zos.node.workloads.zdb import ZdbManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.node.workloads.zmount import ZMountManager, zmount_path

MANAGERS: dict[str, type[Manager]] = {
    VolumeManager.type: VolumeManager,
    ZMountManager.type: ZMountManager,
    NetworkManager.type: NetworkManager,
    ZMachineManager.type: ZMachineManager,
    ZdbManager.type: ZdbManager,
}


def register(manager: type[Manager]) -> None:
    """Add a manager class for its `type` (a second one for the same type is a bug)."""
    if MANAGERS.get(manager.type, manager) is not manager:
        raise ValueError(f"workload type {manager.type} already has a manager")
    MANAGERS[manager.type] = manager


def default_managers(services: NodeServices) -> dict[str, Manager]:
    return {wtype: cls(services) for wtype, cls in MANAGERS.items()}


async def close_managers(managers: dict[str, Manager]) -> None:
    """The agent is stopping: managers that hold something (a supervisor) let go of it."""
    for manager in managers.values():
        close = getattr(manager, "close", None)
        if close is None:
            continue
        result = close()
        if inspect.isawaitable(result):
            await result


__all__ = [
    "MANAGERS",
    "Manager",
    "NodeServices",
    "WorkloadContext",
    "WorkloadError",
    "close_managers",
    "default_managers",
    "register",
    "volume_path",
    "zmount_path",
]
