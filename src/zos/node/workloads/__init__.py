"""One manager per workload type, all behind `zos.node.workloads.base.Manager`.

`MANAGERS` maps a workload type to its manager class (zmount, volume, zdb, network,
zmachine); a later issue adds its type with one line here (or `register`).
`INSTALL_ORDER` follows from the managers' ranks; `default_managers` builds them for a
node; `close_managers` calls each one's close hook when the agent stops.
A type without a manager fails that workload with "not supported on this node".
"""

from __future__ import annotations

from collections.abc import Mapping

from zos.gridtypes import WORKLOAD_TYPES
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.gateway import GatewayFqdnManager, GatewayNameManager
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager, volume_path
from zos.node.workloads.zdb import ZdbManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.node.workloads.zmount import ZMountManager, zmount_path

MANAGERS: dict[str, type[Manager]] = {}


def register(manager: type[Manager]) -> None:
    """Add a manager class for its `type`: a type zos.gridtypes knows, with one manager."""
    if manager.type not in WORKLOAD_TYPES:
        raise ValueError(f"workload type {manager.type} is not a type of zos.gridtypes")
    if MANAGERS.get(manager.type, manager) is not manager:
        raise ValueError(f"workload type {manager.type} already has a manager")
    MANAGERS[manager.type] = manager


for _manager in (
    ZMountManager,
    VolumeManager,
    ZdbManager,
    NetworkManager,
    ZMachineManager,
    GatewayNameManager,
    GatewayFqdnManager,
):
    register(_manager)


def install_order(managers: Mapping[str, Manager | type[Manager]]) -> list[str]:
    """The types of `managers` in the order a deployment installs them (by rank)."""
    return sorted(managers, key=lambda wtype: managers[wtype].rank)


INSTALL_ORDER = tuple(install_order(MANAGERS))


def default_managers(services: NodeServices) -> dict[str, Manager]:
    return {wtype: MANAGERS[wtype](services) for wtype in INSTALL_ORDER}


async def close_managers(managers: Mapping[str, Manager]) -> None:
    """The agent is stopping: each manager's close hook, in reverse install order."""
    for wtype in reversed(install_order(managers)):
        await managers[wtype].close()


__all__ = [
    "INSTALL_ORDER",
    "MANAGERS",
    "Manager",
    "NodeServices",
    "WorkloadContext",
    "WorkloadError",
    "close_managers",
    "default_managers",
    "install_order",
    "register",
    "volume_path",
    "zmount_path",
]
