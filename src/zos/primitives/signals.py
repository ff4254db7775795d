"""How a long-running zos process learns it should stop."""

from __future__ import annotations

import asyncio
import signal


def stop_on_signals(event: asyncio.Event | None = None) -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets (on the running loop): servers wait on it,
    then shut down cleanly instead of dying mid-write."""
    stop = event if event is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
