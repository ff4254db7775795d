"""Registry fixtures: a service on a fresh nats-server and clients with new keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from hangguard import HANG_GUARD
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import Capacity, Farm, Node, RegistryClient, RegistryService

MakeClient = Callable[..., Awaitable[RegistryClient]]
CAPACITY = Capacity(cru=8, mru=16 << 30, sru=512 << 30, hru=2 << 40)


@pytest.fixture
async def make_client(
    nats_server: NatsServer, registry: RegistryService
) -> AsyncIterator[MakeClient]:
    clients: list[RegistryClient] = []

    async def make(register: bool = True, identity: Identity | None = None) -> RegistryClient:
        client = RegistryClient(
            nats_server.url,
            identity or Identity.generate(),
            registry_key=registry.public_key,
            timeout=HANG_GUARD,  # a burst of requests on a busy machine takes more than 10 s
        )
        await client.connect()
        clients.append(client)
        if register:
            await client.register_twin()
        return client

    try:
        yield make
    finally:
        for c in clients:
            await c.close()


@dataclass
class Grid:
    farmer: RegistryClient
    farm: Farm
    node_client: RegistryClient
    node: Node
    user: RegistryClient


@pytest.fixture
async def grid(make_client: MakeClient) -> Grid:
    farmer = await make_client()
    farm = await farmer.create_farm("farm-one")
    token = await farmer.farm_join_token(farm.id)
    node_client = await make_client()
    node = await node_client.register_node(farm.id, token, CAPACITY)
    user = await make_client()
    return Grid(farmer, farm, node_client, node, user)
