"""Node fixtures: a real registry on nats-server, a farm, twins, and node agents run as
real subprocesses (`python -m zos.cli node run`), with every mount, loop device and
process they leave removed afterwards, even when a test fails."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nodehelpers import Farm, NodeProcess, User, remove_leftovers

from zos.bus import BusClient
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import RegistryClient, RegistryService


@pytest.fixture
async def farm(nats_server: NatsServer, registry: RegistryService) -> AsyncIterator[Farm]:
    farmer = RegistryClient(nats_server.url, Identity.generate(), registry_key=registry.public_key)
    await farmer.connect()
    await farmer.register_twin()
    created = await farmer.create_farm(f"farm-{os.getpid()}")
    token = await farmer.farm_join_token(created.id)
    try:
        yield Farm(nats_server.url, farmer, created.id, token, registry.public_key)
    finally:
        await farmer.close()


@pytest.fixture
async def make_user(farm: Farm) -> AsyncIterator[Any]:
    users: list[User] = []

    async def make() -> User:
        identity = Identity.generate()
        registry = RegistryClient(farm.nats, identity, registry_key=farm.registry_key)
        await registry.connect()
        twin = await registry.register_twin()
        resolver = await registry.key_resolver()
        bus = await BusClient(registry.conn, identity, twin.id, resolver).connect()
        user = User(identity, twin.id, registry, bus)
        users.append(user)
        return user

    try:
        yield make
    finally:
        for u in users:
            await u.bus.close()
            await u.registry.close()


@pytest.fixture
async def make_node(farm: Farm, tmp_path: Path) -> AsyncIterator[Any]:
    nodes: list[NodeProcess] = []

    async def make(user: User, *args: str, name: str = "node") -> NodeProcess:
        node = NodeProcess(farm, tmp_path / name, list(args))
        nodes.append(node)
        node.start()
        await node.wait_ready(user)
        return node

    try:
        yield make
    finally:
        for n in nodes:
            n.stop()
        await remove_leftovers(tmp_path)
