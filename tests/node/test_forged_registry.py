"""What a node does when the bus itself lies: a party that controls the bus (a user of
nats-server's own configuration, `bus_insider`) pushes contract events and answers the
node's registry queries. The node trusts only what the registry key it pinned at its
first join signed, for that subject or request, and deletes a deployment only when a
signed answer of the registry says its contract is cancelled; every refusal is logged."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nodehelpers import HANG_GUARD, NodeProcess, victim_with_data

from zos.bus import connect
from zos.bus.subjects import REGISTRY_QUERY, node_events_subject
from zos.identity import Identity
from zos.registry import ContractEvent, NodeContract
from zos.registry.signing import RegistrySigner

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]


async def wait_log(node: NodeProcess, text: str, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log():
        assert time.monotonic() < deadline, f"{text!r} not in the node's log:\n{node.log()}"
        await asyncio.sleep(0.1)


async def test_forged_events_and_answers_change_nothing(
    make_user, make_node, farm, registry, registry_identity: Identity, bus_insider: Identity
) -> None:
    user, node, contract_id, secret = await victim_with_data(make_user, make_node)
    contract = await user.registry.get_contract(contract_id)
    assert isinstance(contract, NodeContract)
    [created] = await user.registry.contract_events(node.node_id)
    insider = await connect(farm.nats, bus_insider, name="insider")
    subject = node_events_subject(node.node_id)
    event = ContractEvent(kind="cancelled", contract=contract, at=time.time(), seq=created.seq + 1)
    body = event.model_dump_json().encode()
    real = RegistrySigner(registry_identity)
    try:
        # Unsigned; signed by another key; the registry's signature for another node's
        # subject: refused and logged, the deployment untouched.
        await insider.publish(subject, body)
        await wait_log(node, f"refused contract event (event/{subject}): unsigned")
        await insider.publish(
            subject, RegistrySigner(Identity.generate()).sign(f"event/{subject}", body)
        )
        await wait_log(node, "not signed by the pinned registry key")
        other = node_events_subject(node.node_id + 1)
        await insider.publish(subject, real.sign(f"event/{other}", body))
        await asyncio.sleep(0.5)
        assert node.log().count("refused contract event") == 3
        # Even the registry's own key saying `cancelled` (a lie: the contract lives) is
        # only a reason to ask: the node asks, the registry says created, nothing goes.
        await insider.publish(subject, real.sign(f"event/{subject}", body))
        await wait_log(node, f"contract {contract_id}: an event said cancelled, the registry")

        # Now the registry is gone and only the insider answers queries: with an unsigned
        # `deleted`, then one signed by another key. The node refuses both and keeps it.
        await registry.stop()
        forged = json.dumps({"ok": True, "result": {**contract.model_dump(), "state": "deleted"}})
        answers = [
            forged.encode(),
            RegistrySigner(Identity.generate()).sign("answer/", forged.encode()),
        ]

        async def answer(msg) -> None:  # type: ignore[no-untyped-def]
            await msg.respond(answers[0] if len(answers) == 1 else answers.pop(0))

        await insider.subscribe(REGISTRY_QUERY, answer)
        await insider.settle()
        event.seq += 1
        await insider.publish(
            subject, real.sign(f"event/{subject}", event.model_dump_json().encode())
        )
        await wait_log(node, "refused registry answer")
        await asyncio.sleep(1.5)  # the node asks again after a failure: refused again
        assert "deleting its deployment" not in node.log()
    finally:
        await insider.close()
    # The tenant's volume and its data are where they were.
    assert secret.read_text() == "the tenant's data"
    assert (
        node.data_dir / "storage" / "volumes" / f"{user.twin_id}-{contract_id}-data.img"
    ).exists()
