"""The periodic re-check of name proxies' name contracts (zos does it hourly).

A name proxy is served only for the twin owning the active name contract of its name.
That is checked at provision; the contract may be cancelled (or the name change hands)
later, while the route runs. `NameWatch` asks the registry again every `period` for
every name route the node's proxy holds and, when a signed answer says the name is no
longer the workload's twin's, removes the route and reports the workload failed. A
registry that does not answer removes nothing: only a signed "not yours" does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from zos.node.services import RegistryView

log = logging.getLogger(__name__)

HOURLY = 3600.0


class NameWatch:
    def __init__(
        self,
        registry: Callable[[], RegistryView | None],
        hosts: Callable[[], dict[str, str]],
        remove: Callable[[str, str], Awaitable[None]],
        period: float = HOURLY,
    ) -> None:
        """`hosts()`: workload id -> the host it serves (`<name>.<domain>`) for every name
        route; `remove(wid, why)` takes a route down and reports its workload failed."""
        self.registry = registry
        self.hosts = hosts
        self.remove = remove
        self.period = period
        # The workload ids removed, as they are (tests wait on this, not on the clock).
        self.revoked: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watching from now on (a no-op while it already is)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.check()
            except Exception:  # the next round tries again
                log.exception("re-checking name contracts failed")

    async def check(self) -> None:
        """One round: every name route whose name is no longer its twin's is removed."""
        registry = self.registry()
        if registry is None:
            return
        for wid, host in sorted(self.hosts().items()):
            name = host.split(".", 1)[0]
            twin = int(wid.split("-", 1)[0])
            try:
                contract = await registry.name_contract(name)
            except Exception as e:  # no answer is not an answer: keep serving
                log.warning("name contract of %r not re-checked: %s", name, e)
                continue
            if contract is None:
                why = f"the name contract of {name!r} is gone"
            elif not contract.active:
                why = f"the name contract of {name!r} is cancelled"
            elif contract.owner_twin != twin:
                why = f"{name!r} is now owned by twin {contract.owner_twin}, not twin {twin}"
            else:
                continue
            log.info("gateway %s: %s; its route is removed", wid, why)
            await self.remove(wid, f"gateway-name-proxy: name: {why}; the route is removed")
            self.revoked.put_nowait(wid)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
