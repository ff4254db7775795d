"""Opening a NATS connection that reconnects by itself.

Every zos piece connects through `connect_nats`: it retries forever (every
`reconnect_wait` seconds) when the server goes away, resubscribes when it is back,
and accepts one URL, a comma-separated list, or a list (a cluster).
"""

from __future__ import annotations

import asyncio
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
