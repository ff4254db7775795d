"""A real zdb server per test, in this process (`zdb`); tests/conftest.py has `zdb_proc`
(`zos zdb serve` as a process, admin password `ZDB_ADMIN`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from zdb_helpers import ADMIN, Connect, Raw

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient


@pytest.fixture
async def zdb(tmp_path: Path) -> AsyncIterator[ZdbServer]:
    server = ZdbServer(tmp_path / "zdb", admin_password=ADMIN)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(zdb: ZdbServer) -> AsyncIterator[RespClient]:
    """A plain connection to `zdb` (not admin until it sends AUTH)."""
    assert zdb.address is not None
    c = RespClient(*zdb.address, timeout=10)
    try:
        yield c
    finally:
        await c.close()


# -- fixtures for the command, access and hostile tests ---------------------------------


@pytest.fixture
async def connect(zdb: ZdbServer) -> AsyncIterator[Connect]:
    """Open clients to `zdb`, each already AUTHed and/or in a namespace if asked;
    all closed at the end. A client that reconnects does the same again."""
    assert zdb.address is not None
    opened: list[RespClient] = []

    async def open_client(
        admin: bool = False, ns: bytes | None = None, password: bytes | None = None
    ) -> RespClient:
        async def setup(c: RespClient) -> None:
            if admin:
                await c.raw_command(b"AUTH", ADMIN.encode())
            if ns is not None:
                reply = await c.raw_command(b"SELECT", ns, *([password] if password else []))
                assert reply == "OK", reply

        c = RespClient(*zdb.address, on_connect=setup, timeout=30)
        opened.append(c)
        await c.command(b"PING")  # connects and runs setup now: a failure shows here
        return c

    try:
        yield open_client
    finally:
        for c in opened:
            await c.close()


@pytest.fixture
async def admin(connect: Connect) -> RespClient:
    return await connect(admin=True)


@pytest.fixture
async def raw(zdb: ZdbServer) -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    """Open bare connections to `zdb`; all closed at the end."""
    assert zdb.address is not None
    address = zdb.address
    opened: list[Raw] = []

    async def open_raw(rcvbuf: int | None = None) -> Raw:
        conn = await Raw.open(address, rcvbuf)
        opened.append(conn)
        return conn

    try:
        yield open_raw
    finally:
        for conn in opened:
            await conn.close()
