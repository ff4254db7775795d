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
    key_file: str = "",
) -> str:
    """The wg-quick file of access `name`: its own private key (opened with the `owner`'s
    key, or `private_key` for a teammate's access, who holds it), its 100.64.x.y/32
    address, and the access node as its one peer, routing the range and the tunnels.
    `key_file` instead: a teammate's file that names where their key is on their laptop
    (`PostUp = wg set %i private-key FILE`), so the key itself never passes here."""
    try:
        access = plan.access(name)
    except KeyError as e:
        raise NetworkPlanError("name", str(e.args[0])) from None
    if key_file:
        if not access.granted:
            raise NetworkPlanError("key_file", f"'{name}' is your own access, not a teammate's")
        if any(c in key_file for c in "\n\r%") or not key_file.strip():
            raise NetworkPlanError("key_file", f"{key_file!r} is not a file name for wg-quick")
        key_line = f"PostUp = wg set %i private-key {key_file}\n"
    elif private_key:
        key = wgkeys.check_key(private_key, "private_key")
        if wgkeys.public_key(key) != access.public_key:
            raise NetworkPlanError("private_key", f"is not the key access '{name}' was granted")
        key_line = f"PrivateKey = {key}\n"
    elif owner is not None:
        key_line = f"PrivateKey = {open_private_key(owner, access)}\n"
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
        f"{key_line}"
        f"Address = {access.address}\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {node.public_key}\n"
        f"Endpoint = {node.endpoint}\n"
        f"AllowedIPs = {plan.ip_range}, {TUNNEL_RANGE}\n"
        f"PersistentKeepalive = {KEEPALIVE}\n"
    )
