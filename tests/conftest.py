"""Shared fixtures: real servers on free ports, cleaned up after each test.

Every nats-server runs with the grid's authorization (the registry's key, its auth
callout): every connection a test makes proves a key."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zos.bus import Connection
from zos.grid.natsserver import NatsServer, free_port, nats_server_binary
from zos.identity import Identity
from zos.primitives.nat import HOST_TABLE
from zos.registry import Capacity, RegistryClient, RegistryService

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root (CI runs as root)")
    skip_nats = pytest.mark.skip(reason="nats-server is not installed (scripts/test installs it)")
    for item in items:
        if not IS_ROOT and any(item.get_closest_marker(m) for m in ("root", "netns", "runc")):
            item.add_marker(skip_root)
        if item.get_closest_marker("nats") and nats_server_binary() is None:
            item.add_marker(skip_nats)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _host_table_exists() -> bool:
    listed = subprocess.run(["nft", "list", "table", "inet", HOST_TABLE], capture_output=True)
    return listed.returncode == 0


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """The node's host table and IPv4 forwarding are the machine's: tests that build a
    node's networks set them (a node keeps them); the suite takes back what it set."""
    if not IS_ROOT or shutil.which("nft") is None:
        yield
        return
    had_table, forward = _host_table_exists(), IP_FORWARD.read_text()
    yield
    if not had_table and _host_table_exists():
        subprocess.run(["nft", "delete", "table", "inet", HOST_TABLE], check=True)
    IP_FORWARD.write_text(forward)


@pytest.fixture
def registry_identity() -> Identity:
    """The registry's own key: nats-server names it, clients pin it."""
    return Identity.generate()


@pytest.fixture(scope="session")
def bus_insider() -> Identity:
    """A key the test servers' own configuration lets do anything: for tests that play a
    party controlling the bus itself (a hostile operator), to show what still holds."""
    return Identity.generate()


@pytest.fixture
def nats_server(
    tmp_path: Path, registry_identity: Identity, bus_insider: Identity
) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on a free port, authorization on."""
    server = NatsServer(
        store_dir=tmp_path / "nats",
        registry_key=registry_identity.public_key,
        insiders=[bus_insider.public_key],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def registry(
    nats_server: NatsServer, registry_identity: Identity
) -> AsyncIterator[RegistryService]:
    """The registry service on that server (it answers the auth callout)."""
    service = await RegistryService(nats_server.url, registry_identity).start()
    try:
        yield service
    finally:
        await service.stop()


@dataclass
class Member:
    """A key the registry knows (its twin, and its node if it is one), connected: what a
    user, a node or a tool is on the grid. Its registry client owns the connection."""

    identity: Identity
    registry: RegistryClient
    twin_id: int
    node_id: int = 0

    @property
    def conn(self) -> Connection:
        return self.registry.conn


@pytest.fixture
async def enroll(nats_server: NatsServer, registry: RegistryService) -> AsyncIterator:
    """`await enroll(identity=None, node=False)`: a Member registered as a twin (and as
    a node of a farm made on first use), connected with its role."""
    members: list[Member] = []
    farms: list[tuple[Member, int]] = []

    async def make(identity: Identity | None = None, *, node: bool = False) -> Member:
        identity = identity or Identity.generate()
        client = RegistryClient(nats_server.url, identity, registry_key=registry.public_key)
        await client.connect()
        member = Member(identity, client, (await client.ensure_twin()).id)
        members.append(member)
        if node:
            if not farms:
                farmer = await make()
                farms.append((farmer, (await farmer.registry.create_farm("enrolled")).id))
            farmer, farm_id = farms[0]
            token = await farmer.registry.farm_join_token(farm_id)
            member.node_id = (await client.register_node(farm_id, token, Capacity(cru=1))).id
        return member

    try:
        yield make
    finally:
        for m in members:
            await m.registry.close()


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention container rootfs: static busybox with its applets linked."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    root = tmp_path_factory.mktemp("busybox-rootfs")
    for d in ("bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run(
        [str(root / "bin" / "busybox"), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def make_deep_tree(root: Path, depth: int) -> None:
    """`root/d/d/.../d/f`, `depth` directories deep: deeper than PATH_MAX and Python's
    recursion limit, so it is built one directory fd at a time (issue 12, finding 1)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def deep_tree() -> Iterator[Callable[[Path, int], None]]:
    """`make_deep_tree`, with every tree it made removed afterwards (pytest's own clean-up
    of old temporary directories uses shutil.rmtree, which such a tree breaks)."""
    from zos.primitives.trees import remove_tree

    made: list[Path] = []

    def make(root: Path, depth: int) -> None:
        made.append(root)
        make_deep_tree(root, depth)

    yield make
    for root in made:
        remove_tree(root, ignore_errors=True)


ZDB_ADMIN = "admin-secret"


@dataclass
class ZdbProcess:
    data: Path
    port: int
    proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        env = dict(os.environ, ZDB_ADMIN=ZDB_ADMIN)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zos.cli",
                "zdb",
                "serve",
                "--data",
                str(self.data),
                "--listen",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                return
        self.stop()
        raise RuntimeError("zos zdb serve did not start")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def zdb_proc(tmp_path: Path) -> Iterator[ZdbProcess]:
    """`zos zdb serve` on a free port, started by the test with `start()`."""
    p = ZdbProcess(tmp_path / "zdbproc", free_port())
    try:
        yield p
    finally:
        p.stop()
