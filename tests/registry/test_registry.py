"""Twins, farms, nodes and contracts through a real registry service on nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hangguard import HANG_GUARD
from zos.bus import BusError
from zos.identity import Identity
from zos.registry import (
    Capacity,
    ContractEvent,
    JoinToken,
    NameContract,
    NodeContract,
    RegistryClient,
    RegistryKey,
    RegistryService,
    Transaction,
)

Grid = Any  # the `grid` fixture of conftest.py: farmer, farm, node_client, node, user
MakeClient = Callable[..., Awaitable[RegistryClient]]
CAPACITY = Capacity(cru=8, mru=16 << 30, sru=512 << 30, hru=2 << 40)

pytestmark = pytest.mark.nats

HASH1 = "a" * 32
HASH2 = "b" * 32


async def refused(code: str, coro: object, match: str = "") -> BusError:
    with pytest.raises(BusError) as e:
        await coro  # type: ignore[misc]
    assert e.value.code == code, e.value
    assert match in e.value.message, e.value.message
    return e.value


async def test_twins(make_client: MakeClient) -> None:
    a = await make_client(register=False)
    twin = await a.register_twin()
    assert twin.public_key == a.identity.public_hex  # type: ignore[union-attr]
    assert await a.get_twin(twin.id) == twin
    assert await a.twin_by_key(a.identity.public_key) == twin  # type: ignore[union-attr]
    assert await a.twin_by_key(Identity.generate().public_key) is None
    await refused("conflict", a.register_twin(), "already twin")
    assert (await a.ensure_twin()).id == twin.id
    b = await make_client()
    assert b.twin_id == twin.id + 1
    await refused("not_found", a.get_twin(999))
    await refused("invalid", a.get_twin(0), "id")
    resolve = await a.key_resolver()
    assert await resolve(twin.id) == a.identity.public_key  # type: ignore[union-attr]
    assert await resolve(999) is None


async def test_unregistered_key_cannot_transact(make_client: MakeClient) -> None:
    stranger = await make_client(register=False)
    # nats-server itself refuses an unregistered key anything but its registration.
    await refused("not_permitted", stranger.create_farm("nope"), "zos.registry.query")
    stranger.twin_id = 99
    await refused("not_permitted", stranger.create_farm("nope"), "zos.registry.tx")
    other = await make_client()
    await stranger.register_twin()
    stranger.twin_id = other.twin_id  # claim to be someone else: the signature does not match
    await refused("bad_signature", stranger.create_farm("nope"))


async def test_farms(make_client: MakeClient) -> None:
    owner = await make_client()
    farm = await owner.create_farm("Green-Farm")
    assert farm.owner_twin == owner.twin_id
    assert await owner.get_farm(farm.id) == farm
    assert await owner.farm_by_name("green-farm") == farm
    await refused("conflict", owner.create_farm("green-FARM"), "taken")
    await refused("invalid", owner.create_farm("x"), "name")
    await refused("invalid", owner.create_farm("bad name!"), "name")
    other = await make_client()
    second = await other.create_farm("blue")
    assert [f.id for f in await owner.list_farms()] == [farm.id, second.id]
    assert [f.id for f in await owner.list_farms(owner_twin=other.twin_id)] == [second.id]


async def test_node_registration_needs_owner_token(make_client: MakeClient) -> None:
    owner = await make_client()
    farm = await owner.create_farm("farm-a")
    other_farm = await (await make_client()).create_farm("farm-b")
    node = await make_client()

    # Only the owner can make a token; a token signed by anyone else is refused.
    stranger = await make_client()
    await refused("forbidden", stranger.farm_join_token(farm.id), "owned by")
    fake = JoinToken(
        farm_id=farm.id,
        node_twin=0,
        expires=time.time() + 60,
        nonce="0" * 16,
        registry_key=owner.registry.hex,
    )
    await refused(
        "forbidden",
        node.register_node(farm.id, fake.signed(stranger.identity), CAPACITY),  # type: ignore[arg-type]
        "owner",
    )
    unsigned = fake.encode()
    await refused("forbidden", node.register_node(farm.id, unsigned, CAPACITY), "owner")
    await refused("invalid", node.register_node(farm.id, "%%%", CAPACITY), "join token")

    token = await owner.farm_join_token(farm.id)
    await refused("forbidden", node.register_node(other_farm.id, token, CAPACITY), "for farm")
    await refused("not_found", node.register_node(999, token, CAPACITY), "farm 999")
    for_other = await owner.farm_join_token(farm.id, node_twin=stranger.twin_id or 0)
    await refused("forbidden", node.register_node(farm.id, for_other, CAPACITY), "for twin")
    expired = await owner.farm_join_token(farm.id, expires=-1)
    await refused("forbidden", node.register_node(farm.id, expired, CAPACITY), "expired")
    # A token for another grid's registry (the node would trust that key): refused.
    elsewhere = fake.model_copy(update={"registry_key": Identity.generate().public_hex})
    await refused(
        "forbidden",
        node.register_node(farm.id, elsewhere.signed(owner.identity), CAPACITY),
        "names registry key",
    )
    await refused(
        "invalid",
        node.register_node(farm.id, token, {"cru": -1}),
        "capacity.cru",
    )
    await refused(
        "invalid",
        node.register_node(farm.id, token, CAPACITY, public_config={"ipv4": "300.1.1.1/24"}),
        "public_config.ipv4",
    )

    mine = await owner.farm_join_token(farm.id, node_twin=node.twin_id or 0)
    registered = await node.register_node(
        farm.id,
        mine,
        CAPACITY,
        location={"country": "BE", "city": "Ghent", "latitude": 51.05, "longitude": 3.72},
        public_config={"ipv4": "185.1.2.3/24", "gw4": "185.1.2.1"},
    )
    assert registered.farm_id == farm.id and registered.twin_id == node.twin_id
    assert registered.status == "up" and registered.location.city == "Ghent"
    # Registering again (a node restart) updates the same node.
    again = await node.register_node(farm.id, token, Capacity(cru=16))
    assert again.id == registered.id and again.capacity.cru == 16
    assert (await node.node_by_twin(node.twin_id or 0)).id == registered.id  # type: ignore[union-attr]


async def test_heartbeat_and_removal(grid: Grid, make_client: MakeClient) -> None:
    used = Capacity(cru=2, mru=4 << 30)
    beat = await grid.node_client.heartbeat(grid.node.id, used)
    assert beat["node_id"] == grid.node.id
    node = await grid.user.get_node(grid.node.id)
    assert node.used == used and node.free.cru == CAPACITY.cru - 2
    # Another twin's heartbeat for this node, or this node's for another: nats-server
    # refuses the subject already.
    await refused("not_permitted", grid.user.heartbeat(grid.node.id), "heartbeat")
    await refused("not_permitted", grid.node_client.heartbeat(999), "heartbeat.999")
    await refused("forbidden", grid.user.remove_node(grid.node.id), "owner")
    await refused("forbidden", grid.node_client.remove_node(grid.node.id), "owner")
    assert (await grid.farmer.remove_node(grid.node.id))["removed"] is True
    await refused("not_found", grid.user.get_node(grid.node.id))
    assert await grid.user.node_by_twin(grid.node_client.twin_id or 0) is None
    assert await grid.user.list_nodes() == []
    await refused("not_found", grid.user.create_node_contract(grid.node.id, HASH1))
    # Removed, the twin may join again (here: another farm).
    owner2 = await make_client()
    farm2 = await owner2.create_farm("farm-two")
    token2 = await owner2.farm_join_token(farm2.id)
    rejoined = await grid.node_client.register_node(farm2.id, token2, CAPACITY)
    assert rejoined.id != grid.node.id and rejoined.farm_id == farm2.id


async def test_node_in_another_farm_is_refused(grid: Grid, make_client: MakeClient) -> None:
    owner2 = await make_client()
    farm2 = await owner2.create_farm("farm-two")
    token2 = await owner2.farm_join_token(farm2.id)
    await refused(
        "conflict", grid.node_client.register_node(farm2.id, token2, CAPACITY), "already node"
    )


async def test_node_contracts(grid: Grid) -> None:
    user, node = grid.user, grid.node
    contract = await user.create_node_contract(node.id, HASH1, public_ips=1)
    assert contract.owner_twin == user.twin_id and contract.state == "created"
    assert contract.public_ips == 1
    assert await user.get_contract(contract.id) == contract

    updated = await user.update_node_contract(contract.id, HASH2)
    assert updated.deployment_hash == HASH2
    for other in (grid.farmer, grid.node_client):
        await refused("forbidden", other.update_node_contract(contract.id, HASH1), "belongs")
        await refused("forbidden", other.cancel_contract(contract.id), "belongs")
    assert (await user.get_contract(contract.id)).deployment_hash == HASH2

    await refused("invalid", user.update_node_contract(contract.id, "nothex"), "deployment_hash")
    await refused("invalid", user.create_node_contract(node.id, HASH1, public_ips=-1))
    await refused("not_found", user.create_node_contract(999, HASH1), "node 999")
    await refused("not_found", user.update_node_contract(999, HASH1))

    second = await user.create_node_contract(node.id, HASH1)
    cancelled = await user.cancel_contract(contract.id)
    assert cancelled.state == "deleted"
    await refused("conflict", user.update_node_contract(contract.id, HASH1), "cancelled")
    await refused("conflict", user.cancel_contract(contract.id), "cancelled")

    mine = await user.list_contracts(user.twin_id)
    assert [(c.id, c.state) for c in mine] == [(contract.id, "deleted"), (second.id, "created")]
    live = await user.list_contracts(user.twin_id, state="created")
    assert [c.id for c in live] == [second.id]
    assert [c.id for c in await user.list_contracts(node=node.id)] == [contract.id, second.id]
    assert await user.list_contracts(grid.farmer.twin_id) == []


async def test_contract_on_a_down_node_is_refused(nats_server, make_client: MakeClient) -> None:
    """A node is down once its last heartbeat is older than the service's `down_after`.
    No test waits for a heartbeat to age: service copies with other thresholds read the
    same stored heartbeats, one after the other, on a server of their own (so the
    fixture's copy answers nothing here). `down_after=0`: every heartbeat is already old."""
    from zos.grid.natsserver import NatsServer

    key = Identity.generate()
    other = NatsServer(
        store_dir=nats_server.store_dir.parent / "other", registry_key=key.public_key
    ).start()
    clients: list[RegistryClient] = []
    try:
        async with RegistryService(other.url, key, down_after=3600):
            for _ in range(3):  # let in by this copy's auth callout; they stay connected
                c = RegistryClient(other.url, Identity.generate(), registry_key=key.public_key)
                clients.append(await c.connect())
            farmer, node_c, user = clients
            for c in clients:
                await c.register_twin()
            farm = await farmer.create_farm("downfarm")
            node = await node_c.register_node(
                farm.id, await farmer.farm_join_token(farm.id), CAPACITY
            )
            assert (await user.get_node(node.id)).status == "up"
            assert (await user.create_node_contract(node.id, HASH1)).node_id == node.id
        async with RegistryService(other.url, key, down_after=0):
            before = await user.get_node(node.id)
            assert before.status == "down"
            assert [n.id for n in await user.list_nodes(status="down")] == [node.id]
            assert await user.list_nodes(status="up") == []
            await refused("unavailable", user.create_node_contract(node.id, HASH1), "down")
            await node_c.heartbeat(node.id)
            assert (await user.get_node(node.id)).last_heartbeat > before.last_heartbeat
        async with RegistryService(other.url, key, down_after=3600):
            assert (await user.get_node(node.id)).status == "up"
            assert [n.id for n in await user.list_nodes(status="up")] == [node.id]
            assert (await user.create_node_contract(node.id, HASH1)).node_id == node.id
    finally:
        for c in clients:
            await c.close()
        other.stop()


async def test_name_contracts(grid: Grid) -> None:
    user, other = grid.user, grid.farmer
    contract = await user.create_name_contract("mysite")
    assert isinstance(contract, NameContract) and contract.owner_twin == user.twin_id
    assert await other.get_name_contract("mysite") == contract
    # Names are global: taken for every twin, the refusal naming the owner.
    await refused("conflict", other.create_name_contract("mysite"), f"taken by twin {user.twin_id}")
    await refused("conflict", user.create_name_contract("mysite"), f"taken by twin {user.twin_id}")
    await refused("invalid", other.create_name_contract("Bad Name"), "name")
    await refused("forbidden", other.cancel_name_contract("mysite"), "belongs")
    await refused("forbidden", other.cancel_contract(contract.id), "belongs")
    await refused("invalid", user.update_node_contract(contract.id, HASH1), "name contract")
    assert (await user.cancel_name_contract("mysite")).state == "deleted"
    await refused("not_found", other.get_name_contract("mysite"))
    await refused("not_found", user.cancel_name_contract("mysite"))
    taken_again = await other.create_name_contract("mysite")  # the name is free again
    assert taken_again.owner_twin == other.twin_id
    # Cancelled by its id (cancel_contract), a name is released too.
    await other.cancel_contract(taken_again.id)
    assert (await user.create_name_contract("mysite")).owner_twin == user.twin_id
    assert [c.type for c in await user.list_contracts(user.twin_id)] == ["name", "name"]


async def test_replayed_and_bad_transactions(grid: Grid) -> None:
    user = grid.user
    tx = await user.sign_tx(
        "create_node_contract", {"node_id": grid.node.id, "deployment_hash": HASH1}
    )
    first = await user.submit(tx)
    await refused("replayed", user.submit(tx), tx.id)
    assert len(await user.list_contracts(user.twin_id)) == 1 and first["id"]

    # Any change to a signed transaction breaks its signature.
    altered = tx.model_copy(update={"id": "f" * 32, "body": {**tx.body, "public_ips": 5}})
    await refused("bad_signature", user.submit(altered))
    # Another twin's transaction resubmitted as one's own: wrong key.
    stolen = tx.model_copy(update={"twin": grid.farmer.twin_id})
    await refused("bad_signature", user.submit(stolen))

    old = Transaction.build(user.identity, user.twin_id, "create_name_contract", {"name": "x"})  # type: ignore[arg-type]
    old.timestamp -= 3600_000
    old.signature = user.identity.sign(old.signing_bytes()).hex()  # type: ignore[union-attr]
    await refused("expired", user.submit(old))
    future = Transaction.build(user.identity, user.twin_id, "create_name_contract", {"name": "x"})  # type: ignore[arg-type]
    future.timestamp += 3600_000
    future.signature = user.identity.sign(future.signing_bytes()).hex()  # type: ignore[union-attr]
    await refused("expired", user.submit(future))

    await refused("malformed", user.transact("mint_money", {}), "unknown transaction kind")
    await refused("invalid", user.transact("cancel_contract", {"contract_id": "x"}), "contract_id")
    await refused("invalid", user.transact("cancel_contract", {"id": 1}), "contract_id")
    for raw in (b"", b"junk", b"{}", b"[1]"):
        await refused("malformed", user._ask("zos.registry.tx", raw, ""))
    await refused("too_large", user._ask("zos.registry.tx", b" " * 100_000, ""))
    await refused("malformed", user._ask("zos.registry.query", b"junk", ""))
    await refused("not_found", user.query("drop_tables"), "unknown query")
    await refused("invalid", user.query("list_nodes", status="sideways"), "status")


async def test_list_nodes_filters(make_client: MakeClient) -> None:
    farmers = [await make_client() for _ in range(2)]
    farms = [await f.create_farm(f"farm-{i}") for i, f in enumerate(farmers)]
    nodes = []
    for i in range(6):
        c = await make_client()
        farm = farms[i % 2]
        token = await farmers[i % 2].farm_join_token(farm.id)
        node = await c.register_node(farm.id, token, Capacity(cru=i + 1, mru=(i + 1) << 30))
        await c.heartbeat(node.id, Capacity(cru=1))
        nodes.append(node)
    reader = farmers[0]
    assert [n.id for n in await reader.list_nodes()] == [n.id for n in nodes]
    assert [n.id for n in await reader.list_nodes(farm=farms[1].id)] == [
        nodes[1].id,
        nodes[3].id,
        nodes[5].id,
    ]
    # free = total - used: node i has i free cores
    assert [n.id for n in await reader.list_nodes(free_cru=4)] == [nodes[4].id, nodes[5].id]
    assert [n.id for n in await reader.list_nodes(free_mru=6 << 30)] == [nodes[5].id]
    assert [n.id for n in await reader.list_nodes(status="up", limit=2, offset=1)] == [
        nodes[1].id,
        nodes[2].id,
    ]
    assert await reader.list_nodes(farm=999) == []


async def test_a_node_using_more_than_it_has_is_still_listed(make_client: MakeClient) -> None:
    # Issue 12, finding 8: a node whose used capacity exceeded its total (cores may be
    # overbooked) was dropped from every listing, even an unfiltered one.
    farmer = await make_client()
    farm = await farmer.create_farm("overbooked")
    node_client = await make_client()
    token = await farmer.farm_join_token(farm.id)
    node = await node_client.register_node(farm.id, token, Capacity(cru=2, mru=8 << 30))
    await node_client.heartbeat(node.id, Capacity(cru=8, mru=1 << 30, hru=1 << 30))
    assert [n.id for n in await farmer.list_nodes()] == [node.id]
    assert [n.id for n in await farmer.list_nodes(farm=farm.id, status="up")] == [node.id]
    assert [n.id for n in await farmer.list_nodes(free_mru=7 << 30)] == [node.id]
    assert await farmer.list_nodes(free_cru=1) == []  # no core is free, and none is shown
    [listed] = await farmer.list_nodes()
    assert listed.free.cru == 0 and listed.free.hru == 0


async def test_contract_events_pushed_signed_and_read_back(grid: Grid) -> None:
    user, node = grid.user, grid.node
    events: list[ContractEvent] = []
    got_three = asyncio.Event()

    async def on_event(event: ContractEvent) -> None:
        events.append(event)
        if len(events) == 3:
            got_three.set()

    await grid.node_client.subscribe_contract_events(node.id, on_event)
    c = await user.create_node_contract(node.id, HASH1)
    await user.update_node_contract(c.id, HASH2)
    await user.cancel_contract(c.id)
    await asyncio.wait_for(got_three.wait(), 10)
    assert [(e.kind, e.contract.id) for e in events] == [
        ("created", c.id),
        ("updated", c.id),
        ("cancelled", c.id),
    ]
    assert events[0].seq < events[1].seq < events[2].seq
    # A node that was away reads them back from the stream, signed, from where it was.
    stored = await grid.node_client.contract_events(node.id)
    assert [(e.kind, e.seq) for e in stored] == [(e.kind, e.seq) for e in events]
    later = await grid.node_client.contract_events(node.id, after_seq=events[0].seq)
    assert [e.kind for e in later] == ["updated", "cancelled"]
    assert await grid.node_client.contract_events(node.id, after_seq=events[2].seq) == []
    # Only that node hears its events: nats-server refuses anyone else the subject.
    await user.subscribe_contract_events(node.id, on_event)
    await user.conn.settle()
    assert user.conn.refused(f"zos.registry.events.{node.id}", "subscription")


async def test_two_service_copies_never_race(
    nats_server, registry: RegistryService, make_client: MakeClient
) -> None:
    """A second copy in the queue group: concurrent registrations get distinct ids."""
    async with RegistryService(nats_server.url, registry.signer.identity) as other:
        clients = [await make_client(register=False) for _ in range(40)]
        twins = await asyncio.gather(*(c.register_twin() for c in clients))
        ids = [t.id for t in twins]
        assert len(set(ids)) == 40
        user = clients[0]
        names = await asyncio.gather(
            *(c.create_name_contract("contested") for c in clients[:10]), return_exceptions=True
        )
        winners = [n for n in names if isinstance(n, NameContract)]
        losers = [n for n in names if isinstance(n, BusError)]
        assert len(winners) == 1 and all(e.code == "conflict" for e in losers)
        assert (await user.get_name_contract("contested")).id == winners[0].id
        # Each copy's mirror sees the other's writes (through its watch).
        deadline = time.monotonic() + HANG_GUARD
        for service in (registry, other):
            while winners[0].id not in {c.id for c in service.contracts.values()}:
                assert time.monotonic() < deadline, "a mirror missed a write"
                await asyncio.sleep(0.05)
        assert not any(isinstance(n, NodeContract) for n in names)


async def test_service_and_watchers_survive_a_nats_restart(nats_server, grid: Grid) -> None:
    """The server goes away and comes back (same store): state is kept, all reconnect."""
    user, node = grid.user, grid.node
    first = await user.create_node_contract(node.id, HASH1)
    events: list[tuple[str, int]] = []
    seen = asyncio.Event()

    async def on_event(event: ContractEvent) -> None:
        events.append((event.kind, event.contract.id))
        seen.set()

    await grid.node_client.subscribe_contract_events(node.id, on_event)
    before = await grid.node_client.contract_events(node.id)
    nats_server.stop()
    await asyncio.sleep(0.5)
    nats_server.start()
    deadline = time.monotonic() + 30
    while True:  # both back: the service (its answers) and the node's connection
        try:
            await grid.node_client.get_node(node.id)
            await user.get_contract(first.id)
            break
        except BusError:
            assert time.monotonic() < deadline, "registry did not come back"
            await asyncio.sleep(0.3)
    second = await user.create_node_contract(node.id, HASH2)
    assert (await user.get_contract(first.id)).deployment_hash == HASH1
    assert [c.id for c in await user.list_contracts(user.twin_id)] == [first.id, second.id]
    await asyncio.wait_for(seen.wait(), 10)  # the node's subscription came back too
    assert events == [("created", second.id)]
    stored = await grid.node_client.contract_events(node.id, before[-1].seq)
    assert [(e.kind, e.contract.id) for e in stored] == [("created", second.id)]


async def test_audit_stream_records_accepted_transactions(
    grid: Grid, registry: RegistryService
) -> None:
    contract = await grid.user.create_node_contract(grid.node.id, HASH1)
    # Only the registry reads its stream (nats-server refuses anyone else $JS.API).
    subject = "zos.registry.audit.create_node_contract"
    [(_, raw)] = await registry.store.read_stream(subject, 0, 10)
    record = json.loads(raw)
    assert record["tx"]["twin"] == grid.user.twin_id
    assert record["tx"]["signature"] and record["result"]["id"] == contract.id
    [(_, node_raw)] = await registry.store.read_stream("zos.registry.audit.register_node", 0, 9)
    assert json.loads(node_raw)["result"]["id"] == grid.node.id
    # Stored signed by the registry: what the stream holds does not verify under any
    # other key, nor as another subject's message.
    msg = await registry.store.js.get_last_msg("ZOS_REGISTRY", subject)
    assert registry.store.key.open(f"stream/{subject}", msg.data) == raw
    for context, key in ((f"stream/{subject}", RegistryKey(Identity.generate().public_key)),
                         ("stream/zos.registry.audit.other", registry.store.key)):  # fmt: skip
        with pytest.raises(BusError) as e:
            key.open(context, msg.data)
        assert e.value.code == "bad_signature"
    with pytest.raises(BusError) as e:
        await grid.user.conn.request("$JS.API.STREAM.MSG.GET.ZOS_REGISTRY", b"{}", 5)
    assert e.value.code == "not_permitted"


async def test_registrations_are_limited_per_key(make_client: MakeClient) -> None:
    from zos.registry.service import REGISTER_BURST

    eager = await make_client(register=False)
    for _ in range(REGISTER_BURST):  # the first registers, the others find the twin
        await eager.ensure_twin() if eager.twin_id is None else await eager._register()
    await refused("busy", eager._register(), "too many registrations from this key")
    other = await make_client(register=False)
    assert (await other.register_twin()).id == eager.twin_id + 1  # another key is not held up


async def test_a_resync_checks_only_entries_it_has_not_read(
    grid: Grid, registry: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backstop re-read of a bucket (every 30 s) verified every value's signature
    # again: 100,000 nodes, seconds of CPU each time, in every service copy.
    opened: list[str] = []
    real_open = registry.store.open

    def counting_open(bucket: str, key: str, data: bytes) -> bytes:
        opened.append(key)
        return real_open(bucket, key, data)

    monkeypatch.setattr(registry.store, "open", counting_open)
    before = dict(registry.nodes.items)
    await registry.nodes.resync()
    assert opened == [] and registry.nodes.items == before
    # An entry it has not read (here: forgotten) is read and checked again.
    del registry.nodes.items[str(grid.node.id)]
    await registry.nodes.resync()
    assert opened == [str(grid.node.id)] and registry.nodes.items == before
