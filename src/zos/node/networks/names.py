"""Names of what the node makes for a network and for what attaches to it.

`prefix` is the node's namespace prefix (several nodes share one machine's
/var/run/netns under `zos grid up`). Kernel interface names stay within 15 characters.
"""

from __future__ import annotations

from zos.gridtypes.names import short_name
from zos.primitives.nat import UPLINK_PREFIX


def network_namespace(prefix: str, netid: str) -> str:
    return f"{prefix}n-{netid}"


def bridge_name(netid: str) -> str:
    return f"b-{netid}"


def uplink_name(netid: str) -> str:
    return f"{UPLINK_PREFIX}{netid}"


def machine_namespace(prefix: str, workload_id: str) -> str:
    """A veth attachment's own namespace (a container's network namespace)."""
    return f"{prefix}c-{workload_id}"


def veth_port(workload_id: str, index: int = 0) -> str:
    """The end of interface `index` of a workload that sits on the network's bridge."""
    return short_name(workload_id, index)
