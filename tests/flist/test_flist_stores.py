"""Store URLs and routes, and the RESP framing the zdb store speaks (the round trip
through a real zdb server is in test_flist_zdb_store.py)."""

from __future__ import annotations

import asyncio

import pytest

from zos.flist import Router, StoreError, ZdbStore
from zos.zdb.client import RespError, encode, read_reply


def test_routes_parse_and_hide_passwords() -> None:
    router = Router.parse(
        [
            "00-7f=zdb://user:s3cret@10.0.0.2:9901/blocks",
            "80-ff=zdb://10.0.0.3/other",
            "https://me:pw@hub.example:8443/base",
            "dir:///srv/blocks",
        ]
    )
    zdb = router.routes[0][2]
    assert isinstance(zdb, ZdbStore)
    assert (zdb.namespace, zdb.password) == ("blocks", "s3cret")
    assert [(r.start, r.end, r.url) for r in router.public_routes()] == [
        (0x00, 0x7F, "zdb://10.0.0.2:9901/blocks"),
        (0x80, 0xFF, "zdb://10.0.0.3:9900/other"),
        (0x00, 0xFF, "https://hub.example:8443/base"),
        (0x00, 0xFF, "dir:///srv/blocks"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ff-00=dir:///x", "range start is after its end"),
        ("s3://bucket", "unknown store type 's3'"),
        ("zdb:///nohost", "needs host:port/namespace"),
    ],
)
def test_bad_store_specs(spec: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Router.parse([spec])


async def test_unrouted_block_is_an_error() -> None:
    router = Router.parse(["00-0f=dir:///nonexistent"])
    with pytest.raises(StoreError, match="no store is routed for blocks starting with ff"):
        await router.get(b"\xff" * 32)


async def _replies(data: bytes) -> list:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while not reader.at_eof():
        try:
            out.append(await read_reply(reader))
        except RespError as e:
            out.append(f"error: {e}")
    return out


async def test_resp_framing() -> None:
    assert encode(b"SET", b"\x00k", b"") == b"*3\r\n$3\r\nSET\r\n$2\r\n\x00k\r\n$0\r\n\r\n"
    replies = await _replies(
        b"$2\r\n\x00k\r\n"  # 0-db SET: the key
        b"$-1\r\n"  # GET of a missing key: nil
        b"+OK\r\n:42\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n"
        b"-Namespace protected and private\r\n"
        # An error inside an array (MGET): raised once the whole array is read, so
        # the reply after it is read in step.
        b"*2\r\n-Internal Error\r\n$1\r\nb\r\n:7\r\n"
    )
    assert replies == [
        b"\x00k",
        None,
        "OK",
        42,
        [b"a", [1]],
        "error: Namespace protected and private",
        "error: Internal Error",
        7,
    ]
