"""Node fixtures: a real registry on nats-server, a farm, twins, node agents run as real
subprocesses (`python -m zos.cli node run`), with every mount, loop device and process
they leave removed afterwards, even when a test fails; a busybox flist served over HTTP."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nodehelpers import Farm, NodeProcess, User, remove_leftovers, wipe

from zos.bus import BusClient
from zos.flist import Router, pack
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # requests are not news
        pass


@pytest.fixture
async def busybox_flist(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[tuple[str, str]]:
    """(URL of busybox.fl over HTTP, the http:// store serving its blocks from the same
    server: the node is given it with `--store`, as the one store it may use on its own
    loopback)."""
    www = tmp_path / "www"
    www.mkdir()
    router = Router.parse([f"dir://{www}"])  # the layout an http store reads: /xx/<hex>
    try:
        await pack(busybox_rootfs, www / "busybox.fl", router)
    finally:
        await router.close()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield f"{base}/busybox.fl", base
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prefix() -> str:
    """A namespace prefix for the test's nodes (`--netns-prefix`)."""
    return f"zt{os.getpid() % 100000}-"


@pytest.fixture
def sweep(prefix: str) -> Iterator[list[NodeProcess]]:
    """Stops the nodes given to it, then removes whatever their workloads left
    (containers, mounts, namespaces, the log daemon), even when the test failed."""
    nodes: list[NodeProcess] = []
    yield nodes
    for node in nodes:
        node.stop()
        wiped = wipe(node.data_dir, prefix)
        if wiped.returncode != 0:  # keep sweeping; the test reports its own failure
            print(f"zos node wipe: {wiped.stderr}")
