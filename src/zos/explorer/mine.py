"""A twin's own deployments, for the explorer its owner runs on their own machine.

The twin's key stays in that process (the user's `zos explorer serve --mine`, as in
`zos ps`): the pages only ever see what the nodes answered. The SDK's `GridClient` reads
the deployments; its bus is replaced by `ReadOnlyBus`, which sends the read commands and
refuses every other one, so no page can make this process deploy, update or delete
anything, even with the owner's key at hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from zos.bus import BusClient, BusError
from zos.client import DeploymentInfo, GridClient
from zos.nodeapi.commands import CHANGES, GET, LIST, STATISTICS, VERSION, ZMACHINE_LOGS

READ_COMMANDS = frozenset({LIST, GET, CHANGES, ZMACHINE_LOGS, STATISTICS, VERSION})
MAX_LOG_BYTES = 2 << 20  # a node keeps two 1 MiB ring files per machine


class ReadOnlyBus:
    """A bus client that only sends `READ_COMMANDS`."""

    def __init__(self, bus: BusClient) -> None:
        self._bus = bus

    async def request(self, twin_id: int, command: str, payload: Any = None, **kw: Any) -> Any:
        if command not in READ_COMMANDS:
            raise BusError("forbidden", f"the explorer only reads: it does not send {command}")
        return await self._bus.request(twin_id, command, payload, **kw)

    async def close(self) -> None:
        await self._bus.close()


class MyDeployments:
    def __init__(self, grid: GridClient, max_age: float = 2.0) -> None:
        if grid.bus is not None and not isinstance(grid.bus, ReadOnlyBus):
            grid.bus = cast(BusClient, ReadOnlyBus(grid.bus))
        self.grid = grid
        self.max_age = max_age
        self._cached: tuple[float, list[DeploymentInfo]] | None = None
        self._lock = asyncio.Lock()

    @property
    def twin_id(self) -> int:
        return self.grid.twin_id

    async def list(self) -> list[DeploymentInfo]:
        """The twin's deployments with each workload's state (at most `max_age` old)."""
        async with self._lock:  # pages opened together share one round of the nodes
            if self._cached is None or time.monotonic() - self._cached[0] > self.max_age:
                self._cached = (time.monotonic(), await self.grid.ps())
            return self._cached[1]

    async def logs(self, deployment: str, machine: str) -> str:
        """What the machine printed, as far as its node keeps it."""
        parts: list[str] = []
        size = 0
        async for text in self.grid.logs(f"{deployment}/{machine}"):
            parts.append(text)
            size += len(text)
            if size >= MAX_LOG_BYTES:
                break
        return "".join(parts)[-MAX_LOG_BYTES:]

    async def close(self) -> None:
        await self.grid.close()
