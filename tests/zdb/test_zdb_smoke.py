"""The fixtures start a working server; one SET/GET each way."""

from __future__ import annotations

from zos.zdb.client import RespClient


async def test_set_get_in_process(client: RespClient) -> None:
    assert await client.command(b"SET", b"k", b"v") == b"k"
    assert await client.command(b"GET", b"k") == b"v"


async def test_set_get_subprocess(zdb_proc) -> None:
    zdb_proc.start()
    c = RespClient("127.0.0.1", zdb_proc.port, timeout=10)
    try:
        assert await c.command(b"PING") == "PONG"
        assert await c.command(b"SET", b"k", b"v") == b"k"
    finally:
        await c.close()
