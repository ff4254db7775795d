"""The one small interface every workload manager implements.

The engine decides *what* must exist (policy, order, capacity, results); a manager
makes one workload type exist on this machine through `zos.primitives`. Every method
is idempotent: after a crash the engine simply calls `provision` again for every
workload that should exist, and `deprovision` for every one that should not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zos.gridtypes.names import workload_id
from zos.node.errors import WorkloadError
from zos.node.services import NodeServices

__all__ = ["LAST_RANK", "Manager", "NodeServices", "WorkloadContext", "WorkloadError"]

# The rank of a type this node has no manager for (it comes last, and fails).
LAST_RANK = 1000

if TYPE_CHECKING:
    from zos.gridtypes import Deployment, Workload


@dataclass
class WorkloadContext:
    twin_id: int
    contract_id: int
    deployment: Deployment
    workload: Workload
    node: NodeServices

    @property
    def workload_id(self) -> str:
        """`<twin>-<contract>-<name>`, as zos names workloads."""
        return workload_id(self.twin_id, self.contract_id, self.workload.name)

    def workload_id_of(self, name: str) -> str:
        """The id of another workload of the same deployment."""
        return workload_id(self.twin_id, self.contract_id, name)


class Manager(ABC):
    """Builds, updates and removes one workload type.

    A manager declares what the engine needs to know of its type: `type` (a workload
    type of `zos.gridtypes`), `rank` (its place in a deployment's install order: lower
    first, removal in reverse; what a type needs is installed before it) and `close`
    (what it lets go of when the agent stops).
    """

    type: ClassVar[str]
    # zos's order: disks (10-30), networks (40-50), public ips (60), machines (70),
    # gateways (80).
    rank: ClassVar[int] = LAST_RANK
    # Whether an update with a new version may change this type's data in place.
    updatable: ClassVar[bool] = False
    # Whether the twin's other deployments use what it builds (a network, by name): at
    # start, deployments holding such a workload are brought back before the others.
    shared: ClassVar[bool] = False

    def __init__(self, node: NodeServices) -> None:
        self.node = node

    @abstractmethod
    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        """Make the workload exist (or confirm it does) and return its result data."""

    async def update(self, ctx: WorkloadContext, previous: Workload) -> dict[str, Any]:
        raise WorkloadError(f"workload type {self.type} does not support update")

    @abstractmethod
    async def deprovision(self, ctx: WorkloadContext) -> None:
        """Remove the workload and everything it made; a no-op if it is already gone."""

    async def cleanup(self, keep: set[str]) -> None:  # noqa: B027 - optional hook
        """Remove anything of this type whose workload id is not in `keep` (leftovers)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """The agent is stopping: let go of what the manager holds (a supervisor, a
        server connection), leaving every workload as it is."""
