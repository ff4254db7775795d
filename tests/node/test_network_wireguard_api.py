"""The node's `zos.network.*` commands through a real agent over the bus: the ports its
networks hold, its public config as the farmer set it (and the refusal when it has
none), its interfaces, and the owner's machines' addresses and peers' handshakes on its
own network, which another twin never sees."""

from __future__ import annotations

import pytest
from netzm_helpers import WG_KEY, free_udp_port, machine
from nodehelpers import Farm, NodeProcess

from zos.bus import BusError
from zos.nodeapi import commands as api
from zos.primitives.hostaddr import primary_ipv4
from zos.primitives.wireguard import public_key
from zos.registry import PublicConfig

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.netns, pytest.mark.runc]

PEER_KEY = public_key("YHpaFc4JYXAxMvXWg4ZfxlNM0AKc9VZgLVp+CLV4+Xk=")


def network(port: int, subnet: str = "10.231.2.0/24") -> dict:
    return {
        "name": "net",
        "type": "network",
        "data": {
            "ip_range": "10.231.0.0/16",
            "subnet": subnet,
            "wireguard_private_key": WG_KEY,
            "wireguard_listen_port": port,
            "peers": [
                {
                    "subnet": "10.231.3.0/24",
                    "wireguard_public_key": PEER_KEY,
                    "allowed_ips": ["10.231.3.0/24", "100.64.231.3/32"],
                    "endpoint": "",
                }
            ],
        },
    }


async def test_network_commands_over_the_bus(
    make_user, make_node, farm: Farm, busybox_flist, prefix: str, sweep: list[NodeProcess]
) -> None:
    url, store = busybox_flist
    owner, stranger = await make_user(), await make_user()
    node: NodeProcess = await make_node(
        owner, "--disk", "4G", "--store", store, "--netns-prefix", prefix
    )
    sweep.append(node)
    client = owner.node(node)

    # No public config yet: the reference's error, which NodeClient reads as None.
    with pytest.raises(BusError) as refused:
        await owner.call(node, api.PUBLIC_CONFIG)
    assert refused.value.code == "not_found" and "no public config" in refused.value.message
    assert await client.public_config() is None
    config = PublicConfig(ipv4="192.0.2.10/24", gw4="192.0.2.1", domain="gw.example.test")
    await farm.farmer.set_node_public_config(node.node_id, config)
    answer = await owner.call(node, api.PUBLIC_CONFIG)
    assert answer == {
        "type": "macvlan",
        "ipv4": "192.0.2.10/24",
        "ipv6": "",
        "gw4": "192.0.2.1",
        "gw6": "",
        "domain": "gw.example.test",
    }

    # Interfaces: the node's public side (the address its default route leaves from).
    assert await owner.call(node, api.INTERFACES) == {"zos": [primary_ipv4()], "ygg": []}

    assert await client.list_wg_ports() == []
    port = free_udp_port()
    dep = owner.deployment([network(port), machine("vm", url, "10.231.2.5")])
    await owner.deploy(node, dep)
    await owner.wait_states(node, dep.contract_id, {"net": "ok", "vm": "ok"})
    assert await owner.call(node, api.LIST_WG_PORTS) == [port]

    # The owner's own network: its machines, its peers (never handshaken: 0).
    assert await client.list_private_ips("net") == ["10.231.2.5"]
    assert await client.wg_peers("net") == {PEER_KEY: 0}

    # Another twin asking by the same name asks for its own network: there is none here.
    for command in (api.LIST_PRIVATE_IPS, api.WG_PEERS):
        with pytest.raises(BusError) as other:
            await stranger.call(node, command, {"network_name": "net"})
        assert other.value.code == "not_found", other.value
        assert "10.231" not in other.value.message and PEER_KEY not in other.value.message
    # A bad name is refused naming the field.
    with pytest.raises(BusError) as bad:
        await owner.call(node, api.LIST_PRIVATE_IPS, {"network_name": "../x"})
    assert bad.value.code == "invalid" and "network_name" in bad.value.message

    await owner.node(node).delete(dep.contract_id)
    await owner.wait_states(node, dep.contract_id, {"net": "deleted", "vm": "deleted"})
    assert await client.list_wg_ports() == []
