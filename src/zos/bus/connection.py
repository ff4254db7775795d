"""A NATS connection that proves a key: every zos piece connects through `connect`.

The connection authenticates with the identity's ed25519 key as a NATS NKey (nats-server
sends a nonce, the client signs it). What the key may do is decided when it connects: on
a zos grid the registry answers nats-server's auth callout with the key's role (see
`zos.registry.roles`), so a key that has just registered calls `renew()` to come back
with its new role. Replies come to the key's own inbox prefix (`_INBOX.<key hex>`), the
only inbox it may subscribe to.

It reconnects forever (every `reconnect_wait` seconds) when the server goes away,
resubscribes when it is back, and accepts one URL, a comma-separated list, or a list (a
cluster). When nats-server refuses a publish (a permissions violation), requests waiting
on that subject fail at once with `not_permitted` instead of timing out, and the refusal
is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from zos.bus.errors import BusError
from zos.bus.subjects import inbox_prefix
from zos.identity import Identity
from zos.identity.nkey import seed_nkey

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
CLOSE_WITHIN = 10.0  # seconds a close may take before the client is dropped
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')

Listener = Callable[[], Awaitable[None]]


def default_nats_url() -> str:
    return os.environ.get("ZOS_NATS", DEFAULT_NATS_URL)


def server_list(servers: str | list[str]) -> list[str]:
    if isinstance(servers, str):
        servers = servers.split(",")
    result = [s.strip() for s in servers if s.strip()]
    if not result:
        raise ValueError("no NATS server URL given")
    return result


class Connection:
    """One authenticated NATS connection of one key; share it between clients."""

    def __init__(
        self,
        servers: str | list[str],
        identity: Identity,
        *,
        name: str = "zos",
        reconnect_wait: float = 0.5,
        connect_timeout: float = 5.0,
    ) -> None:
        self.urls = server_list(servers)
        self.identity = identity
        self.name = name
        self.reconnect_wait = reconnect_wait
        self.connect_timeout = connect_timeout
        self.inbox = inbox_prefix(identity.public_key)
        self.refusals: deque[tuple[str, str]] = deque(maxlen=100)  # (publish|subscription, subject)
        self._nc: NATS | None = None
        self._waiting: dict[str, set[_Waiter]] = {}
        self._listeners: list[Listener] = []
        self._subs: set[Subscription] = set()
        self._renewing = False
        self._closing = False
        self._reopening: asyncio.Future[None] | None = None
        self._reconnected = asyncio.Event()
        self._attempts: dict[str, float] = {}
        self._last_error: Exception | None = None

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("the NATS connection is not open; call open() first")
        return self._nc

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    async def open(self, first_connect_timeout: float | None = 15.0) -> Connection:
        """Connect; BusError `unavailable` (or `refused`) if no server lets us in at first.

        After the first connection, the client reconnects forever on its own.
        """
        self._nc = await self._connect(first_connect_timeout)
        return self

    async def _connect(self, timeout: float | None) -> NATS:
        connecting = nats.connect(
            servers=self.urls,
            name=self.name,
            nkeys_seed_str=seed_nkey(self.identity.seed),
            inbox_prefix=self.inbox,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.reconnect_wait,
            connect_timeout=self.connect_timeout,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
            closed_cb=self._on_closed,
            reconnect_to_server_handler=self._pick_server,
        )
        try:
            # nats-py retries a first connection forever too: bound it.
            return await asyncio.wait_for(connecting, timeout)
        except (TimeoutError, OSError, nats.errors.Error) as e:
            where = ", ".join(self.urls)
            if isinstance(self._last_error, nats.errors.AuthorizationError):
                raise BusError(
                    "refused",
                    f"nats-server at {where} refused key {self.public_key.hex()[:16]}...: the "
                    "grid's registry (its auth callout) did not answer or refused the key",
                ) from None
            raise BusError("unavailable", f"cannot reach NATS at {where} ({e!r})") from None

    async def close(self) -> None:
        self._closing = True
        if self._reopening is not None:
            self._reopening.cancel()
        if self._nc is not None:
            try:
                # nats-py flushes and waits for the socket to close: never for ever.
                await asyncio.wait_for(self._nc.close(), CLOSE_WITHIN)
            except TimeoutError:
                log.warning("nats %s: close took over %.0f s; dropped", self.name, CLOSE_WITHIN)
            except Exception as e:
                log.debug("nats %s: close: %r", self.name, e)
            self._nc = None

    async def __aenter__(self) -> Connection:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- traffic -------------------------------------------------------------------

    async def request(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """A request; `not_permitted` at once if nats-server refuses the subject.

        The request runs in the caller's task, which a refusal cancels (as
        `asyncio.timeout` does): no second task and no wait on two futures per request."""
        task = asyncio.current_task()
        assert task is not None
        waiter = _Waiter(task)
        waiting = self._waiting.setdefault(subject.lower(), set())
        waiting.add(waiter)
        try:
            return await self.nc.request(subject, data, timeout=timeout, headers=headers)
        except asyncio.CancelledError:
            # Ours only if nobody else cancelled the task too.
            if waiter.refusal is not None and task.uncancel() == 0:
                raise waiter.refusal from None
            raise
        finally:
            waiting.discard(waiter)
            if not waiting:
                self._waiting.pop(subject.lower(), None)

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        await self.nc.publish(subject, data, headers=headers)

    async def subscribe(
        self, subject: str, cb: Callable[[Msg], Awaitable[None]], queue: str = ""
    ) -> Subscription:
        """A subscription kept across reconnects, `renew()` and a reopened client."""
        sub = Subscription(self, subject, queue, cb)
        sub.current = await self.nc.subscribe(subject, queue=queue, cb=cb)
        self._subs.add(sub)
        return sub

    async def settle(self) -> None:
        """Until nats-server has seen everything sent so far (and answered any refusal).

        Twice: nats-py puts a flush's PING ahead of commands it has not written yet."""
        await self.nc.flush()
        await self.nc.flush()

    def refused(self, subject: str, kind: str = "publish") -> bool:
        """Whether nats-server reported refusing `subject` (publish or subscription) since
        this connection last (re)connected."""
        return (kind, subject.lower()) in self.refusals

    # -- role changes ----------------------------------------------------------------

    def on_reconnect(self, listener: Listener) -> None:
        """Call `listener` after every reconnect (events may have been missed meanwhile)."""
        self._listeners.append(listener)

    async def renew(self, timeout: float = 10.0) -> None:
        """Reconnect at once, so that nats-server asks the registry for this key's role
        again (after registering a twin or a node). Subscriptions are restored."""
        nc = self.nc
        self._reconnected.clear()
        self._renewing = True
        try:
            await nc.force_reconnect()
            await asyncio.wait_for(self._reconnected.wait(), timeout)
        except TimeoutError:
            raise BusError("unavailable", "could not reconnect to NATS in time") from None
        finally:
            self._renewing = False
        await nc.flush()

    def _pick_server(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server, float]:
        """nats-py's reconnect choice: the same server at once when renewing; otherwise
        the least recently tried one, no more often than every `reconnect_wait`."""
        now = time.monotonic()
        current = self._nc.connected_url if self._nc is not None else None
        if self._renewing and current is not None:
            for s in servers:
                if s.uri.netloc == current.netloc:
                    self._attempts[s.uri.netloc] = now
                    return s, 0.0
        chosen = min(servers, key=lambda s: self._attempts.get(s.uri.netloc, 0.0))
        last = self._attempts.get(chosen.uri.netloc)
        delay = 0.0 if last is None else max(0.0, last + self.reconnect_wait - now)
        self._attempts[chosen.uri.netloc] = now + delay
        return chosen, delay

    # -- callbacks -------------------------------------------------------------------

    async def _on_error(self, e: Exception) -> None:
        self._last_error = e
        found = _VIOLATION.search(str(e))
        if found is None:
            log.debug("nats %s: %r", self.name, e)
            return
        kind, subject = found.groups()
        self.refusals.append((kind, subject))
        log.info("nats %s: nats-server refused %s to %s for this key", self.name, kind, subject)
        if kind == "publish":
            for waiter in self._waiting.get(subject, ()):
                waiter.refuse(
                    BusError(
                        "not_permitted", f"nats-server does not let this key publish to {subject}"
                    )
                )

    async def _on_disconnect(self) -> None:
        if not self._renewing and not self._closing:
            log.info("nats %s: disconnected, reconnecting", self.name)

    async def _on_closed(self) -> None:
        """nats-py gives up on some errors (a refusal it read as a late answer): unless we
        closed it, open a new client with the same subscriptions."""
        if not self._closing:
            log.warning(
                "nats %s: the client closed (%r); connecting afresh", self.name, self._last_error
            )
            self._reopening = asyncio.ensure_future(self._reopen())

    async def _reopen(self) -> None:
        while not self._closing:
            try:
                nc = await self._connect(timeout=30)
            except BusError as e:
                log.warning("nats %s: %s; trying again", self.name, e.message)
                await asyncio.sleep(self.reconnect_wait)
                continue
            if self._closing:
                await nc.close()
                return
            self._nc = nc
            for sub in list(self._subs):
                sub.current = await nc.subscribe(sub.subject, queue=sub.queue, cb=sub.cb)
            await self._on_reconnect()
            return

    async def _on_reconnect(self) -> None:
        self._last_error = None
        self.refusals.clear()  # the new role may allow what the old one refused
        self._reconnected.set()
        log.info("nats %s: %s", self.name, "renewed" if self._renewing else "reconnected")
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception:
                log.exception("nats %s: reconnect listener failed", self.name)


class _Waiter:
    """A request waiting for its answer, and the refusal that cancelled it, if one did."""

    __slots__ = ("refusal", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.refusal: BusError | None = None

    def refuse(self, error: BusError) -> None:
        if self.refusal is None:
            self.refusal = error
            self.task.cancel()


class Subscription:
    """A subscription of a `Connection` (it outlives the nats client under it)."""

    def __init__(
        self, conn: Connection, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> None:
        self.conn, self.subject, self.queue, self.cb = conn, subject, queue, cb
        self.current: NatsSubscription | None = None

    async def unsubscribe(self) -> None:
        self.conn._subs.discard(self)
        if self.current is not None:
            with contextlib.suppress(Exception):
                await self.current.unsubscribe()


async def connect(
    servers: str | list[str],
    identity: Identity,
    *,
    name: str = "zos",
    first_connect_timeout: float | None = 15.0,
) -> Connection:
    """An open `Connection` for `identity`."""
    return await Connection(servers, identity, name=name).open(first_connect_timeout)


class NatsHolder:
    """A connection given (shared, left open) or opened on `connect` (owned, closed)."""

    _nats_name = "zos"

    def _init_nats(self, conn: str | list[str] | Connection, identity: Identity) -> None:
        self._servers = None if isinstance(conn, Connection) else conn
        self._conn: Connection | None = conn if isinstance(conn, Connection) else None
        self._identity_for_nats = identity
        self._owns_nc = self._conn is None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError(f"{type(self).__name__} is not connected; call connect() first")
        return self._conn

    @property
    def nc(self) -> NATS:
        return self.conn.nc

    async def _open_nats(self) -> Connection:
        if self._conn is None:
            assert self._servers is not None
            self._conn = await connect(self._servers, self._identity_for_nats, name=self._nats_name)
        return self._conn

    async def _close_nats(self) -> None:
        if self._conn is not None and self._owns_nc:
            await self._conn.close()
            self._conn = None
