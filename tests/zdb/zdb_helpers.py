"""Helpers for the zdb tests: a bare connection that sends any bytes, a SCAN walk,
NSINFO parsing."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from zos.zdb.client import RespClient, RespError, encode, read_value

ADMIN = "admin-secret"  # the same as tests/conftest.py ZDB_ADMIN

# The `connect` fixture: open_client(admin=False, ns=None, password=None)
Connect = Callable[..., Awaitable[RespClient]]


@dataclass(frozen=True)
class Err:
    """An error reply, as a value (RespClient raises them instead)."""

    text: str


def _errors_as_values(reply: object) -> object:
    if isinstance(reply, RespError):
        return Err(str(reply))
    if isinstance(reply, list):
        return [_errors_as_values(item) for item in reply]
    return reply


async def read_any(reader: asyncio.StreamReader) -> object:
    """One reply: `+` lines as str, bulk strings as bytes, errors as Err (also inside
    arrays, where RespClient raises the first)."""
    return _errors_as_values(await read_value(reader))


class Raw:
    """A bare TCP connection: any bytes out, replies in with errors as values."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: tuple[str, int], rcvbuf: int | None = None) -> Raw:
        """`rcvbuf`: a fixed, small receive buffer (no autotuning), so that a server
        writing to a client that does not read is soon held up."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except OSError:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 25)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10) -> object:
        return await asyncio.wait_for(read_any(self.reader), timeout)

    async def cmd(self, *args: bytes) -> object:
        await self.send(encode(*args))
        return await self.reply()

    async def closed_by_server(self, timeout: float = 10) -> bool:
        """Whether the server hung up: end of stream with nothing more to read."""
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def walk(client: RespClient, command: bytes, cursor: bytes | None = None) -> list[list]:
    """Every [key, size, timestamp] SCAN (or RSCAN) returns, following its cursor."""
    items: list[list] = []
    while True:
        try:
            reply = await client.command(command, *([cursor] if cursor is not None else []))
        except RespError as e:
            assert str(e) == "No more data"
            return items
        assert isinstance(reply, list) and len(reply) == 2
        cursor, page = reply
        assert isinstance(cursor, bytes) and page
        items.extend(page)


def nsinfo(text: bytes) -> dict[str, str]:
    """NSINFO's `key: value` lines."""
    return dict(re.findall(r"^(\w+): (.*)$", text.decode(), re.M))


def refused(text: str) -> pytest.RaisesExc:
    """pytest.raises for an error reply saying exactly `text`."""
    return pytest.raises(RespError, match=f"^{re.escape(text)}$")
