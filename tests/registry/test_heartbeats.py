"""Heartbeats in the stream that keeps each node's last status, and the index built on it.

A node publishes only on its own status subject (nats-server refuses any other key),
readers believe only what the node's key signed for that node, and service copies that
have read the same stream answer the same pages.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from zos.bus import BusError, connect
from zos.bus.subjects import node_status_subject
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import Capacity, RegistryService
from zos.registry import heartbeats as hb
from zos.registry.objects.nodes import ListNodesArgs
from zos.registry.signing import RegistrySigner
from zos.registry.store import position

pytestmark = pytest.mark.nats


async def stored(nats_server: NatsServer, insider: Identity, node_id: int) -> bytes:
    """The last status the stream holds for a node (read as the bus's operator)."""
    conn = await connect(nats_server.url, insider)
    try:
        msg = await conn.nc.jetstream().get_last_msg(hb.STREAM, node_status_subject(node_id))
        assert msg.data is not None
        return msg.data
    finally:
        await conn.close()


async def test_a_node_publishes_its_status_on_its_own_subject_only(
    enroll, nats_server: NatsServer, bus_insider: Identity
) -> None:
    node, other_node, user = await enroll(node=True), await enroll(node=True), await enroll()
    beat = await node.registry.heartbeat(node.node_id, Capacity(cru=1, mru=1 << 30))
    assert beat["node_id"] == node.node_id and beat["seq"] > 0
    before = await stored(nats_server, bus_insider, node.node_id)
    assert hb.unverified(before).used.cru == 1  # type: ignore[union-attr]
    # Another node's key, or a plain twin's, even with a status its own key signed for
    # that node id: nats-server refuses the subject; the stream is unchanged.
    for member in (other_node, user):
        forged = hb.sign(RegistrySigner(member.identity), node.node_id, Capacity(cru=7))
        with pytest.raises(BusError) as e:
            await member.conn.request(node_status_subject(node.node_id), forged, 5)
        assert e.value.code == "not_permitted"
        with pytest.raises(BusError) as e:
            await member.registry.heartbeat(node.node_id, Capacity(cru=7))
        assert e.value.code == "not_permitted"
    assert await stored(nats_server, bus_insider, node.node_id) == before
    seen = await user.registry.get_node(node.node_id)
    assert seen.used.cru == 1 and seen.status == "up"


async def test_only_what_the_node_signed_for_itself_is_believed(
    enroll, nats_server: NatsServer, bus_insider: Identity, registry: RegistryService
) -> None:
    """Someone controlling the bus writes into a node's status subject: a status signed
    by another key, one the node signed for another node, one dated ahead, or bytes
    that are no status. None is believed: the node keeps its last checked status."""
    node, other, user = await enroll(node=True), await enroll(node=True), await enroll()
    await node.registry.heartbeat(node.node_id, Capacity(cru=1))
    assert (await user.registry.get_node(node.node_id)).used.cru == 1
    own = RegistrySigner(node.identity)
    hours_ahead = (int(time.time()) + 3 * 3600) * 1000
    cases = {
        "another key": hb.sign(RegistrySigner(other.identity), node.node_id, Capacity(cru=5)),
        "for another node": hb.sign(own, other.node_id, Capacity(cru=5)),
        "dated ahead": hb.sign(own, node.node_id, Capacity(cru=5), at_ms=hours_ahead),
        "not a status": b"x" * 86 + b"." + json.dumps({"node_id": node.node_id}).encode(),
        "unsigned": json.dumps({"node_id": node.node_id, "at": 1, "used": {"cru": 5}}).encode(),
    }
    insider = await connect(nats_server.url, bus_insider)
    try:
        js = insider.nc.jetstream()
        for what, blob in cases.items():
            checked = registry.index.checked
            await js.publish(node_status_subject(node.node_id), blob)
            assert await stored(nats_server, bus_insider, node.node_id) == blob
            got = await user.registry.get_node(node.node_id)
            assert got.used.cru == 1, what
            listed = await user.registry.list_nodes(free_cru=0, limit=100)
            assert [n.used.cru for n in listed if n.id == node.node_id] == [1], what
            if hb.unverified(blob) is not None:  # looks like a status: its signature was checked
                assert registry.index.checked > checked, what
    finally:
        await insider.close()
    # The node's next own status is believed again.
    await node.registry.heartbeat(node.node_id, Capacity(cru=0))
    assert (await user.registry.get_node(node.node_id)).used.cru == 0


async def test_a_new_service_copy_reads_statuses_from_the_stream(
    enroll, nats_server: NatsServer, registry_identity: Identity
) -> None:
    node = await enroll(node=True)
    await node.registry.heartbeat(node.node_id, Capacity(cru=1, hru=5))
    fresh = await RegistryService(nats_server.url, registry_identity).start()
    try:
        got = await fresh.index.search(ListNodesArgs(farm_id=None))
        [mine] = [n for n in got if n["id"] == node.node_id]
        assert mine["used"]["hru"] == 5 and mine["status"] == "up"
    finally:
        await fresh.stop()


async def test_two_service_copies_answer_the_same_pages(
    enroll, nats_server: NatsServer, registry_identity: Identity, registry: RegistryService
) -> None:
    """Two copies share the queue group: after heartbeats (some sent before the second
    copy started, some after), both answer every search with the same page, and paging
    by after_id walks every node exactly once."""
    nodes = [await enroll(node=True) for _ in range(6)]
    for i, n in enumerate(nodes[:3]):
        await n.registry.heartbeat(n.node_id, Capacity(cru=i % 2))
    second = await RegistryService(nats_server.url, registry_identity).start()
    try:
        for i, n in enumerate(nodes):
            await n.registry.heartbeat(n.node_id, Capacity(cru=(i + 1) % 2))
        searches = [
            ListNodesArgs(),
            ListNodesArgs(free_cru=1),
            ListNodesArgs(status="up", limit=2, offset=1),
            ListNodesArgs(after_id=nodes[2].node_id, limit=2),
            ListNodesArgs(farm_id=999),
        ]
        for args in searches:
            first_page = await registry.index.search(args)
            assert await second.index.search(args) == first_page, args
        assert [n["id"] for n in await second.index.search(ListNodesArgs(free_cru=1))] == [
            n.node_id for i, n in enumerate(nodes) if (i + 1) % 2 == 0
        ]
        # Through the bus, whichever copy answers: paged by after_id, every node once.
        reader, seen, after = nodes[0].registry, [], 0
        while page := await reader.list_nodes(after_id=after, limit=4):
            seen += [n.id for n in page]
            after = page[-1].id
        assert seen == sorted(n.node_id for n in nodes)
    finally:
        await second.stop()


async def test_a_page_of_new_twins_has_its_keys_read_at_once(
    enroll, nats_server: NatsServer, registry_identity: Identity
) -> None:
    """A copy that knows none of the page's twins reads their keys together (not one
    registry read per node in turn), then checks each status with its own twin's key."""
    nodes = [await enroll(node=True) for _ in range(4)]
    for i, n in enumerate(nodes):
        await n.registry.heartbeat(n.node_id, Capacity(cru=1, hru=10 + i))
    fresh = await RegistryService(nats_server.url, registry_identity).start()
    store, reading, most = fresh.store, 0, 0
    get = store.get

    async def counted(bucket, key, parse):  # type: ignore[no-untyped-def]
        nonlocal reading, most
        if bucket != "twins":
            return await get(bucket, key, parse)
        reading += 1
        most = max(most, reading)
        try:
            await asyncio.sleep(0.05)  # long enough for the others to start, if they do
            return await get(bucket, key, parse)
        finally:
            reading -= 1

    store.get = counted  # type: ignore[method-assign]
    try:
        got = {n["id"]: n for n in await fresh.index.search(ListNodesArgs(farm_id=None))}
        assert most == len(nodes), most  # every new twin's key at once
        for i, n in enumerate(nodes):
            assert got[n.node_id]["used"]["hru"] == 10 + i and got[n.node_id]["status"] == "up"
        checked = fresh.index.checked
        most = 0
        await nodes[0].registry.heartbeat(nodes[0].node_id, Capacity(cru=1, hru=99))
        got = {n["id"]: n for n in await fresh.index.search(ListNodesArgs(farm_id=None))}
        assert got[nodes[0].node_id]["used"]["hru"] == 99
        assert most == 0 and fresh.index.checked == checked + 1  # known keys: no read
    finally:
        await fresh.stop()


async def test_searches_that_come_together_share_one_look_at_the_stream(
    enroll, registry: RegistryService
) -> None:
    """Searches that arrive while the stream is being asked its last sequence share the
    next ask, not the one under way (it could miss a heartbeat acknowledged after it
    began): ten searches during one ask make one more, and each sees the heartbeat."""
    node = await enroll(node=True)
    index, js = registry.index, registry.store.js
    ask, held, let_go = js.stream_info, asyncio.Event(), asyncio.Event()

    async def gated(*a, **kw):  # type: ignore[no-untyped-def]
        if not held.is_set():
            held.set()
            await let_go.wait()
        return await ask(*a, **kw)

    js.stream_info = gated  # type: ignore[method-assign]
    try:
        asks = index.stream_asks
        first = asyncio.create_task(index.search(ListNodesArgs(farm_id=None)))
        await asyncio.wait_for(held.wait(), 30)
        await node.registry.heartbeat(node.node_id, Capacity(cru=1, hru=7))
        later = [asyncio.create_task(index.search(ListNodesArgs(farm_id=None))) for _ in range(10)]
        await asyncio.sleep(0.1)  # they all arrive during the held ask
        let_go.set()
        await first
        for page in await asyncio.gather(*later):
            [mine] = [n for n in page if n["id"] == node.node_id]
            assert mine["used"]["hru"] == 7
        assert index.stream_asks - asks == 2
    finally:
        js.stream_info = ask  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.ZOS_HEARTBEATS.c1.1.4242.17.1767225600123456789.3",
        "$JS.ACK._.acchash.ZOS_HEARTBEATS.c1.1.4242.17.1767225600123456789.3",
        "$JS.ACK.dom.acchash.ZOS_HEARTBEATS.c1.1.4242.17.1767225600123456789.3.r4nd",
    ],
    ids=["v1", "v2", "v2 with a random token"],
)
def test_a_message_position_is_read_from_its_reply_as_nats_py_reads_it(reply: str) -> None:
    msg = Msg(_client=None, subject=node_status_subject(7), reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata
    expected = (meta.sequence.stream, meta.timestamp.timestamp(), meta.num_pending)
    assert position(msg) == pytest.approx(expected)
    assert position(msg)[:1] == (4242,) and position(msg)[2] == 3


@pytest.mark.parametrize("reply", ["", "_INBOX.x.y", "$JS.ACK.too.few"])
def test_a_message_from_no_stream_has_no_position(reply: str) -> None:
    msg = Msg(_client=None, subject=node_status_subject(7), reply=reply)  # type: ignore[arg-type]
    with pytest.raises(NotJSMessageError):
        position(msg)
