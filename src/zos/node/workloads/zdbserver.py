"""The node's one zdb server (`zos zdb serve`), shared by every zdb workload.

ThreeFold zos runs one 0-db per disk and gives each workload a namespace on it; this
node has one disk pool, so one server. It runs only while a zdb workload exists (the
only ports a node listens on belong to workloads users asked for). Its namespaces live
under `storage/zdb`; its admin password, state and log under `zdb-server/` in the data
directory. The agent speaks to it only as a 0-db admin over RESP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys

from zos.node.workloads.base import NodeServices, WorkloadError
from zos.primitives.hostaddr import primary_ipv4
from zos.primitives.hostproc import HostProcess, HostProcessError
from zos.primitives.trees import remove_tree
from zos.zdb.client import RespClient, RespError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9900
DEFAULT_NS = "default"


class ZdbUnavailable(WorkloadError):
    """The connection to the server failed (it died, or is restarting): worth a retry."""


def parse_listen(text: str) -> tuple[str | None, int]:
    """`HOST:PORT`, `:PORT` or `HOST` (port 9900); ValueError names what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    if any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: not a host")
    return host or None, int(port)


class NodeZdb:
    def __init__(self, services: NodeServices) -> None:
        self.data = services.data_dir / "storage" / "zdb"
        self.run_dir = services.data_dir / "zdb-server"
        self._listen = parse_listen(services.zdb_listen or f":{DEFAULT_PORT}")
        self._host: str | None = None
        self._proc: HostProcess | None = None
        self._client: RespClient | None = None

    # --- where it listens ------------------------------------------------------------------

    def address(self) -> tuple[str, int]:
        """Host and port the server listens on (and workloads' results name)."""
        if self._host is None:
            host = self._listen[0] or primary_ipv4()
            if host is None:
                log.warning("zdb: this node has no default route; listening on 127.0.0.1")
                host = "127.0.0.1"
            self._host = host
        return self._host, self._listen[1]

    def _admin_password(self) -> str:
        """Made once, kept 0600: a server found running after a restart still accepts it."""
        path = self.run_dir / "admin"
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _process(self) -> HostProcess:
        if self._proc is None:
            host, port = self.address()
            argv = [sys.executable, "-m", "zos.cli", "zdb", "serve", "--data", str(self.data)]
            argv += ["--listen", f"{host}:{port}", "--admin-file", str(self.run_dir / "admin")]
            argv += ["--protect"]  # `default` is nobody's: read only for tenants

            async def auth(client: RespClient) -> None:
                password = await asyncio.to_thread(self._admin_password)
                await client.raw_command(b"AUTH", password.encode())

            self._client = RespClient(host, port, on_connect=auth, timeout=10)
            self._proc = HostProcess(
                "zdb", argv, self.run_dir / "state.json", self.run_dir / "zdb.log"
            )
        return self._proc

    # --- lifetime ---------------------------------------------------------------------------

    async def _ready(self) -> bool:
        assert self._client is not None
        try:
            return await self._client.command(b"PING") == "PONG"
        except RespError:
            return False

    async def ensure(self) -> None:
        """Running (found again or started) and answering as admin."""
        proc = self._process()
        assert self._client is not None
        # A fresh connection: the last one may lead to a server that has died since.
        await self._client.close()
        if proc.alive() and await self._ready():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._admin_password)
        try:
            await proc.ensure(self._ready)
        except HostProcessError as e:
            raise WorkloadError(f"zdb server: {e}") from None

    async def running(self) -> bool:
        """Whether a server runs (this agent's or an earlier one's), answering; never
        starts one. One that runs but does not answer is an error, not "not running":
        its files must not be touched behind its back."""
        if not await self._process().adopt():
            return False
        await self.ensure()
        return True

    async def stop_and_clear(self) -> None:
        """No zdb workload is left: stop the server and remove what is left of its data
        (`default`, which tenants cannot write)."""
        proc = self._process()
        assert self._client is not None
        await self._client.close()
        await proc.stop()
        await asyncio.to_thread(remove_tree, self.data, ignore_errors=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._proc is not None:
            self._proc.close()

    # --- admin commands --------------------------------------------------------------------

    async def command(self, *args: str | bytes) -> object:
        assert self._client is not None
        raw = [a.encode() if isinstance(a, str) else a for a in args]
        try:
            return await self._client.command(*raw)
        except RespError as e:
            what = f"{args[0]!s} {args[1]!s}" if len(args) > 1 else str(args[0])
            host, port = self.address()
            # RespClient names the address when the connection, not the server, failed.
            if str(e).startswith(f"{host}:{port}:"):
                raise ZdbUnavailable(f"zdb server unavailable ({what}): {e}") from None
            raise WorkloadError(f"zdb: {what}: {e}") from None

    async def nsinfo(self, name: str) -> dict[str, str] | None:
        """NSINFO as a dict, or None when there is no such namespace."""
        try:
            reply = await self.command("NSINFO", name)
        except ZdbUnavailable:
            raise
        except WorkloadError as e:
            if "Namespace not found" in str(e):
                return None
            raise
        assert isinstance(reply, bytes)
        info = {}
        for line in reply.decode(errors="replace").splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                info[key] = value
        return info

    async def namespaces(self) -> list[str]:
        """Every namespace but `default`."""
        reply = await self.command("NSLIST")
        assert isinstance(reply, list)
        return [n.decode() for n in reply if isinstance(n, bytes) and n != DEFAULT_NS.encode()]

    def namespaces_on_disk(self) -> list[str]:
        """Namespace directories, when no server runs to ask (a leftover NSNEW included)."""
        if not self.data.is_dir():
            return []
        return sorted(p.name for p in self.data.iterdir() if p.is_dir() and p.name != DEFAULT_NS)

    def remove_on_disk(self, name: str) -> None:
        """Remove a namespace's files while no server runs (it reads them only at start)."""
        path = self.data / name
        if path.parent == self.data and path.name not in ("", ".", ".."):
            remove_tree(path, ignore_errors=True)
