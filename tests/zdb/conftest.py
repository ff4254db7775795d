"""A real zdb server per test: in this process (`zdb`) or as `zos zdb serve` (`zdb_proc`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zos.grid.natsserver import free_port
from zos.zdb import ZdbServer
from zos.zdb.client import RespClient

ADMIN = "admin-secret"


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


@dataclass
class ZdbProcess:
    data: Path
    port: int
    proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        env = dict(os.environ, ZDB_ADMIN=ADMIN)
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
    p = ZdbProcess(tmp_path / "zdbproc", free_port())
    try:
        yield p
    finally:
        p.stop()
