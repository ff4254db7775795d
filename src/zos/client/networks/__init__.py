"""Private networks across nodes, planned on the client: pure functions, no bus, no kernel.

`plan_network(NetworkRequest, current, owner_public_key=...)` → `NetworkPlan` (each node's
`network` workload, what changed); `plan_from_workloads` reads the current plan back from
the deployed workloads; `wg_quick` writes a laptop's config. See planner.py for the rules.
`NetworkService` (service.py) runs them against the grid through a `NetworkNodes`.
"""

from zos.client.networks.addressing import tunnel_ip
from zos.client.networks.endpoints import endpoint_host, is_public
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import *  # noqa: F403
from zos.client.networks.model import __all__ as _model_names
from zos.client.networks.planner import plan_network
from zos.client.networks.service import Applied, NetworkNodes, NetworkService, NodeResult
from zos.client.networks.stored import open_private_key, plan_from_workloads
from zos.client.networks.wgquick import wg_quick

__all__ = [
    "Applied",
    "NetworkNodes",
    "NetworkPlanError",
    "NetworkService",
    "NodeResult",
    "endpoint_host",
    "is_public",
    "open_private_key",
    "plan_from_workloads",
    "plan_network",
    "tunnel_ip",
    "wg_quick",
    *_model_names,
]
