"""BusClient rules the mutation check found undefended, as a caller sees them (refused
or answered, with which code), over a real nats-server like test_bus_client.py."""

from __future__ import annotations

import json

import pytest

from zos.bus import BusClient, BusError, Envelope, Router, StaticResolver, twin_subject
from zos.identity import Identity

pytestmark = pytest.mark.nats

ALICE, BOB = Identity.generate(), Identity.generate()
KEYS = StaticResolver({1: ALICE.public_key, 2: BOB.public_key})


async def test_a_request_on_a_closed_connection_is_unreachable(enroll) -> None:
    """The NATS connection under the client has closed (nats-server ended it, or it
    gave up reconnecting): a request is refused at once as `unreachable`, not a crash."""
    a = await enroll(ALICE)
    alice = BusClient(a.conn, ALICE, 1, KEYS)
    await a.conn.nc.close()
    with pytest.raises(BusError) as e:
        await alice.request(2, "echo", "hi")
    assert (e.value.code, e.value.message) == ("unreachable", "the bus connection is closed")


async def test_an_answer_to_no_envelope_is_addressed_to_nobody(enroll) -> None:
    """Bytes that are no envelope have no sender to answer: Bob's signed `malformed`
    answer goes to twin 0 and answers no request id, so no twin takes it as its own."""
    a, b = await enroll(ALICE), await enroll(BOB, node=True)
    bob = BusClient(b.conn, BOB, 2, KEYS)
    await bob.serve(Router())
    try:
        msg = await a.conn.nc.request(twin_subject(2), b"{not json", timeout=5)
        reply = Envelope.from_bytes(msg.data)
        assert reply.verify(BOB.public_key)
        assert (reply.source, reply.destination, reply.reply_to) == (2, 0, "")
        assert json.loads(reply.payload)["error"]["code"] == "malformed"
    finally:
        await bob.close()
