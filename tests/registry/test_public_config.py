"""A node's public config, set by its farmer's signed transaction, and gateway nodes."""

from __future__ import annotations

from typing import Any

import pytest

from zos.bus import BusError
from zos.registry import Capacity, PublicConfig

Grid = Any  # the `grid` fixture of conftest.py: farmer, farm, node_client, node, user

pytestmark = pytest.mark.nats

CAPACITY = Capacity(cru=8, mru=16 << 30, sru=512 << 30, hru=2 << 40)
GATEWAY = PublicConfig(
    ipv4="185.1.2.3/24",
    gw4="185.1.2.1",
    ipv6="2001:db8::3/64",
    gw6="2001:db8::1",
    domain="gw1.example.com",
)


async def refused(code: str, coro: Any, match: str) -> None:
    with pytest.raises(BusError) as e:
        await coro
    assert e.value.code == code, e.value
    assert match in e.value.message, e.value.message


async def test_the_farmer_sets_and_clears_a_public_config(grid: Grid) -> None:
    farmer, node_id = grid.farmer, grid.node.id
    assert not (await farmer.get_node(node_id)).public_config.gateway
    assert await farmer.list_nodes(gateway=True) == []
    set_ = await farmer.set_node_public_config(node_id, GATEWAY)
    assert set_.public_config == GATEWAY and set_.status == "up"
    assert (await grid.user.get_node(node_id)).public_config == GATEWAY
    assert [n.id for n in await grid.user.list_nodes(gateway=True)] == [node_id]
    assert await grid.user.list_nodes(gateway=False) == []
    # IPv6 is optional, and so is the domain (but without one the node serves no gateway).
    v4 = PublicConfig(ipv4="185.1.2.3/24", gw4="185.1.2.1")
    assert (await farmer.set_node_public_config(node_id, v4)).public_config == v4
    assert await grid.user.list_nodes(gateway=True) == []
    await farmer.set_node_public_config(node_id, GATEWAY)
    # A node restarting registers again without one: the farmer's stays.
    token = await farmer.farm_join_token(grid.farm.id)
    again = await grid.node_client.register_node(grid.farm.id, token, CAPACITY)
    assert again.public_config == GATEWAY
    cleared = await farmer.set_node_public_config(node_id, None)
    assert cleared.public_config == PublicConfig()
    assert [n.id for n in await grid.user.list_nodes(gateway=False)] == [node_id]


async def test_only_the_farmer_sets_it(grid: Grid) -> None:
    owner = f"twin {grid.farmer.twin_id}"
    for other in (grid.user, grid.node_client):  # not even the node itself
        await refused("forbidden", other.set_node_public_config(grid.node.id, GATEWAY), owner)
    await refused("not_found", grid.farmer.set_node_public_config(999, GATEWAY), "node 999")
    assert (await grid.user.get_node(grid.node.id)).public_config == PublicConfig()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"ipv4": "185.1.2.3/24"}, "gw4: ipv4 and gw4 go together"),
        ({"gw4": "185.1.2.1", "domain": "gw.example.com"}, "ipv4: a public config needs"),
        ({"domain": "gw.example.com"}, "ipv4: a public config needs"),
        ({"ipv4": "185.1.2.3/24", "gw4": "10.0.0.1"}, "gw4: 10.0.0.1 is not in ipv4's network"),
        ({"ipv4": "185.1.2.3/24", "gw4": "185.1.2.3"}, "gw4: is ipv4's own address"),
        ({"ipv4": "2001:db8::3/64", "gw4": "185.1.2.1"}, "ipv4"),
        ({**GATEWAY.model_dump(), "gw6": ""}, "gw6: ipv6 and gw6 go together"),
        ({**GATEWAY.model_dump(), "gw6": "2001:db9::1"}, "gw6: 2001:db9::1 is not in ipv6's"),
        ({**GATEWAY.model_dump(), "domain": "localhost"}, "domain: 'localhost' is not a DNS"),
        ({**GATEWAY.model_dump(), "domain": "GW.example.com"}, "domain"),
        ({**GATEWAY.model_dump(), "domain": "-gw.example.com"}, "domain"),
        ({**GATEWAY.model_dump(), "port": 80}, "port"),
    ],
)
async def test_an_incomplete_config_is_refused_and_changes_nothing(
    grid: Grid, config: dict[str, Any], match: str
) -> None:
    await grid.farmer.set_node_public_config(grid.node.id, GATEWAY)
    await refused("invalid", grid.farmer.set_node_public_config(grid.node.id, config), match)
    assert (await grid.user.get_node(grid.node.id)).public_config == GATEWAY
