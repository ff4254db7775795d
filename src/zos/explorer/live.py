"""Keeping the explorer's picture of the grid fresh, and telling open pages.

`Live` reads a snapshot of the registry every `every` seconds: signed answers, each
checked against the pinned registry key by `RegistryClient`. That is what the pages are
fed by, because no signed event says what they show: the registry derives up/down from
a heartbeat's age when it answers (a node going down is the absence of a message, seen
only by asking again), contract events are pushed to their own node alone (a twin may
not subscribe to them), and the key-change events twins may hear change nothing a page
shows. After each poll, listeners get a `tick`; when anything the pages show changed, an
`update` first, with a new version and the ids of the nodes that changed. A poll that
fails, or whose answer is refused as not the registry's, keeps the last snapshot and
records why, which the pages show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from zos.bus import BusError
from zos.explorer.history import History
from zos.explorer.snapshot import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    kind: str  # update | tick
    version: int
    at: float
    nodes: list[int] = field(default_factory=list)


def changed_nodes(old: Snapshot | None, new: Snapshot) -> list[int]:
    if old is None:
        return list(new.nodes)
    ids = old.nodes.keys() | new.nodes.keys()
    return sorted(i for i in ids if old.nodes.get(i) != new.nodes.get(i))


class Live:
    def __init__(
        self,
        read: Callable[[], Awaitable[Snapshot]],
        every: float = 5.0,
        history: History | None = None,
    ) -> None:
        self._read = read
        self.every = every
        self.history = history or History()
        self.snapshot: Snapshot | None = None
        self.version = 0
        self.error = ""  # why the last poll failed ("" when it did not)
        self.error_since: float | None = None
        self._listeners: set[asyncio.Queue[Event]] = set()
        self._task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        try:
            snap = await self._read()
        except (BusError, TimeoutError, OSError) as e:
            forged = isinstance(e, BusError) and e.code == "bad_signature"
            why = "an answer not signed by the registry's key was refused" if forged else ""
            self.error = f"{why or 'the registry did not answer'}: {e}"
            self.error_since = self.error_since or time.time()
            log.warning("%s", self.error)
            self._publish(Event("tick", self.version, time.time()))
            return
        self.error, self.error_since = "", None
        old, self.snapshot = self.snapshot, snap
        self.history.record(snap)
        nodes = changed_nodes(old, snap)
        if old is None or nodes or old.farms != snap.farms or old.contracts != snap.contracts:
            self.version += 1
            self._publish(Event("update", self.version, snap.taken_at, nodes))
        self._publish(Event("tick", self.version, snap.taken_at))

    async def start(self) -> Live:
        await self.poll()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.poll()
            except Exception:  # a bug in one poll must not stop the explorer's updates
                log.exception("explorer poll failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _publish(self, event: Event) -> None:
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):  # a slow page catches up on the next
                queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=16)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
