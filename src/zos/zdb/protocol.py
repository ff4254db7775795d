"""RESP on the server side: bounded request parsing and reply encoding.

Every length a client sends is checked before memory is taken for it, so a hostile
peer can hold at most one request's worth (`MAX_REQUEST` bytes) per connection.
"""

from __future__ import annotations

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


def _length(line: bytes | bytearray, prefix: bytes, what: str, limit: int) -> int:
    if line[:1] != prefix:
        raise ProtocolError(f"expected '{prefix.decode()}', got {bytes(line[:1])!r}")
    digits = line[1:]
    if not digits.isdigit():
        raise ProtocolError(f"invalid {what} length")
    n = int(digits)
    if n > limit:
        raise ProtocolError(f"{what} length {n} exceeds {limit}")
    return n


class RequestParser:
    """Requests from bytes as they arrive (no I/O): `feed` what the socket gave,
    then call `next` until it returns None.

    A connection costs one read per chunk, not two awaits per argument, and the
    server learns how many requests are already there, so it can answer them all
    with one write. A too-large argument is dropped as it arrives, never held.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._count = 0  # arguments of the current request
        self._left = -1  # arguments still to read; -1: between requests
        self._need = -1  # bytes of the current bulk string with its CRLF; -1: its header
        self._args: list[bytes] = []
        self._budget = MAX_REQUEST
        self._too_large = ""
        self._skip = 0  # bytes of a dropped argument still to come

    def feed(self, data: bytes) -> None:
        # A skip left over means `next` emptied the buffer: the new bytes are next.
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held: at most one request's worth and what came with it."""
        return len(self._buf) - self._pos

    @property
    def pending(self) -> bool:
        """Whether part of a request has arrived (at end of stream: a cut request)."""
        return self._left >= 0 or self._skip > 0 or len(self._buf) > self._pos

    def next(self) -> list[bytes] | None:
        """The next complete request, or None until more bytes are fed."""
        if self._skip and not self._drop():
            return None
        # Locals, written back only when waiting: this loop runs for every argument.
        buf, pos, left, need = self._buf, self._pos, self._left, self._need
        while True:
            if left < 0:
                end = _line_end(buf, pos)
                if end < 0:
                    break
                left = _length(buf[pos:end], b"*", "array", MAX_ARGS)
                if left == 0:
                    raise ProtocolError("empty request")
                self._count, pos = left, end + 2
            if left == 0:
                args, too_large = self._args, self._too_large
                self._pos = pos
                self._left, self._need, self._args = -1, -1, []
                self._budget, self._too_large = MAX_REQUEST, ""
                if too_large:
                    raise RequestTooLarge(too_large)
                return args
            if need < 0:
                end = _line_end(buf, pos)
                if end < 0:
                    break
                n = _length(buf[pos:end], b"$", "bulk", _DISCARD_LIMIT)
                pos = end + 2
                if self._too_large or n > MAX_VALUE or n > self._budget:
                    self._too_large = self._too_large or (
                        f"argument {self._count - left} is {n} bytes, over the {MAX_VALUE} limit"
                        if n > MAX_VALUE
                        else f"request is over the {MAX_REQUEST} byte limit"
                    )
                    self._pos, self._left, self._need = pos, left - 1, -1
                    self._skip = n + 2
                    if not self._drop():
                        return None
                    pos, left = self._pos, self._left
                    continue
                self._budget -= n
                need = n + 2
            end = pos + need
            if len(buf) < end:
                break
            if buf[end - 2 : end] != b"\r\n":
                raise ProtocolError("bulk string not terminated by CRLF")
            if need > 65536:
                with memoryview(buf) as view:  # one copy of a large value, not two
                    self._args.append(bytes(view[pos : end - 2]))
            else:
                self._args.append(bytes(buf[pos : end - 2]))
            pos, need, left = end, -1, left - 1
        self._pos, self._left, self._need = pos, left, need
        self._compact()
        return None

    def _drop(self) -> bool:
        """Drop what is here of a skipped argument; whether all of it is gone."""
        dropped = min(self._skip, len(self._buf) - self._pos)
        self._pos += dropped
        self._skip -= dropped
        self._compact()
        return not self._skip

    def _compact(self) -> None:
        # Only when waiting for bytes: consumed bytes go once per read, not per request.
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0


def _line_end(buf: bytearray, pos: int) -> int:
    """Where the line at `pos` ends (its CR); -1 until all of it is here."""
    end = buf.find(b"\r\n", pos, pos + MAX_LINE)
    if end < 0 and len(buf) - pos >= MAX_LINE:
        raise ProtocolError("line too long")
    return end
