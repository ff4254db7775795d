"""How a long-running zos process learns it should stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


def stop_on_signals(event: asyncio.Event | None = None) -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets (on the running loop): servers wait on it,
    then shut down cleanly instead of dying mid-write."""
    stop = event if event is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_until_stopped(*stops: Callable[[], Awaitable[object]]) -> None:
    """Wait for SIGTERM or SIGINT, then await each of `stops` in order (also when the
    wait is cancelled): the end of every server command."""
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        for step in stops:
            await step()
