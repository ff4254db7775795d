"""Opening a NATS connection that reconnects by itself.

Every zos piece connects through `connect_nats`: it retries forever (every
`reconnect_wait` seconds) when the server goes away, resubscribes when it is back,
and accepts one URL, a comma-separated list, or a list (a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import nats
import nats.errors
from nats.aio.client import Client as NATS

from zos.bus.errors import BusError

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def default_nats_url() -> str:
    return os.environ.get("ZOS_NATS", DEFAULT_NATS_URL)


def server_list(servers: str | list[str]) -> list[str]:
    if isinstance(servers, str):
        servers = servers.split(",")
    result = [s.strip() for s in servers if s.strip()]
    if not result:
        raise ValueError("no NATS server URL given")
    return result


async def connect_nats(
    servers: str | list[str],
    *,
    name: str = "zos",
    reconnect_wait: float = 0.5,
    connect_timeout: float = 5.0,
    first_connect_timeout: float | None = 15.0,
) -> NATS:
    """A connected client; BusError `unavailable` if no server answers at first.

    After the first connection, the client reconnects forever on its own.
    """

    async def on_error(e: Exception) -> None:
        log.debug("nats %s: %s", name, e)

    async def on_disconnect() -> None:
        log.info("nats %s: disconnected, reconnecting", name)

    async def on_reconnect() -> None:
        log.info("nats %s: reconnected", name)

    urls = server_list(servers)
    connecting = nats.connect(
        servers=urls,
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=reconnect_wait,
        connect_timeout=connect_timeout,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    try:
        # nats-py retries a first connection forever too: bound it.
        return await asyncio.wait_for(connecting, first_connect_timeout)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        raise BusError("unavailable", f"cannot reach NATS at {', '.join(urls)} ({e!r})") from None


class NatsHolder:
    """A NATS connection given (shared, left open) or opened on `connect` (owned, closed)."""

    _nats_name = "zos"

    def _init_nats(self, nats_conn: str | list[str] | NATS) -> None:
        self._servers = None if isinstance(nats_conn, NATS) else nats_conn
        self._nc: NATS | None = nats_conn if isinstance(nats_conn, NATS) else None
        self._owns_nc = self._nc is None

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError(f"{type(self).__name__} is not connected; call connect() first")
        return self._nc

    async def _open_nats(self) -> NATS:
        if self._nc is None:
            assert self._servers is not None
            self._nc = await connect_nats(self._servers, name=self._nats_name)
        return self._nc

    async def _close_nats(self) -> None:
        if self._nc is not None and self._owns_nc:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
