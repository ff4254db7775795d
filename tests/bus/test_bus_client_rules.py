"""BusClient rules the mutation check found undefended, as a caller sees them (refused
or answered, with which code), over a real nats-server like test_bus_client.py."""

from __future__ import annotations

import pytest

from zos.bus import BusClient, BusError, StaticResolver
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
