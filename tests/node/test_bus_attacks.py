"""The attacks of issue 11, tried on a real grid (nats-server with the registry's auth
callout, the registry, a node agent with a tenant's volume holding data) by a connection
with no key, one with an unregistered key and one with a registered twin's key.

Each attempt must be refused by nats-server itself: the connection refused, or a
permissions violation it reports for that very subject. Afterwards the victim's
deployment, its data and its twin key are as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from nodehelpers import victim_with_data

from zos.bus import Connection, connect
from zos.bus.subjects import inbox_prefix, register_subject
from zos.identity import Identity

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]


def forged_cancel(contract: dict) -> bytes:
    """What the attack of issue 11 published: a plain `cancelled` contract event."""
    return json.dumps({"kind": "cancelled", "contract": contract, "at": time.time()}).encode()


Attempt = Callable[[Connection], Awaitable[None]]


async def refused_publish(conn: Connection, subject: str, data: bytes = b"x") -> None:
    await conn.nc.publish(subject, data, reply=f"{conn.inbox}.attack")
    await conn.settle()
    assert conn.refused(subject), f"nats-server let this key publish to {subject}"


async def refused_subscribe(conn: Connection, subject: str, queue: str = "") -> None:
    async def ignore(msg: object) -> None:
        raise AssertionError(f"received a message on {subject}")

    await conn.subscribe(subject, ignore, queue)
    await conn.settle()
    assert conn.refused(subject, "subscription"), f"nats-server let this key hear {subject}"


@pytest.mark.parametrize("attacker", ["no key", "unregistered key", "registered twin"])
async def test_the_bus_refuses_every_attack(make_user, make_node, farm, attacker: str) -> None:
    user, node, contract_id, secret = await victim_with_data(make_user, make_node)
    contract = (await user.registry.get_contract(contract_id)).model_dump(mode="json")
    twin_before = await user.registry.get_twin(user.twin_id)

    if attacker == "no key":
        for kwargs in ({}, {"user": "admin", "password": "admin"}, {"token": "zos"}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(farm.nats, allow_reconnect=False, connect_timeout=5, **kwargs)
    else:
        identity = Identity.generate()
        conn = await connect(farm.nats, identity, name="attacker")
        try:
            if attacker == "registered twin":
                mallory = await make_user()  # a twin of the grid, on its own key
                await conn.close()
                identity, conn = mallory.identity, mallory.registry.conn
            else:
                # An unregistered key may not even ask: the registry's subjects and the
                # nodes' are refused until it registers (its own registration subject).
                await refused_publish(conn, "zos.registry.query", b"{}")
                await refused_publish(conn, "zos.registry.tx", b"{}")
                await refused_publish(conn, f"zos.twin.{node.twin_id}")
            n, t = node.node_id, user.twin_id
            # 1. a forged `cancelled` event where the node would hear it
            await refused_publish(conn, f"zos.registry.contracts.{n}", forged_cancel(contract))
            await refused_publish(conn, f"zos.registry.events.{n}", forged_cancel(contract))
            # 2. write the twins bucket (swap the victim's key), or any bucket, directly
            swapped = {"id": t, "public_key": identity.public_hex, "created": 1.0}
            await refused_publish(conn, f"$KV.zos-twins.{t}", json.dumps(swapped).encode())
            await refused_publish(conn, f"$KV.zos-twin-keys.{identity.public_hex}", b"%d" % t)
            await refused_publish(conn, f"$KV.zos-contracts.{contract_id}", b"{}")
            await refused_publish(conn, "$JS.API.STREAM.INFO.KV_zos-twins", b"")
            await refused_publish(conn, "$JS.API.STREAM.PURGE.KV_zos-contracts", b"")
            # 3. answer the registry's queries and transactions
            await refused_subscribe(conn, "zos.registry.query")
            await refused_subscribe(conn, "zos.registry.query", queue="zos-registry")
            await refused_subscribe(conn, "zos.registry.tx", queue="zos-registry")
            # 4. read everything: `>`, the registry's stream, its buckets, others' inboxes
            await refused_subscribe(conn, ">")
            await refused_subscribe(conn, "zos.registry.>")
            await refused_subscribe(conn, "$KV.>")
            await refused_subscribe(conn, "_INBOX.>")
            await refused_subscribe(conn, f"{inbox_prefix(user.identity.public_key)}.>")
            await refused_publish(conn, "$JS.API.CONSUMER.CREATE.ZOS_REGISTRY", b"{}")
            await refused_publish(conn, "$JS.API.STREAM.MSG.GET.ZOS_REGISTRY", b'{"seq":1}')
            await refused_publish(conn, "$JS.API.DIRECT.GET.KV_zos-twins", b"")
            # 5. be the node: serve its subject, hear its events
            await refused_subscribe(conn, f"zos.twin.{node.twin_id}")
            await refused_subscribe(conn, f"zos.twin.{node.twin_id}", queue="q")
            await refused_subscribe(conn, f"zos.registry.events.{n}")
            # 6. heartbeats for another node
            await refused_publish(conn, f"zos.heartbeat.{n}", b"{}")
            # more: answer the auth callout, speak for another key, reply into an inbox
            await refused_subscribe(conn, "$SYS.REQ.USER.AUTH")
            await refused_publish(conn, "$SYS.REQ.USER.AUTH", b"x")
            await refused_subscribe(conn, "$SYS.>")
            await refused_publish(conn, register_subject(user.identity.public_key), b"{}")
            await refused_publish(conn, f"{inbox_prefix(user.identity.public_key)}.x.y", b"x")
            await refused_publish(conn, "zos.registry.keys", b"{}")
        finally:
            await conn.close()

    # The victim: deployment, data and twin key unchanged; the node still serves them.
    got = await user.get(node, contract_id)
    assert [w["result"]["state"] for w in got["workloads"]] == ["ok"]
    assert Path(secret).read_text() == "the tenant's data"
    assert await user.registry.get_twin(user.twin_id) == twin_before
    assert (await user.registry.get_contract(contract_id)).state == "created"
    assert "deleting" not in node.log()
