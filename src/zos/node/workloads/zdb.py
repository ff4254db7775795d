"""`zdb` workloads: one 0-db namespace each, on the node's one zdb server.

The namespace is named after the workload id (`<twin>-<contract>-<name>`), as zos
names it, so a restart finds it again. Its settings follow the workload: maxsize =
size, password, public, and a mode fixed at creation. The result is zos's
`{Namespace, IPs, Port}`. The server starts with the first zdb workload and stops
with the last (`zdbserver`). A deployment with a data key has each namespace in an
encrypted filesystem of its own (`zdbvolumes`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from zos.gridtypes.workloads.zdb import ZDB, ZDBResult
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.encrypted import deployment_key
from zos.node.workloads.zdbserver import NodeZdb, ZdbUnavailable
from zos.node.workloads.zdbvolumes import NamespaceVolumes
from zos.zdb.namespace import MODE_FROM_INFO

log = logging.getLogger(__name__)
T = TypeVar("T")
# Tries of one step while the server is found dead (each try starts it again).
ATTEMPTS = 3


def _mode(info: dict[str, str]) -> str | None:
    """A namespace's mode as the workload names it (NSINFO says userkey/sequential)."""
    return MODE_FROM_INFO.get(info.get("mode", ""))


class ZdbManager(Manager):
    type = "zdb"
    rank = 30
    updatable = True

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self.server = NodeZdb(node)
        self.volumes = NamespaceVolumes(node, self.server.data)
        # One admin connection and one server: every step runs alone.
        self._lock = asyncio.Lock()

    def _result(self, name: str) -> dict[str, Any]:
        host, port = self.server.address()
        return ZDBResult(namespace=name, ips=[host], port=port).to_dict()

    async def _apply(self, name: str, data: ZDB) -> None:
        s = self.server
        await s.command("NSSET", name, "maxsize", str(data.size))
        # "*" clears a password the workload no longer has.
        await s.command("NSSET", name, "password", data.password or "*")
        await s.command("NSSET", name, "public", "1" if data.public else "0")

    async def _step(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` alone, with the server up; again if the server died meanwhile (a
        failed step makes the engine remove the workload: never for a passing restart)."""
        for attempt in range(ATTEMPTS):
            async with self._lock:
                try:
                    return await work()
                except ZdbUnavailable as e:
                    if attempt == ATTEMPTS - 1:
                        raise
                    log.warning("zdb: %s; trying again", e)
        raise AssertionError("unreachable")

    async def _on_namespace(
        self, name: str, work: Callable[[dict[str, str] | None], Awaitable[None]]
    ) -> dict[str, Any]:
        """With the server up, `work(NSINFO of name, or None)`; the workload's result."""

        async def step() -> None:
            await self.server.ensure()
            await work(await self.server.nsinfo(name))

        await self._step(step)
        return self._result(name)

    async def _encrypted(self, ctx: WorkloadContext) -> None:
        """A deployment with a data key: the namespace in its own encrypted filesystem."""
        key = deployment_key(ctx)
        if key is not None:
            await self.volumes.prepare(ctx.workload_id, int(ctx.workload.data.size), key)

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        data: ZDB = ctx.workload.data
        name = ctx.workload_id
        s = self.server
        await self._encrypted(ctx)

        async def work(info: dict[str, str] | None) -> None:
            if info is None:
                await s.command("NSNEW", name)
                info = await s.nsinfo(name) or {}
            if _mode(info) != data.mode:
                try:
                    await s.command("NSSET", name, "mode", data.mode)
                except ZdbUnavailable:
                    raise
                except WorkloadError:
                    raise WorkloadError(
                        f"mode: namespace {name} already holds data in {_mode(info)} mode"
                    ) from None
            await self._apply(name, data)

        return await self._on_namespace(name, work)

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        # Checked against the namespace itself: `previous` may be an update that failed.
        new: ZDB = ctx.workload.data
        name = ctx.workload_id
        await self._encrypted(ctx)

        async def work(info: dict[str, str] | None) -> None:
            if info is None:
                raise WorkloadError(f"namespace {name} is gone; deploy the workload anew")
            if _mode(info) != new.mode:
                raise WorkloadError(
                    f"mode: cannot change from {_mode(info)} to {new.mode} "
                    "(a namespace keeps its mode)"
                )
            used = int(info.get("data_size_bytes", "0"))
            if new.size < used:
                raise WorkloadError(
                    f"size: the namespace holds {used} bytes, more than the new size {new.size}"
                )
            await self._apply(name, new)

        return await self._on_namespace(name, work)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        await self._step(lambda: self._remove({ctx.workload_id}))

    async def cleanup(self, keep: set[str]) -> None:
        async def work() -> None:
            s = self.server
            names = await s.namespaces() if await s.running() else s.namespaces_on_disk()
            names = {*names, *self.volumes.names()}
            await self._remove({n for n in names if n not in keep})

        await self._step(work)

    async def _remove(self, names: set[str]) -> None:
        """Delete namespaces (data and all); stop the server when none is left."""
        s = self.server
        if await s.running():
            present = set(await s.namespaces())
            for name in sorted(names & present):
                await s.command("NSDEL", name)
                log.info("zdb: namespace %s deleted", name)
            await self._release(names)
            if not present - names:
                log.info("zdb: no zdb workload is left; stopping the server")
                await s.stop_and_clear()
            return
        await self._release(names)  # unmounted first: the server's directory is then empty
        for name in sorted(names):
            s.remove_on_disk(name)
        if not s.namespaces_on_disk():
            log.info("zdb: no zdb workload is left; removing the server's data")
            await s.stop_and_clear()

    async def _release(self, names: set[str]) -> None:
        for name in sorted(names & self.volumes.names()):
            await self.volumes.release(name)

    async def close(self) -> None:
        """The agent stops: the server keeps serving its namespaces."""
        await self.server.close()
