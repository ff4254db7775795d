"""The fixtures start a working server; one SET/GET each way; what the server loads."""

from __future__ import annotations

import subprocess
import sys

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


def test_serve_imports_only_what_it_uses() -> None:
    """`zos zdb serve` builds its parser without the other commands' modules: no bus
    client, HTTP stack, workload types or key handling in the server's memory."""
    probe = (
        "import sys; from zos.cli import build_parser;"
        " build_parser('zdb').parse_args(['zdb', 'serve', '--data', 'x']);"
        " import zos.zdb.server;"
        " print(' '.join(sorted(m for m in ('nats', 'aiohttp', 'pydantic', 'nacl',"
        " 'zos.identity', 'zos.bus', 'zos.gridtypes') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
