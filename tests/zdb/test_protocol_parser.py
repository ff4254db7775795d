"""RequestParser: the same requests, limits and errors from bytes fed in any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zos.zdb.client import encode
from zos.zdb.protocol import (
    MAX_VALUE,
    ProtocolError,
    RequestParser,
    RequestTooLarge,
)


def drain(parser: RequestParser) -> list[list[bytes]]:
    out = []
    while (args := parser.next()) is not None:
        out.append(args)
    return out


def parse_chunked(stream: bytes, cuts: list[int]) -> list[list[bytes]]:
    parser = RequestParser()
    out: list[list[bytes]] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        parser.feed(stream[start:cut])
        start = cut
        out += drain(parser)
    assert not parser.pending
    return out


requests = st.lists(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5), min_size=1, max_size=20
)


@settings(max_examples=200, deadline=None)
@given(requests, st.data())
def test_any_chunking_gives_the_requests_sent(reqs: list[list[bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode(*r) for r in reqs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert parse_chunked(stream, cuts) == reqs


def test_byte_at_a_time() -> None:
    reqs = [[b"SET", b"k", b"v" * 1000], [b"GET", b"k"], [b"PING"]]
    stream = b"".join(encode(*r) for r in reqs)
    assert parse_chunked(stream, list(range(len(stream)))) == reqs


def test_too_large_is_dropped_as_it_comes_and_the_connection_goes_on() -> None:
    parser = RequestParser()
    parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (MAX_VALUE + 1))
    chunk = b"x" * (1 << 20)
    sent = 0
    while sent < MAX_VALUE + 1:
        part = chunk[: MAX_VALUE + 1 - sent]
        parser.feed(part)
        sent += len(part)
        assert parser.next() is None
        assert parser.buffered == 0  # nothing of it is held
    parser.feed(b"\r\n" + encode(b"PING"))
    with pytest.raises(RequestTooLarge, match="argument 2"):
        parser.next()
    assert parser.next() == [b"PING"]
    assert not parser.pending


def test_request_over_budget_is_refused_whole() -> None:
    half = MAX_VALUE // 2 + 1
    parser = RequestParser()
    parser.feed(encode(b"MGET", b"a" * half, b"b" * half, b"c" * half) + encode(b"PING"))
    with pytest.raises(RequestTooLarge, match="byte limit"):
        parser.next()
    assert parser.next() == [b"PING"]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"PING\r\n", "expected '\\*'"),
        (b"*x\r\n", "invalid array length"),
        (b"*0\r\n", "empty request"),
        (b"*1025\r\n", "exceeds 1024"),
        (b"*1\r\n+3\r\n", "expected '\\$'"),
        (b"*1\r\n$3\r\nPINGX\r\n", "not terminated by CRLF"),
        (b"*1\r\n$99999999999\r\n", "exceeds"),
        (b"*1\r\n$" + b"1" * 70, "line too long"),
        (b"*" + b"1" * 70 + b"\r\n", "line too long"),
    ],
)
def test_protocol_errors(stream: bytes, message: str) -> None:
    parser = RequestParser()
    parser.feed(stream)
    with pytest.raises(ProtocolError, match=message):
        parser.next()


def test_a_cut_request_is_pending() -> None:
    parser = RequestParser()
    parser.feed(encode(b"GET", b"key")[:-3])
    assert parser.next() is None
    assert parser.pending
