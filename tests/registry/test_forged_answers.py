"""A registry client pinned to the registry's key refuses, and logs, every answer and
event the registry did not sign for it: played by a party that controls the bus itself
(a user of nats-server's own configuration), once the real registry has stopped."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from zos.bus import BusError, connect
from zos.bus.subjects import KEY_EVENTS, REGISTRY_QUERY
from zos.identity import Identity
from zos.registry import KeyChange, RegistryService
from zos.registry.signing import RegistrySigner

pytestmark = pytest.mark.nats


async def test_forged_unsigned_and_replayed_answers_are_refused(
    nats_server, registry: RegistryService, bus_insider: Identity, make_client, caplog
) -> None:
    user = await make_client()
    twin = await user.get_twin(user.twin_id)
    insider = await connect(nats_server.url, bus_insider, name="insider")
    captured: list[bytes] = []

    async def capture(msg) -> None:  # type: ignore[no-untyped-def]
        captured.append(msg.data)

    await insider.subscribe(f"{user.conn.inbox}.>", capture)
    await insider.settle()
    assert await user.get_twin(user.twin_id) == twin  # a genuine answer, seen by the insider
    assert captured
    await registry.stop()

    attacker = Identity.generate()
    swapped = {"id": twin.id, "public_key": attacker.public_hex, "created": twin.created}
    body = json.dumps({"ok": True, "result": swapped}).encode()
    nonces: list[str] = []
    answer: list[bytes] = []

    async def respond(msg) -> None:  # type: ignore[no-untyped-def]
        nonces.append(json.loads(msg.data)["nonce"])
        await msg.respond(answer[0] if answer[0] else other.sign(f"answer/{nonces[-1]}", body))

    other = RegistrySigner(attacker)
    await insider.subscribe(REGISTRY_QUERY, respond)
    await insider.settle()
    cases = [
        (body, "is unsigned"),  # a plain answer, as before this issue
        (b"", "not signed by the pinned registry key"),  # signed for this request, other key
        (captured[-1], "not signed by the pinned registry key"),  # the registry's, replayed
    ]
    try:
        for forged, why in cases:
            answer[:] = [forged]
            caplog.clear()
            with (
                caplog.at_level(logging.WARNING, logger="zos.registry.signing"),
                pytest.raises(BusError) as e,
            ):
                await user.get_twin(twin.id)
            assert e.value.code == "bad_signature" and why in e.value.message
            assert "refused registry answer (answer/" in caplog.text
    finally:
        await insider.close()


async def test_forged_key_change_events_are_refused(
    nats_server, registry: RegistryService, bus_insider: Identity, make_client, caplog
) -> None:
    user, watcher = await make_client(), await make_client()
    resolver = await watcher.key_resolver()
    assert await resolver(user.twin_id) == user.identity.public_key
    insider = await connect(nats_server.url, bus_insider, name="insider")
    change = KeyChange(
        twin_id=user.twin_id,
        old_key=user.identity.public_hex,
        new_key=Identity.generate().public_hex,
        at=0,
    )
    body = change.model_dump_json().encode()
    try:
        with caplog.at_level(logging.WARNING, logger="zos.registry.signing"):
            await insider.publish(KEY_EVENTS, body)
            await insider.publish(
                KEY_EVENTS, RegistrySigner(Identity.generate()).sign(f"event/{KEY_EVENTS}", body)
            )
            await insider.settle()
            await watcher.conn.settle()
            for _ in range(50):
                if caplog.text.count("refused key change event") == 2:
                    break
                await asyncio.sleep(0.05)
        assert caplog.text.count("refused key change event") == 2
        assert user.twin_id in resolver._cache  # not forgotten on a forged word
    finally:
        await insider.close()


async def test_values_written_around_the_registry_are_refused(
    nats_server, registry: RegistryService, bus_insider: Identity, make_client
) -> None:
    """Whoever writes the registry's buckets without its key (here a party that controls
    the bus) writes nothing the registry believes: every value is checked when read."""
    user, other, attacker = await make_client(), await make_client(), Identity.generate()
    insider = await connect(nats_server.url, bus_insider, name="insider")
    swapped = {"id": user.twin_id, "public_key": attacker.public_hex, "created": 1.0}
    contract = {
        "type": "node", "id": 99, "node_id": 1, "owner_twin": user.twin_id,
        "deployment_hash": "a" * 32, "created": 1.0, "updated": 1.0,
    }  # fmt: skip
    try:
        await insider.publish(f"$KV.zos-twins.{user.twin_id}", json.dumps(swapped).encode())
        await insider.publish(f"$KV.zos-contracts.{contract['id']}", json.dumps(contract).encode())
        await insider.settle()
        with pytest.raises(BusError) as e:
            await user.get_twin(user.twin_id)
        assert e.value.code == "bad_signature" and f"twins/{user.twin_id}" in e.value.message
        # Nor does a transaction signed by the attacker pass as that twin.
        forger = await make_client(register=False, identity=attacker)
        await forger.register_twin()
        forger.twin_id = user.twin_id
        with pytest.raises(BusError) as e:
            await forger.create_name_contract("stolen")
        assert e.value.code == "bad_signature"
        # The tampered twin is unusable, not stolen (a denial, never a forgery). The
        # mirrors skip such values too: a contract written after it shows, the forged one not.
        real = await other.create_name_contract("mine")
        assert [c.id for c in await other.list_contracts()] == [real.id]
        assert str(contract["id"]) not in registry.contracts.items
    finally:
        await insider.close()
