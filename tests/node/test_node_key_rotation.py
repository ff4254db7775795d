"""A twin rotates its key while a node holds its deployment and has its old key cached:
the node forgets the old key on the registry's signed key change event (its cache would
keep it five minutes otherwise), takes requests signed by the new key at once and
refuses the old one's."""

from __future__ import annotations

import pytest
from nodehelpers import MiB, User

from zos.bus import BusClient, BusError
from zos.identity import Identity
from zos.registry import RegistryClient

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]


async def test_a_node_follows_a_key_rotation(farm, make_user, make_node) -> None:
    old = await make_user()
    node = await make_node(old)
    first = old.deployment([{"name": "a", "type": "volume", "data": {"size": 16 * MiB}}])
    await old.deploy(node, first)
    await old.wait_states(node, first.contract_id, {"a": "ok"})  # the node cached the key

    new_key = Identity.generate()
    await old.registry.rotate_key(new_key)
    registry = RegistryClient(farm.nats, new_key, registry_key=farm.registry_key)
    await registry.connect()
    resolver = await registry.key_resolver()
    bus = await BusClient(registry.conn, new_key, old.twin_id, resolver).connect()
    new = User(new_key, old.twin_id, registry, bus)
    try:
        second = new.deployment([{"name": "b", "type": "volume", "data": {"size": 16 * MiB}}])
        await new.deploy(node, second)  # signed by the new key: the node knows it already
        await new.wait_states(node, second.contract_id, {"b": "ok"})
        assert [d["contract_id"] for d in await new.node(node).list()] == [
            first.contract_id,
            second.contract_id,
        ]
        # The old key, still connected, is refused by the node.
        with pytest.raises(BusError) as e:
            await old.node(node).list()
        assert e.value.code == "bad_signature"
    finally:
        await bus.close()
        await registry.close()
