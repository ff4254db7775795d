"""Private networks across nodes, planned on the client: pure functions, no bus, no kernel.

`plan_network(NetworkRequest, current, owner_public_key=...)` → `NetworkPlan` (each node's
`network` workload, what changed); `plan_from_workloads` reads the current plan back from
the deployed workloads; `wg_quick` writes a laptop's config. See planner.py for the rules.
`NetworkService` (service.py) runs them against the grid through a `NetworkNodes`.
"""

from zos.client.networks.addressing import tunnel_ip
from zos.client.networks.endpoints import endpoint_host, is_public
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import (
    Access,
    AccessRequest,
    NetworkPlan,
    NetworkRequest,
    NodeInfo,
    NodeNetwork,
    Randomness,
    SeededRandomness,
    SystemRandomness,
)
from zos.client.networks.planner import plan_network
from zos.client.networks.service import Applied, NetworkNodes, NetworkService, NodeResult
from zos.client.networks.stored import open_private_key, plan_from_workloads
from zos.client.networks.wgquick import wg_quick

__all__ = [
    "Access",
    "AccessRequest",
    "Applied",
    "NetworkNodes",
    "NetworkPlan",
    "NetworkPlanError",
    "NetworkRequest",
    "NetworkService",
    "NodeInfo",
    "NodeNetwork",
    "NodeResult",
    "Randomness",
    "SeededRandomness",
    "SystemRandomness",
    "endpoint_host",
    "is_public",
    "open_private_key",
    "plan_from_workloads",
    "plan_network",
    "tunnel_ip",
    "wg_quick",
]
