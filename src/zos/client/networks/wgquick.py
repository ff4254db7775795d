"""The wg-quick file that puts a laptop on a network through its access node."""

from __future__ import annotations

from zos.client.networks import wgkeys
from zos.client.networks.addressing import TUNNEL_RANGE
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import NetworkPlan
from zos.client.networks.stored import open_private_key
from zos.identity import Identity

KEEPALIVE = 25  # seconds: keeps the laptop's NAT mapping open so the node can answer


def wg_quick(
    plan: NetworkPlan,
    name: str,
    *,
    owner: Identity | None = None,
    private_key: str = "",
) -> str:
    """The wg-quick file of access `name`: its own private key (opened with the `owner`'s
    key, or `private_key` for a teammate's access, who holds it), its 100.64.x.y/32
    address, and the access node as its one peer, routing the range and the tunnels."""
    try:
        access = plan.access(name)
    except KeyError as e:
        raise NetworkPlanError("name", str(e.args[0])) from None
    if private_key:
        key = wgkeys.check_key(private_key, "private_key")
        if wgkeys.public_key(key) != access.public_key:
            raise NetworkPlanError("private_key", f"is not the key access '{name}' was granted")
    elif owner is not None:
        key = open_private_key(owner, access)
    else:
        raise NetworkPlanError("owner", "the owner's key (or the access's private_key) is needed")
    node = plan.node(access.node_id)
    if node.hidden:
        raise NetworkPlanError(f"accesses.{name}.node_id", f"node {node.node_id} is hidden")
    if not node.endpoint:
        raise NetworkPlanError(
            f"accesses.{name}.node_id",
            f"the endpoint of node {node.node_id} is not in this plan (a plan read back "
            "from workloads knows only the endpoints other nodes dial): plan it with "
            "plan_network and the nodes' NodeInfo first",
        )
    return (
        "[Interface]\n"
        f"PrivateKey = {key}\n"
        f"Address = {access.address}\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {node.public_key}\n"
        f"Endpoint = {node.endpoint}\n"
        f"AllowedIPs = {plan.ip_range}, {TUNNEL_RANGE}\n"
        f"PersistentKeepalive = {KEEPALIVE}\n"
    )
