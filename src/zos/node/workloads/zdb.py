"""`zdb` workloads: one 0-db namespace each, on the node's one zdb server.

The namespace is named after the workload id (`<twin>-<contract>-<name>`), as zos
names it, so a restart finds it again. Its settings follow the workload: maxsize =
size, password, public, and a mode fixed at creation. The result is zos's
`{Namespace, IPs, Port}`. The server starts with the first zdb workload and stops
with the last (`zdbserver`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from zos.gridtypes.workloads.zdb import ZDB, ZDBResult
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.zdbserver import NodeZdb


class ZdbManager(Manager):
    type = "zdb"
    updatable = True

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self.server = NodeZdb(node)
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

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        data: ZDB = ctx.workload.data
        name = ctx.workload_id
        async with self._lock:
            await self.server.ensure()
            info = await self.server.nsinfo(name)
            if info is None:
                await self.server.command("NSNEW", name)
                info = await self.server.nsinfo(name) or {}
            if info.get("mode") != data.mode:
                try:
                    await self.server.command("NSSET", name, "mode", data.mode)
                except WorkloadError:
                    raise WorkloadError(
                        f"mode: namespace {name} already holds data in {info.get('mode')} mode"
                    ) from None
            await self._apply(name, data)
        return self._result(name)

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        # Checked against the namespace itself: `previous` may be an update that failed.
        new: ZDB = ctx.workload.data
        name = ctx.workload_id
        async with self._lock:
            await self.server.ensure()
            info = await self.server.nsinfo(name)
            if info is None:
                raise WorkloadError(f"namespace {name} is gone; deploy the workload anew")
            if info.get("mode") != new.mode:
                raise WorkloadError(
                    f"mode: cannot change from {info.get('mode')} to {new.mode} "
                    "(a namespace keeps its mode)"
                )
            used = int(info.get("data_size_bytes", "0"))
            if new.size < used:
                raise WorkloadError(
                    f"size: the namespace holds {used} bytes, more than the new size {new.size}"
                )
            await self._apply(name, new)
        return self._result(name)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        await self._remove({ctx.workload_id})

    async def cleanup(self, keep: set[str]) -> None:
        async with self._lock:
            if await self.server.running():
                names = await self.server.namespaces()
            else:
                names = self.server.namespaces_on_disk()
        await self._remove({n for n in names if n not in keep})

    async def _remove(self, names: set[str]) -> None:
        """Delete namespaces (data and all); stop the server when none is left."""
        async with self._lock:
            s = self.server
            if await s.running():
                present = set(await s.namespaces())
                for name in sorted(names & present):
                    await s.command("NSDEL", name)
                if not present - names:
                    await s.stop_and_clear()
                return
            for name in sorted(names):
                s.remove_on_disk(name)
            if not s.namespaces_on_disk():
                await s.stop_and_clear()

    async def close(self) -> None:
        """The agent stops: the server keeps serving its namespaces."""
        await self.server.close()
