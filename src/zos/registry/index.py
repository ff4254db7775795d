"""The registry's index of nodes for searches: records from the nodes bucket, status from
the heartbeat stream (`heartbeats`).

Every service copy keeps its own index, fed by the same two ordered consumers (the
nodes `Mirror`, and the stream of statuses, last per node then every new one), so
copies answer the same once they have read the same stream sequence. A search first
asks the stream its last sequence and waits until the index has read that far: it sees
every heartbeat JetStream acknowledged before it was asked, whichever copy answers.

Per node the index holds a few numbers (farm, capacity, used, last seen, whether it
serves gateways) in id order, with one id list per farm, so a page costs the nodes it
walks, not the grid: a farm's page walks only that farm, `after_id` starts a page where
the last one ended, and a page of the whole grid stops at `limit` matches. An answer
carries the node's record as stored (public config included) with its status.

A status is checked (`heartbeats.open_status`, the twin's key read from the registry
and kept) only once it would decide an answer: when a node is returned by a search,
read alone, or checked for a contract. Until then its claimed values only pick
candidates; a status that does not verify is dropped, and the node falls back on the
last one that did (or its registration). So what a node's status says comes only from
what it signed, and the index checks a few signatures per page instead of every beat.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from typing import Any, Literal

from nats.aio.msg import Msg

from zos.bus.errors import BusError
from zos.bus.subjects import NODE_STATUS_PREFIX, last_token
from zos.registry import heartbeats
from zos.registry.models import DOWN_AFTER, Capacity, Node
from zos.registry.objects.base import TWIN
from zos.registry.objects.nodes import ListNodesArgs
from zos.registry.signing import RegistryKey
from zos.registry.store import Mirror, Store, follow, position

log = logging.getLogger(__name__)

CATCH_UP = 10.0  # seconds a search waits for the index to read what the stream has
KEY_READS = 64  # twins' keys a search reads from the registry at once


class _Entry:
    """What the index knows of one node: its record's numbers, its last checked status
    (or its registration) and the newest status not checked yet."""

    __slots__ = (
        "capacity",
        "claim",
        "farm_id",
        "gateway",
        "pending",
        "seen",
        "seq",
        "twin_id",
        "used",
    )

    def __init__(self, node: Node) -> None:
        self.farm_id = node.farm_id
        self.twin_id = node.twin_id
        self.seq = 0  # stream sequence of the status `used` and `seen` come from
        self.pending: tuple[int, bytes, float] | None = None  # seq, blob, stored at
        # What the pending status claims, parsed when a search first looks at it (most
        # beats are replaced by the next unread): None not parsed yet, False unreadable.
        self.claim: heartbeats.Heartbeat | Literal[False] | None = None
        self.record(node)

    def record(self, node: Node) -> None:
        self.capacity = _four(node.capacity)
        self.gateway = node.public_config.gateway
        if self.seq == 0 or node.last_heartbeat > self.seen:  # (a registration)
            self.used = _four(node.used)
            self.seen = node.last_heartbeat

    def claimed(self) -> tuple[tuple[int, int, int, int], float]:
        if self.pending is not None:
            _, blob, stored_at = self.pending
            if self.claim is None:
                self.claim = heartbeats.unverified(blob) or False
            if self.claim:
                return _four(self.claim.used), min(self.claim.at / 1000, stored_at)
        return self.used, self.seen

    def take(self, seq: int, blob: bytes, stored_at: float) -> None:
        if seq <= self.seq or (self.pending is not None and seq <= self.pending[0]):
            return  # a consumer restarted: seen already
        self.pending, self.claim = (seq, blob, stored_at), None

    def settle(self, seq: int) -> None:
        """The pending status `seq` was checked (taken or dropped)."""
        if self.pending is not None and self.pending[0] == seq:
            self.pending, self.claim = None, None


def _four(c: Any) -> tuple[int, int, int, int]:
    return (c.cru, c.mru, c.sru, c.hru)


class NodeIndex:
    def __init__(self, store: Store, nodes: Mirror[Node], down_after: float = DOWN_AFTER) -> None:
        self.store = store
        self.nodes = nodes
        self.down_after = down_after
        self._entries: dict[int, _Entry] = {}
        self._ids: list[int] = []  # every node id, ascending
        self._farms: dict[int, list[int]] = {}  # farm id -> its node ids, ascending
        self._orphans: dict[int, tuple[int, bytes, float]] = {}  # statuses before records
        self._keys: dict[int, RegistryKey] = {}  # twin id -> its key, as last read
        self.seq = 0  # the highest stream sequence read
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # The stream's last sequence, asked once for all the searches that came before
        # the ask began: asks begun, the begin-number of the newest answer, and it.
        self._asking = asyncio.Lock()
        self._asked = self._answered = self._last = 0
        self.checked = 0  # signatures checked (for benchmarks)
        self.stream_asks = 0  # (for tests and benchmarks)

    # -- life ------------------------------------------------------------------------

    async def start(self, timeout: float = 120.0) -> NodeIndex:
        await heartbeats.setup_stream(self.store.admin_js, self.store.replicas)
        for key, (_, node) in list(self.nodes.items.items()):
            self._on_record(key, node)
        self.nodes.listeners.append(self._on_record)
        self._task = asyncio.create_task(
            follow(
                self.store.admin_js,
                f"{NODE_STATUS_PREFIX}*",
                heartbeats.STREAM,
                self._on_status,
                self._ready.set,
                what="heartbeat index",
            )
        )
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.nodes.listeners.remove(self._on_record)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # -- feeding ---------------------------------------------------------------------

    def _on_record(self, key: str, node: Node | None) -> None:
        node_id = int(key)
        entry = self._entries.get(node_id)
        if node is None:
            if entry is not None:
                del self._entries[node_id]
                _remove(self._ids, node_id)
                _remove(self._farms.get(entry.farm_id, []), node_id)
            return
        if entry is not None:
            entry.record(node)
            return
        entry = self._entries[node_id] = _Entry(node)
        bisect.insort(self._ids, node_id)
        bisect.insort(self._farms.setdefault(node.farm_id, []), node_id)
        orphan = self._orphans.pop(node_id, None)
        if orphan is not None:
            entry.take(*orphan)

    async def _on_status(self, msg: Msg) -> None:
        seq, stored_at, pending = position(msg)
        try:
            node_id = int(last_token(msg.subject))
        except ValueError:
            node_id = 0
        entry = self._entries.get(node_id)
        if entry is not None:
            entry.take(seq, msg.data, stored_at)
        elif node_id > 0:
            self._orphans[node_id] = (seq, msg.data, stored_at)
        if seq > self.seq:
            self.seq = seq
            self._wake()
        if pending == 0:
            self._ready.set()

    def _wake(self) -> None:
        still = []
        for target, future in self._waiters:
            if target <= self.seq:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    async def caught_up(self) -> None:
        """Once the index has read every status the stream held when this was called."""
        target = await self._stream_last()
        if target <= self.seq:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(future, CATCH_UP)
        except TimeoutError:
            raise BusError("unavailable", "the node index is behind the heartbeats") from None

    async def _stream_last(self) -> int:
        """The stream's last sequence as of some moment after this call began.

        Searches that arrive together share one ask (the JS API is slow under heavy
        heartbeat load), but never one already under way when they came: that answer
        could miss a heartbeat acknowledged just before them."""
        arrived = self._asked
        async with self._asking:
            if self._answered > arrived:
                return self._last
            self._asked += 1
            mine = self._asked

            async def last() -> int:
                self.stream_asks += 1
                info = await self.store.js.stream_info(heartbeats.STREAM)
                return info.state.last_seq

            self._last = await self.store._retry("heartbeat stream info", last)
            self._answered = mine
            return self._last

    # -- checking --------------------------------------------------------------------

    async def _key(self, twin_id: int, fresh: bool = False) -> RegistryKey | None:
        key = None if fresh else self._keys.get(twin_id)
        if key is None:
            got = await self.store.get("twins", twin_id, TWIN)
            if got is None:
                return None
            key = self._keys[twin_id] = RegistryKey(got[0].public_key_bytes)
        return key

    async def _check(self, node_id: int, entry: _Entry) -> None:
        """Verify the entry's newest status: taken if it is the node's, dropped if not."""
        if entry.pending is None:
            return
        seq, blob, stored_at = entry.pending
        status = None
        for fresh in (False, True):  # again with the key read now: it may have rotated
            key = await self._key(entry.twin_id, fresh)
            if key is None:
                break
            try:
                self.checked += 1
                status = heartbeats.open_status(key, node_id, blob, stored_at)
                break
            except BusError as e:
                log.debug("heartbeat of node %d refused: %s", node_id, e)
        entry.settle(seq)
        if status is not None and seq > entry.seq:
            entry.seq = seq
            entry.used = _four(status.used)
            entry.seen = max(entry.seen, min(status.at / 1000, stored_at))

    def _status(self, seen: float, now: float) -> Literal["up", "down"]:
        return "up" if now - seen <= self.down_after else "down"

    def _answer(self, node_id: int, entry: _Entry, now: float) -> dict[str, Any]:
        cru, mru, sru, hru = entry.used
        return {
            **self.nodes.dumped(str(node_id)),
            "used": {"cru": cru, "mru": mru, "sru": sru, "hru": hru},
            "last_heartbeat": entry.seen,
            "status": self._status(entry.seen, now),
        }

    # -- answers ---------------------------------------------------------------------

    async def node(self, node: Node) -> Node:
        """`node` (as read from its bucket) with its checked status and used capacity."""
        await self.caught_up()
        entry = self._entries.get(node.id)
        if entry is None:  # the record is newer than the mirror: only its registration
            return node.with_status(time.time(), self.down_after)
        await self._check(node.id, entry)
        cru, mru, sru, hru = entry.used
        return node.model_copy(
            update={
                "used": Capacity(cru=cru, mru=mru, sru=sru, hru=hru),
                "last_heartbeat": entry.seen,
                "status": self._status(entry.seen, time.time()),
            }
        )

    async def search(self, args: ListNodesArgs) -> list[dict[str, Any]]:
        """A page of nodes by id, from `after_id`, after `offset` matches, up to `limit`."""
        await self.caught_up()
        ids = self._ids if args.farm_id is None else self._farms.get(args.farm_id, [])
        wanted = (args.free_cru, args.free_mru, args.free_sru, args.free_hru)
        start = bisect.bisect_right(ids, args.after_id)
        skip, found = args.offset, []
        now = time.time()
        walk = list(ids[start:]) if start < len(ids) else []
        tried: set[int] = set()  # twins whose keys this search read (or could not)
        for i, node_id in enumerate(walk):
            entry = self._candidate(node_id, wanted, args, now)
            if entry is None:
                continue
            if entry.pending is not None:
                if entry.twin_id not in self._keys and entry.twin_id not in tried:
                    wants = skip + args.limit - len(found)
                    await self._read_keys(walk, i, wants, wanted, args, now, tried)
                await self._check(node_id, entry)
                if not self._matches(entry, entry.used, entry.seen, wanted, args, now):
                    continue
            if skip:
                skip -= 1
                continue
            if str(node_id) in self.nodes.items:
                found.append(self._answer(node_id, entry, now))
            if len(found) == args.limit:
                break
        return found

    def _candidate(
        self, node_id: int, wanted: tuple[int, int, int, int], args: ListNodesArgs, now: float
    ) -> _Entry | None:
        """The node's entry if what it claims (checked or not) matches the search."""
        entry = self._entries.get(node_id)
        if entry is None or not self._matches(entry, *entry.claimed(), wanted, args, now):
            return None
        return entry

    async def _read_keys(
        self,
        walk: list[int],
        start: int,
        count: int,
        wanted: tuple[int, int, int, int],
        args: ListNodesArgs,
        now: float,
        tried: set[int],
    ) -> None:
        """Read at once the keys the next `count` candidates of `walk` from `start` will be
        checked with, rather than one registry read per node in turn (a page of new
        twins); the twins go into `tried`, so a twin with no key is not looked ahead for
        again."""
        twins: set[int] = set()
        for node_id in itertools.islice(walk, start, None):
            entry = self._candidate(node_id, wanted, args, now)
            if entry is None:
                continue
            count -= 1
            known = entry.twin_id in self._keys or entry.twin_id in tried
            if entry.pending is not None and not known:
                twins.add(entry.twin_id)
            if count <= 0:
                break
        tried |= twins
        room = asyncio.Semaphore(KEY_READS)

        async def read(twin_id: int) -> None:
            async with room:
                await self._key(twin_id)

        # A key that could not be read stays unknown: its check reads it again, and fails
        # there with the reason.
        await asyncio.gather(*(read(t) for t in twins), return_exceptions=True)

    def _matches(
        self,
        entry: _Entry,
        used: tuple[int, int, int, int],
        seen: float,
        wanted: tuple[int, int, int, int],
        args: ListNodesArgs,
        now: float,
    ) -> bool:
        if args.status is not None and self._status(seen, now) != args.status:
            return False
        if args.gateway is not None and entry.gateway != args.gateway:
            return False
        # Free is never below 0 (cores may be overbooked): a node using more than it
        # has stays in a listing that asks for nothing.
        return all(max(0, c - u) >= w for c, u, w in zip(entry.capacity, used, wanted, strict=True))

    def stats(self) -> dict[str, int]:
        return {"nodes": len(self._entries), "seq": self.seq, "checked": self.checked}


def _remove(ids: list[int], node_id: int) -> None:
    i = bisect.bisect_left(ids, node_id)
    if i < len(ids) and ids[i] == node_id:
        del ids[i]
