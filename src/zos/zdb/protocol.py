"""RESP on the server side: bounded request parsing and reply encoding.

Every length a client sends is checked before memory is taken for it, so a hostile
peer can hold at most one request's worth (`MAX_REQUEST` bytes) per connection.
"""

from __future__ import annotations

import asyncio

MAX_ARGS = 1024  # 0-db refuses more arguments than this
MAX_VALUE = 8 * 1024 * 1024  # largest value 0-db stores
MAX_KEY = 255
# One SET of the largest value, or MGET of 1023 of the largest keys, fits.
MAX_REQUEST = MAX_VALUE + 512 * 1024
MAX_LINE = 64  # `*1024\r\n` or `$8388608\r\n`, with room to spare

NIL = b"$-1\r\n"
OK = b"+OK\r\n"


class ProtocolError(Exception):
    """The byte stream is not a RESP request; the connection cannot continue."""


class RequestTooLarge(Exception):
    """A well-formed request over the limits; it was read and dropped, the
    connection goes on."""


# Past this a claimed length is not worth reading through: the peer is cut off.
_DISCARD_LIMIT = 64 * 1024 * 1024


def simple(text: str) -> bytes:
    return b"+%s\r\n" % text.encode()


def error(text: str) -> bytes:
    # A line break in an error would split the reply: never let one through.
    return b"-%s\r\n" % text.replace("\r", " ").replace("\n", " ").encode()


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(data: bytes | None) -> bytes:
    return NIL if data is None else b"$%d\r\n%s\r\n" % (len(data), data)


def array(items: list[bytes]) -> bytes:
    """`items` are already encoded replies."""
    return b"*%d\r\n%s" % (len(items), b"".join(items))


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError("line too long") from None
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    return line[:-2]


def _length(line: bytes, prefix: bytes, what: str, limit: int) -> int:
    if line[:1] != prefix:
        raise ProtocolError(f"expected '{prefix.decode()}', got {line[:1]!r}")
    digits = line[1:]
    if not digits.isdigit():
        raise ProtocolError(f"invalid {what} length")
    n = int(digits)
    if n > limit:
        raise ProtocolError(f"{what} length {n} exceeds {limit}")
    return n


async def read_request(reader: asyncio.StreamReader) -> list[bytes] | None:
    """One command as its arguments; None at a clean end of stream."""
    try:
        first = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ProtocolError("connection closed inside a request") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError("line too long") from None
    if len(first) > MAX_LINE:
        raise ProtocolError("line too long")
    count = _length(first[:-2], b"*", "array", MAX_ARGS)
    if count == 0:
        raise ProtocolError("empty request")
    args: list[bytes] = []
    budget = MAX_REQUEST
    too_large = ""
    try:
        for i in range(count):
            n = _length(await _line(reader), b"$", "bulk", _DISCARD_LIMIT)
            if too_large or n > MAX_VALUE or n > budget:
                too_large = too_large or (
                    f"argument {i} is {n} bytes, over the {MAX_VALUE} limit"
                    if n > MAX_VALUE
                    else f"request is over the {MAX_REQUEST} byte limit"
                )
                await _discard(reader, n + 2)
                continue
            budget -= n
            data = await reader.readexactly(n + 2)
            if data[-2:] != b"\r\n":
                raise ProtocolError("bulk string not terminated by CRLF")
            args.append(data[:-2])
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a request") from None
    if too_large:
        raise RequestTooLarge(too_large)
    return args


async def _discard(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        chunk = await reader.read(min(n, 1 << 20))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(chunk)
