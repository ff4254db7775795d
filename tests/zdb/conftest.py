"""A real zdb server per test, in this process (`zdb`); tests/conftest.py has `zdb_proc`
(`zos zdb serve` as a process, admin password `ZDB_ADMIN`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zos.zdb import ZdbServer
from zos.zdb.client import RespClient

ADMIN = "admin-secret"  # the same as tests/conftest.py ZDB_ADMIN


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
