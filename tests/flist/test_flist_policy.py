"""Where a tenant's flist may make a node connect (issue 12, finding 3: the node fetched
whatever a tenant named, its own loopback and the control plane included)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from zos.flist import FlistError, StoreError, make_store
from zos.flist.ops import download_flist
from zos.flist.policy import FetchPolicy
from zos.zdb.client import RespClient

CONTROL = IPv4Address("203.0.113.5")
OWN = IPv4Address("198.51.100.7")


def policy() -> FetchPolicy:
    return FetchPolicy(["http://203.0.113.5:8080"], [CONTROL], local=lambda: [OWN])


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [
        ("127.0.0.1", 80, "127.0.0.1 is the node's loopback"),
        ("localhost", 80, "127.0.0.1 is the node's loopback"),
        ("127.1", 80, "127.0.0.1 is the node's loopback"),
        ("0.0.0.0", 80, "not a routable address"),
        ("169.254.169.254", 80, "not a routable address"),
        ("224.0.0.1", 80, "not a routable address"),
        ("203.0.113.5", 4222, "the grid's control plane"),  # its NATS, next to the hub
        ("198.51.100.7", 9900, "an address of this node"),
        ("::1", 80, "only IPv4"),
    ],
)
async def test_refused_addresses(host: str, port: int, why: str) -> None:
    with pytest.raises(StoreError, match=why):
        await policy().address(host, port)


async def test_allowed_addresses() -> None:
    p = policy()
    assert await p.address("198.51.100.8", 80) == "198.51.100.8"  # another machine
    assert await p.address("203.0.113.5", 8080) == "203.0.113.5"  # the configured hub


def test_routes_must_be_network_stores() -> None:
    p = policy()
    with pytest.raises(FlistError, match=r"dir:// stores \(a path on the node\) are not allowed"):
        p.check_route("dir:///var/lib/zos/flist-cache/blocks")
    with pytest.raises(FlistError, match="not a network store"):
        p.check_route("file:///etc/passwd")
    p.check_route("zdb://10.0.0.2:9900/blocks")
    p.check_route("https://hub.example/")


async def test_download_refuses_before_connecting(tmp_path) -> None:
    with pytest.raises(FlistError, match=r"refused: 127\.0\.0\.1 is the node.s loopback"):
        await download_flist("http://localhost:1/x.fl", tmp_path / "x.fl", policy())
    assert list(tmp_path.iterdir()) == []


async def test_a_zdb_route_is_no_password_oracle(zdb_proc) -> None:
    # Finding 3: a zdb:// route to another tenant's namespace answered differently for a
    # wrong password and a missing block. For a tenant's flist both are "not found".
    zdb_proc.start()
    port = zdb_proc.port
    admin = RespClient("127.0.0.1", port, timeout=10)
    try:
        await admin.command(b"AUTH", b"admin-secret")  # tests/conftest.py's ZDB_ADMIN
        await admin.command(b"NSNEW", b"victim")
        await admin.command(b"NSSET", b"victim", b"password", b"right")
        await admin.command(b"NSSET", b"victim", b"public", b"0")
    finally:
        await admin.close()
    block = bytes(32)
    guard = FetchPolicy([f"zdb://127.0.0.1:{port}"])  # reachable here as a configured store
    answers = []
    for password in ("wrong", "right"):
        store = make_store(f"zdb://:{password}@127.0.0.1:{port}/victim", guard=guard)
        try:
            answers.append(await store.get(block))
        finally:
            await store.close()
    assert answers == [None, None]
    unguarded = make_store(f"zdb://:wrong@127.0.0.1:{port}/victim")
    try:
        with pytest.raises(StoreError, match="the server refused it"):
            await unguarded.get(block)
    finally:
        await unguarded.close()
