"""Maps command names to async handlers.

A handler is `async def handler(request: Request) -> Any` returning something JSON-able.
It raises `BusError(code, message)` to answer with a structured error; any other
exception is logged here and answered as `internal` without its details.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from zos.bus.envelope import COMMAND_PATTERN, Envelope
from zos.bus.errors import BusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    source_twin: int
    command: str
    payload: Any
    envelope: Envelope


Handler = Callable[[Request], Awaitable[Any]]


class Router:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, name: str, handler: Handler) -> None:
        if not re.match(COMMAND_PATTERN, name):
            raise ValueError(f"command name {name!r} must match {COMMAND_PATTERN}")
        if name in self._handlers:
            raise ValueError(f"command {name!r} already has a handler")
        self._handlers[name] = handler

    def command(self, name: str) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.add(name, handler)
            return handler

        return decorate

    def include(self, other: Router) -> None:
        for name, handler in other._handlers.items():
            self.add(name, handler)

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(self, request: Request) -> Any:
        handler = self._handlers.get(request.command)
        if handler is None:
            raise BusError("not_found", f"unknown command {request.command!r}")
        try:
            return await handler(request)
        except BusError:
            raise
        except Exception:
            log.exception("handler for %s failed", request.command)
            raise BusError("internal", f"internal error handling {request.command!r}") from None
