"""A twin's private networks on this node, and the workloads attached to them.

`Networks` (one per node, `NodeServices.networks`) is the only code that makes or
removes a network's kernel objects; the network manager decides when, and every
workload that needs an interface asks `attach` / `detach`. See `service` for what a
network is made of, `names` for what its parts are called, `state` for what is kept.
"""

from zos.node.networks.names import (
    bridge_name,
    machine_namespace,
    network_namespace,
    uplink_name,
    veth_port,
)
from zos.node.networks.service import AddressError, Networks, network_lock
from zos.node.networks.state import Attachment, NetworkInfo

__all__ = [
    "AddressError",
    "Attachment",
    "NetworkInfo",
    "Networks",
    "bridge_name",
    "machine_namespace",
    "network_lock",
    "network_namespace",
    "uplink_name",
    "veth_port",
]
