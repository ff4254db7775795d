"""A three-server NATS cluster with KV replicas 3: one server dies under load.

Authorization is on, as on any grid: every client proves its key and is let in by the
registry's auth callout, routes authenticate with the cluster's secret. Clients keep
writing (twins, each from its own new connection, name contracts, a node's heartbeats)
and reading while the server the registry service is connected to is killed. Every write
that was acknowledged must still be there afterwards, and the service must go on
answering. The test waits for those events (acknowledged writes and heartbeats, answered
reads), never for a time: how fast a cluster fails over is a benchmark's business. The
timeout marker stops a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from hangguard import HANG_GUARD
from zos.bus import BusError, connect
from zos.grid.natsserver import start_cluster
from zos.identity import Identity
from zos.registry import Capacity, RegistryClient, RegistryService

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(180)]


async def retry(coro_fn):  # type: ignore[no-untyped-def]
    """Until the cluster answers (it elects its JetStream leaders after a start or a kill)."""
    while True:
        try:
            return await coro_fn()
        except BusError:
            await asyncio.sleep(0.3)


async def test_cluster_survives_a_dead_server(tmp_path: Path, registry_identity: Identity) -> None:
    key = registry_identity.public_key
    servers = start_cluster(tmp_path, key, 3)
    urls = [s.url for s in servers]
    service = None
    clients: list[RegistryClient] = []
    try:
        service = await RegistryService(urls, registry_identity, replicas=3).start()
        for _ in range(3):
            c = await RegistryClient(urls, Identity.generate(), registry_key=key).connect()
            await retry(c.register_twin)
            clients.append(c)

        # A node heartbeating through it all; its status goes to the heartbeat stream.
        farm = await clients[0].create_farm("cluster-farm")
        node_client = await RegistryClient(urls, Identity.generate(), registry_key=key).connect()
        clients.append(node_client)
        await node_client.register_twin()
        token = await clients[0].farm_join_token(farm.id)
        node = await node_client.register_node(farm.id, token, Capacity(cru=1 << 20))
        beats = {"acked": 0, "sent": 0}

        async def beater() -> None:
            while not stop.is_set():
                beats["sent"] += 1
                try:
                    await node_client.heartbeat(node.id, Capacity(cru=beats["sent"]))
                    beats["acked"] = beats["sent"]
                    await advanced()
                except BusError as e:
                    print(f"{time.monotonic():.1f} beater: {e}")  # shown on a failure
                await asyncio.sleep(0.02)

        acked: list[tuple[RegistryClient, str, int]] = []  # client, name, contract id
        twins: list[int] = []
        stop = asyncio.Event()
        progress = asyncio.Condition()  # notified on every acknowledged write and read

        async def advanced() -> None:
            async with progress:
                progress.notify_all()

        async def until(condition) -> None:  # type: ignore[no-untyped-def]
            async with progress:
                await progress.wait_for(condition)

        async def writer(n: int, client: RegistryClient) -> None:
            i = 0
            while not stop.is_set():
                name = f"w{n}-{i}"
                i += 1
                try:
                    contract = await client.create_name_contract(name)
                    acked.append((client, name, contract.id))
                    identity = Identity.generate()
                    conn = await connect(urls, identity, first_connect_timeout=5)
                    try:
                        newcomer = RegistryClient(conn, identity, registry_key=key)
                        twins.append((await newcomer.register_twin()).id)
                    finally:
                        await conn.close()
                    await advanced()
                except BusError as e:
                    # unacknowledged: it may or may not have happened (shown on a failure)
                    print(f"{time.monotonic():.1f} writer {n}: {e}")
                    await asyncio.sleep(0.1)

        reads = 0

        async def reader(client: RegistryClient) -> None:
            nonlocal reads
            while not stop.is_set():
                with contextlib.suppress(BusError):
                    await client.list_contracts(client.twin_id)
                    await client.get_twin(client.twin_id or 1)
                    reads += 1
                    await advanced()
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(writer(i, c)) for i, c in enumerate(clients[:3])]
        tasks.append(asyncio.create_task(reader(clients[0])))
        tasks.append(asyncio.create_task(beater()))
        await until(lambda: len(acked) >= 5 and reads > 0 and beats["acked"] > 0)

        # Kill the server the service is connected to, as a crash would.
        assert service.nc.connected_url is not None
        port = service.nc.connected_url.port
        victim = next(s for s in servers if s.port == port)
        victim.kill()
        killed_at, reads_at_kill, beats_at_kill = len(acked), reads, beats["acked"]
        # JetStream elects new leaders; writes, reads and heartbeats must resume.
        await until(
            lambda: (
                len(acked) >= killed_at + 30
                and reads > reads_at_kill
                and beats["acked"] > beats_at_kill
            )
        )
        stop.set()
        await asyncio.gather(*tasks)

        for client, name, contract_id in acked:
            got = await retry(lambda c=client, n=name: c.get_name_contract(n))
            assert got.id == contract_id and got.owner_twin == client.twin_id
        for twin_id in twins:
            await retry(lambda t=twin_id: clients[0].get_twin(t))
        # Ids stayed unique through the failover.
        assert len({cid for _, _, cid in acked}) == len(acked)
        assert len(set(twins)) == len(twins)
        # The node's newest acknowledged status (or a later one sent) is what it reads as.
        beaten = await retry(lambda: clients[0].get_node(node.id))
        assert beats["acked"] <= beaten.used.cru <= beats["sent"]
        [listed] = await retry(lambda: clients[0].list_nodes(farm=farm.id))
        assert listed.used.cru == beaten.used.cru and listed.status == "up"
        mine = await clients[0].list_contracts(clients[0].twin_id)
        assert {c.id for c in mine} >= {cid for c, _, cid in acked if c is clients[0]}
    finally:
        for c in clients:
            await c.close()
        if service is not None:
            await service.stop()
        for s in servers:
            s.stop()


async def test_service_copies_on_each_server_never_share_an_id(
    tmp_path: Path, registry_identity: Identity
) -> None:
    """Three service copies, one per server, take ids at once: compare-and-set holds."""
    key = registry_identity.public_key
    servers = start_cluster(tmp_path, key, 3)
    services: list[RegistryService] = []
    clients: list[RegistryClient] = []
    try:
        for s in servers:
            services.append(await RegistryService(s.url, registry_identity, replicas=3).start())
        for i in range(60):
            c = RegistryClient(
                servers[i % 3].url, Identity.generate(), registry_key=key, timeout=HANG_GUARD
            )
            clients.append(await c.connect())
        twins = await asyncio.gather(*(c.register_twin() for c in clients))
        assert len({t.id for t in twins}) == len(twins)
        names = await asyncio.gather(
            *(c.create_name_contract("one-name") for c in clients), return_exceptions=True
        )
        won = [n for n in names if not isinstance(n, BaseException)]
        assert len(won) == 1, names
        assert all(isinstance(n, BusError) and n.code == "conflict" for n in names if n not in won)
        contracts = await asyncio.gather(
            *(c.create_name_contract(f"n{i}") for i, c in enumerate(clients))
        )
        assert len({c.id for c in contracts} | {won[0].id}) == len(clients) + 1
    finally:
        for c in clients:
            await c.close()
        for svc in services:
            await svc.stop()
        for s in servers:
            s.stop()
