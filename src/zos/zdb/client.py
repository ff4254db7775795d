"""A small RESP (Redis protocol) client, enough to speak to a 0-db namespace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

MAX_BULK = 16 * 1024 * 1024  # 0-db values are at most 8 MiB


class RespError(Exception):
    """An error reply (`-...`) or a reply that breaks the protocol."""


class RespUnavailable(RespError):
    """The server could not be reached, or the connection broke (said in our words)."""


Reply = bytes | str | int | list | None


def encode(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


async def read_value(reader: asyncio.StreamReader, depth: int = 0) -> Reply | RespError:
    """One reply, with error replies as RespError values (inside arrays too), so an
    array is always read to its end and the connection stays in step."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode(errors="replace")
    if kind == b"-":
        return RespError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        if n > MAX_BULK:
            raise RespError(f"bulk reply of {n} bytes is too large")
        data = await reader.readexactly(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        if depth > 8:
            raise RespError("reply nested too deeply")
        return [await read_value(reader, depth + 1) for _ in range(n)]
    raise RespError(f"not a RESP reply: {line[:40]!r}")


def _first_error(reply: Reply | RespError) -> RespError | None:
    if isinstance(reply, RespError):
        return reply
    if isinstance(reply, list):
        for item in reply:
            if (error := _first_error(item)) is not None:
                return error
    return None


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One reply; an error reply, anywhere in it, is raised once the whole reply is read."""
    reply = await read_value(reader)
    error = _first_error(reply)
    if error is not None:
        raise error
    return reply  # type: ignore[return-value]


class RespClient:
    """One connection, opened on first use and again after a failure."""

    def __init__(
        self,
        host: str,
        port: int,
        on_connect: Callable[[RespClient], Awaitable[None]] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.on_connect = on_connect
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def raw_command(self, *args: bytes) -> Reply:
        assert self._reader is not None and self._writer is not None
        self._writer.write(encode(*args))
        await self._writer.drain()
        return await asyncio.wait_for(read_reply(self._reader), self.timeout)

    async def command(self, *args: bytes) -> Reply:
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout
                )
                if self.on_connect is not None:
                    try:
                        await self.on_connect(self)
                    except RespError:
                        await self.close()  # never keep a connection left in the wrong state
                        raise
            return await self.raw_command(*args)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            await self.close()
            raise RespUnavailable(f"{self.host}:{self.port}: {e or type(e).__name__}") from None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None
