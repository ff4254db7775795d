"""The hub on a real aiohttp server and a free port: reads for anyone, writes signed by a
registered twin, blocks only under their own hash, flists listed and downloaded per twin."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from zos.flist import HubSigner, Router, StoreError, encrypt_block, pack, unpack_flist
from zos.flist.blocks import MAX_CIPHERTEXT
from zos.flist.cache import FlistCache
from zos.flist.hubsign import (
    HEADER_HASH,
    HEADER_NONCE,
    HEADER_SIG,
    HEADER_TIME,
    HEADER_TWIN,
    body_digest,
    signing_message,
)
from zos.grid.natsserver import NatsServer, free_port
from zos.hub import Hub, sign_headers
from zos.hub.auth import MAX_SKEW, AuthError, RequestVerifier
from zos.hub.client import list_flists, publish_flist
from zos.identity import Identity, load_key_file

TWIN = 7
OWNER = Identity.generate()
OTHER_TWIN = 8  # a second registered twin: a neighbour, not a stranger
OTHER = Identity.generate()
UNREACHABLE_TWIN = 66  # the fixture's registry look-up fails for this one


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    """A hub that knows two twins, 7 (OWNER) and 8 (OTHER)."""
    keys = {TWIN: OWNER.public_key, OTHER_TWIN: OTHER.public_key}

    async def lookup(twin_id: int) -> bytes | None:
        if twin_id == UNREACHABLE_TWIN:
            raise ConnectionError("registry did not answer")
        return keys.get(twin_id)

    server = await Hub(tmp_path / "hub", lookup).start("127.0.0.1", free_port())
    try:
        yield server
    finally:
        await server.stop()


def make_src(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/motd").write_text("welcome\n")
    (root / "data").write_bytes(os.urandom(700_000))
    return root


async def put_block(
    hub: Hub, data: bytes, headers: dict[str, str], block_id: str | None = None
) -> tuple[int, str]:
    block_id = block_id or hashlib.blake2b(data, digest_size=32).hexdigest()
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"{hub.url}/{block_id[:2]}/{block_id}", data=data, headers=headers) as r,
    ):
        return r.status, await r.text()


def signed(identity: Identity, twin: int, data: bytes, **kw) -> dict[str, str]:
    block_id = hashlib.blake2b(data, digest_size=32).hexdigest()
    return sign_headers(identity, twin, "PUT", f"/{block_id[:2]}/{block_id}", data, **kw)


async def test_signed_pack_to_hub_and_anonymous_unpack(hub: Hub, tmp_path: Path) -> None:
    src = make_src(tmp_path / "src")
    router = Router.parse([hub.url], HubSigner(OWNER, TWIN))
    result = await pack(src, tmp_path / "x.fl", router)
    await router.close()
    stored = [p for p in (tmp_path / "hub/blocks").rglob("*") if p.is_file()]
    assert len(stored) == result.new_blocks == 3
    for p in stored:  # every block sits under its own hash
        assert hashlib.blake2b(p.read_bytes(), digest_size=32).hexdigest() == p.name
    # anyone may read: the flist's own route (the hub) without any key
    await unpack_flist(tmp_path / "x.fl", tmp_path / "out")
    assert (tmp_path / "out/etc/motd").read_text() == "welcome\n"
    assert (tmp_path / "out/data").read_bytes() == (src / "data").read_bytes()


async def test_unknown_twin_is_refused(hub: Hub) -> None:
    _, cipher = encrypt_block(b"payload")
    status, text = await put_block(hub, cipher, signed(OWNER, 99, cipher))
    assert status == 403 and "twin 99 is not registered" in text
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))


async def test_bad_signature_is_refused(hub: Hub) -> None:
    _, cipher = encrypt_block(b"payload")
    status, text = await put_block(hub, cipher, signed(Identity.generate(), TWIN, cipher))
    assert status == 403 and "bad signature" in text
    # a signature over other bytes does not cover these
    _, other = encrypt_block(b"other payload")
    headers = signed(OWNER, TWIN, other)
    block_id = hashlib.blake2b(cipher, digest_size=32).hexdigest()
    headers = sign_headers(OWNER, TWIN, "PUT", f"/{block_id[:2]}/{block_id}", other)
    status, text = await put_block(hub, cipher, headers)
    assert status == 400 and "not the BLAKE2b-256 hash of its bytes" in text
    status, text = await put_block(hub, cipher, {})
    assert status == 401 and "unsigned request" in text
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))


async def test_block_whose_id_is_not_its_hash_is_refused(hub: Hub) -> None:
    _, cipher = encrypt_block(b"payload")
    wrong = hashlib.blake2b(b"something else", digest_size=32).hexdigest()
    headers = sign_headers(OWNER, TWIN, "PUT", f"/{wrong[:2]}/{wrong}", cipher)
    status, text = await put_block(hub, cipher, headers, block_id=wrong)
    assert status == 400 and "not the BLAKE2b-256 hash of its bytes" in text
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))


async def test_a_block_body_other_than_the_signed_one_is_refused(hub: Hub) -> None:
    # The id, the path and the signed hash all agree; only the bytes sent differ (same
    # length): the hub must hash what it receives, or anyone could put other bytes
    # under a block id that flists of other twins point at.
    _, cipher = encrypt_block(b"payload")
    block_id = hashlib.blake2b(cipher, digest_size=32).hexdigest()
    other = bytes(b ^ 0xFF for b in cipher)
    status, text = await put_block(hub, other, signed(OWNER, TWIN, cipher), block_id=block_id)
    assert status == 400 and "the body does not hash to its" in text
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))
    status, _ = await put_block(hub, cipher, signed(OWNER, TWIN, cipher))
    assert status == 201  # the real bytes, signed the same way, are stored


async def test_stale_and_replayed_requests_are_refused(hub: Hub) -> None:
    _, cipher = encrypt_block(b"payload")
    status, text = await put_block(hub, cipher, signed(OWNER, TWIN, cipher, now=time.time() - 900))
    assert status == 401 and "stale" in text
    headers = signed(OWNER, TWIN, cipher)
    assert (await put_block(hub, cipher, headers))[0] == 201
    status, text = await put_block(hub, cipher, headers)
    assert status == 403 and "replayed" in text


async def test_anyone_reads_blocks(hub: Hub) -> None:
    block, cipher = encrypt_block(b"public ciphertext")
    assert (await put_block(hub, cipher, signed(OWNER, TWIN, cipher)))[0] == 201
    h = block.id.hex()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{hub.url}/{h[:2]}/{h}") as r:
            assert r.status == 200 and await r.read() == cipher
        async with s.head(f"{hub.url}/{h[:2]}/{h}") as r:
            assert r.status == 200
        missing = "ab" * 32
        async with s.get(f"{hub.url}/ab/{missing}") as r:
            assert r.status == 404


async def test_publish_list_download_flists(hub: Hub, tmp_path: Path) -> None:
    src = make_src(tmp_path / "src")
    signer = HubSigner(OWNER, TWIN)
    router = Router.parse([hub.url], signer)
    await pack(src, tmp_path / "app.fl", router)
    await router.close()
    answer = await publish_flist(hub.url, signer, tmp_path / "app.fl")
    assert answer["name"] == "app.fl"
    items = await list_flists(hub.url, TWIN)
    assert [i["name"] for i in items] == ["app.fl"]
    assert (
        items[0]["hash"]
        == hashlib.blake2b((tmp_path / "app.fl").read_bytes(), digest_size=32).hexdigest()
    )
    assert await list_flists(hub.url, 8) == []
    url = f"{hub.url}/flists/{TWIN}/app.fl"
    await unpack_flist(url, tmp_path / "out")
    assert (tmp_path / "out/etc/motd").read_text() == "welcome\n"

    # the node cache prepares straight from the hub URL
    cache = FlistCache(tmp_path / "cache", 1 << 30)
    tree = await cache.prepare(url)
    assert (tree / "data").read_bytes() == (src / "data").read_bytes()
    cache.close()

    # nobody can publish garbage, nor outside the flists directory
    (tmp_path / "junk.fl").write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    with pytest.raises(StoreError, match="not a valid flist"):
        await publish_flist(hub.url, signer, tmp_path / "junk.fl")
    with pytest.raises(StoreError, match="400"):
        await publish_flist(hub.url, signer, tmp_path / "app.fl", name="../../escape.fl")
    assert [i["name"] for i in await list_flists(hub.url, TWIN)] == ["app.fl"]
    assert sorted(p.name for p in (tmp_path / "hub").rglob("*.fl")) == ["app.fl"]


# -- write access: whose path, which path, which time ---------------------------------


async def send(
    hub: Hub,
    method: str,
    path: str,
    body: bytes | AsyncIterator[bytes] = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, hub.url + path, data=body, headers=headers or {}) as r,
    ):
        return r.status, await r.json()


async def published(hub: Hub, twin: int, name: str, identity: Identity, body: bytes) -> None:
    path = f"/flists/{twin}/{name}"
    status, answer = await send(
        hub, "PUT", path, body, sign_headers(identity, twin, "PUT", path, body)
    )
    assert status == 201, answer


@pytest.fixture
async def flist_bytes(tmp_path: Path) -> bytes:
    """A small valid flist (its blocks go to a local store: publishing needs none)."""
    (tmp_path / "small").mkdir()
    (tmp_path / "small/motd").write_text("hello\n")
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    await pack(tmp_path / "small", tmp_path / "small.fl", router)
    await router.close()
    return (tmp_path / "small.fl").read_bytes()


def flist_files(hub: Hub) -> dict[str, bytes]:
    """Every file under the hub's flists directory (temporary ones included)."""
    return {
        str(p.relative_to(hub.flists)): p.read_bytes() for p in hub.flists.rglob("*") if p.is_file()
    }


async def test_a_twin_cannot_publish_under_another_twins_name(hub: Hub, flist_bytes: bytes) -> None:
    """Twin 7 signs, properly and with its own key, a PUT under twin 8's directory."""
    path = f"/flists/{OTHER_TWIN}/app.fl"
    headers = sign_headers(OWNER, TWIN, "PUT", path, flist_bytes)
    status, answer = await send(hub, "PUT", path, flist_bytes, headers)
    assert (status, answer) == (403, {"error": "twin 7 cannot publish under another twin's name"})
    assert flist_files(hub) == {}
    assert await list_flists(hub.url, OTHER_TWIN) == []


async def test_a_twin_cannot_delete_another_twins_flist(hub: Hub, flist_bytes: bytes) -> None:
    await published(hub, OTHER_TWIN, "app.fl", OTHER, flist_bytes)
    path = f"/flists/{OTHER_TWIN}/app.fl"
    status, answer = await send(
        hub, "DELETE", path, headers=sign_headers(OWNER, TWIN, "DELETE", path, b"")
    )
    assert (status, answer) == (403, {"error": "twin 7 cannot remove another twin's flist"})
    assert flist_files(hub) == {"8/app.fl": flist_bytes}
    # unsigned, or signed by a key the hub does not know for twin 8: refused too
    assert (await send(hub, "DELETE", path))[0] == 401
    forged = sign_headers(OWNER, OTHER_TWIN, "DELETE", path, b"")
    assert await send(hub, "DELETE", path, headers=forged) == (
        403,
        {"error": "bad signature for twin 8"},
    )
    assert flist_files(hub) == {"8/app.fl": flist_bytes}
    # its owner can
    own = sign_headers(OTHER, OTHER_TWIN, "DELETE", path, b"")
    assert await send(hub, "DELETE", path, headers=own) == (200, {"deleted": "app.fl"})
    assert flist_files(hub) == {}
    again = sign_headers(OTHER, OTHER_TWIN, "DELETE", path, b"")
    assert await send(hub, "DELETE", path, headers=again) == (404, {"error": "no such flist"})
    bad = f"/flists/{OTHER_TWIN}/..secret"
    status, _ = await send(
        hub, "DELETE", bad, headers=sign_headers(OTHER, OTHER_TWIN, "DELETE", bad, b"")
    )
    assert status == 400


async def test_a_signed_request_only_works_on_its_own_path(hub: Hub, flist_bytes: bytes) -> None:
    """Signed requests taken in flight (never delivered) and sent elsewhere: to another
    name, as another method, under another twin. The nonce is fresh each time, so only
    the signature over method and path can refuse them."""
    await published(hub, TWIN, "prod.fl", OWNER, flist_bytes)
    before = flist_files(hub)
    bad = (403, {"error": "bad signature for twin 7"})

    meant = sign_headers(OWNER, TWIN, "PUT", f"/flists/{TWIN}/test.fl", flist_bytes)
    assert await send(hub, "PUT", f"/flists/{TWIN}/other.fl", flist_bytes, meant) == bad

    old = sign_headers(OWNER, TWIN, "DELETE", f"/flists/{TWIN}/old.fl", b"")
    assert await send(hub, "DELETE", f"/flists/{TWIN}/prod.fl", headers=old) == bad

    as_delete = sign_headers(OWNER, TWIN, "DELETE", f"/flists/{TWIN}/prod.fl", b"")
    assert await send(hub, "PUT", f"/flists/{TWIN}/prod.fl", b"", as_delete) == bad

    block, cipher = encrypt_block(b"a block")
    h = block.id.hex()
    for_block = sign_headers(OWNER, TWIN, "PUT", f"/{h[:2]}/{h}", cipher)
    assert await send(hub, "PUT", f"/flists/{TWIN}/block.fl", cipher, for_block) == bad
    assert flist_files(hub) == before
    # and each of them works where it was meant to
    assert (await send(hub, "DELETE", f"/flists/{TWIN}/prod.fl", headers=as_delete))[0] == 200
    assert (await send(hub, "PUT", f"/{h[:2]}/{h}", cipher, for_block))[0] == 201


@pytest.mark.parametrize("header", [HEADER_TIME, HEADER_NONCE, HEADER_TWIN])
async def test_every_signed_header_is_covered(hub: Hub, header: str) -> None:
    _, cipher = encrypt_block(b"payload")
    headers = signed(OWNER, TWIN, cipher)
    headers[header] = {
        HEADER_TIME: str(int(headers[HEADER_TIME]) - 1),
        HEADER_NONCE: "0" * 32,
        HEADER_TWIN: str(OTHER_TWIN),
    }[header]
    status, text = await put_block(hub, cipher, headers)
    assert status == 403 and "bad signature" in text
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))


@pytest.mark.parametrize("offset", [-MAX_SKEW - 30, MAX_SKEW + 30])
async def test_times_too_far_either_side_are_refused(hub: Hub, offset: int) -> None:
    """A request signed for a time far in the past, or far in the future (a signature
    made now that would stay usable later), is stale; one within the skew is taken."""
    _, cipher = encrypt_block(b"payload")
    headers = signed(OWNER, TWIN, cipher, now=time.time() + offset)
    status, text = await put_block(hub, cipher, headers)
    assert status == 401 and f"timestamp is more than {MAX_SKEW}s off" in text
    within = offset - 60 if offset > 0 else offset + 60
    assert (await put_block(hub, cipher, signed(OWNER, TWIN, cipher, now=time.time() + within)))[
        0
    ] == 201


@pytest.mark.parametrize(("length", "status"), [(15, 400), (16, 201), (64, 201), (65, 400)])
async def test_nonce_length_is_bounded(hub: Hub, length: int, status: int) -> None:
    _, cipher = encrypt_block(b"payload %d" % length)
    block_id = hashlib.blake2b(cipher, digest_size=32).hexdigest()
    path = f"/{block_id[:2]}/{block_id}"
    timestamp, nonce = int(time.time()), "n" * length
    message = signing_message("PUT", path, timestamp, nonce, body_digest(cipher))
    headers = {
        HEADER_TWIN: str(TWIN),
        HEADER_TIME: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_HASH: body_digest(cipher),
        HEADER_SIG: OWNER.sign(message).hex(),
    }
    got, text = await put_block(hub, cipher, headers)
    assert got == status, text
    if status == 400:
        assert "nonce must be 16 to 64 characters" in text


async def test_replayed_nonces_are_remembered_as_long_as_valid() -> None:
    """The verifier forgets a nonce only once its request would be stale anyway."""
    keys = {TWIN: OWNER.public_key}

    async def lookup(twin_id: int) -> bytes | None:
        return keys.get(twin_id)

    verifier = RequestVerifier(lookup, max_skew=60)
    headers = sign_headers(OWNER, TWIN, "DELETE", "/flists/7/a.fl", b"")
    assert await verifier.verify("DELETE", "/flists/7/a.fl", headers) == TWIN
    other = sign_headers(OWNER, TWIN, "DELETE", "/flists/7/b.fl", b"")
    await verifier.verify("DELETE", "/flists/7/b.fl", other)  # prunes, keeps both
    with pytest.raises(AuthError, match="replayed"):
        await verifier.verify("DELETE", "/flists/7/a.fl", headers)
    with pytest.raises(AuthError) as e:
        await verifier.verify("DELETE", "/flists/7/a.fl", {})
    assert e.value.status == 401


async def test_every_refusal_has_its_status_and_reason(hub: Hub) -> None:
    """What a client sees for each malformed or unauthorised block write (and read)."""
    _, cipher = encrypt_block(b"payload")
    block_id = hashlib.blake2b(cipher, digest_size=32).hexdigest()
    path = f"/{block_id[:2]}/{block_id}"
    good = sign_headers(OWNER, TWIN, "PUT", path, cipher)
    bad_id = (400, {"error": "block id must be 64 lowercase hex under its first 2"})
    other_prefix = "00" if block_id[:2] != "00" else "11"
    for where in (f"/{block_id[:2]}/{block_id.upper()}", f"/{other_prefix}/{block_id}"):
        assert await send(hub, "PUT", where, cipher, good) == bad_id
        assert await send(hub, "GET", where) == bad_id

    def changed(**headers: str) -> dict[str, str]:
        return {**sign_headers(OWNER, TWIN, "PUT", path, cipher), **headers}

    cases = [
        (changed(**{HEADER_TWIN: "seven"}), 400, "twin id and timestamp must be integers"),
        (changed(**{HEADER_TIME: "now"}), 400, "twin id and timestamp must be integers"),
        (changed(**{HEADER_SIG: "not hex"}), 400, "signature must be hex"),
        (changed(**{HEADER_HASH: "ab"}), 400,
         f"{HEADER_HASH} must be 64 lowercase hex (BLAKE2b-256)"),
        (changed(**{HEADER_HASH: body_digest(b"other")}), 403, f"bad signature for twin {TWIN}"),
        (
            sign_headers(OWNER, UNREACHABLE_TWIN, "PUT", path, cipher),
            503,
            f"cannot look up twin {UNREACHABLE_TWIN}: registry did not answer",
        ),
        (sign_headers(OWNER, 99, "PUT", path, cipher), 403, "twin 99 is not registered"),
        ({HEADER_TWIN: str(TWIN)}, 401, "unsigned request: missing header(s) "
         "X-Zos-Timestamp, X-Zos-Nonce, X-Zos-Content-Hash, X-Zos-Signature"),
    ]  # fmt: skip
    for headers, status, reason in cases:
        assert await send(hub, "PUT", path, cipher, headers) == (status, {"error": reason})
    assert not any(p.is_file() for p in hub.blocks.rglob("*"))
    assert await send(hub, "PUT", path, cipher, good) == (201, {"id": block_id, "stored": True})
    again = sign_headers(OWNER, TWIN, "PUT", path, cipher)
    assert await send(hub, "PUT", path, cipher, again) == (200, {"id": block_id, "stored": False})


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """The body as a stream: sent chunked, with no Content-Length (refused: 411)."""
    for off in range(0, len(data), 65536):
        yield data[off : off + 65536]


async def test_block_size_limit_to_the_byte(hub: Hub) -> None:
    """A block of MAX_CIPHERTEXT bytes is taken; one byte more is refused from its
    Content-Length; a body streamed without one (chunked) is refused whatever its size."""
    too_big = (413, {"error": f"a block is at most {MAX_CIPHERTEXT} bytes"})
    no_length = (411, {"error": "a write needs a Content-Length (no chunked bodies)"})
    for size, expected in ((MAX_CIPHERTEXT, 201), (MAX_CIPHERTEXT + 1, 413)):
        data = os.urandom(size)
        block_id = hashlib.blake2b(data, digest_size=32).hexdigest()
        path = f"/{block_id[:2]}/{block_id}"
        status, answer = await send(
            hub, "PUT", path, data, sign_headers(OWNER, TWIN, "PUT", path, data)
        )
        assert status == expected, answer
        if expected == 413:
            assert (status, answer) == too_big

        headers = sign_headers(OWNER, TWIN, "PUT", path, data)
        assert await send(hub, "PUT", path, chunked(data), headers) == no_length
    assert len([p for p in hub.blocks.rglob("*") if p.is_file()]) == 1


async def test_an_flist_upload_is_bounded_and_unsigned_ones_are_not_read(
    hub: Hub, flist_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who sends and how much are checked before the body is read: an unsigned or stale
    upload is refused as such, a signed one declaring more than the limit is refused
    from its Content-Length; nothing is left behind."""
    from zos.hub import server

    monkeypatch.setattr(server, "MAX_FLIST_BYTES", 64 * 1024)
    path = f"/flists/{TWIN}/small.fl"
    status, answer = await send(hub, "PUT", path, flist_bytes, {HEADER_TWIN: str(TWIN)})
    assert status == 401 and answer["error"].startswith("unsigned request"), answer
    stale = sign_headers(OWNER, TWIN, "PUT", path, flist_bytes, now=time.time() - 900)
    assert (await send(hub, "PUT", path, flist_bytes, stale))[0] == 401
    big = flist_bytes + os.urandom(100 * 1024)
    path = f"/flists/{TWIN}/big.fl"
    headers = sign_headers(OWNER, TWIN, "PUT", path, big)
    assert await send(hub, "PUT", path, big, headers) == (
        413,
        {"error": "an flist is at most 65536 bytes"},
    )
    assert flist_files(hub) == {}  # no part file left behind either
    # the limit to the byte
    exact = len(flist_bytes)
    for limit, status in ((exact - 1, 413), (exact, 201)):
        monkeypatch.setattr(server, "MAX_FLIST_BYTES", limit)
        path = f"/flists/{TWIN}/at-{limit}.fl"
        headers = sign_headers(OWNER, TWIN, "PUT", path, flist_bytes)
        assert (await send(hub, "PUT", path, flist_bytes, headers))[0] == status
    junk = b"SQLite format 3\x00" + os.urandom(5000)
    path = f"/flists/{TWIN}/junk.fl"
    status, answer = await send(
        hub, "PUT", path, junk, sign_headers(OWNER, TWIN, "PUT", path, junk)
    )
    assert status == 400 and answer["error"].startswith("not a valid flist: "), answer
    assert list(flist_files(hub)) == [f"{TWIN}/at-{exact}.fl"]


class Clock:
    """The hub's clock, set by the test (only zos.hub.auth reads it)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_skew_and_nonce_memory_on_a_set_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock the test sets: a request exactly MAX_SKEW seconds off either way is
    taken, one second more is stale; a nonce is kept until its request would be stale
    and dropped by the next request after that (its memory is bounded)."""
    from zos.hub import auth

    clock = Clock(1_000_000.0)
    monkeypatch.setattr(auth, "time", clock)

    async def lookup(twin_id: int) -> bytes | None:
        return OWNER.public_key

    verifier = RequestVerifier(lookup)

    async def verify(signed_at: float) -> int:
        path = f"/flists/7/{signed_at}.fl"
        headers = sign_headers(OWNER, TWIN, "DELETE", path, b"", now=signed_at)
        return await verifier.verify("DELETE", path, headers)

    now = clock.now
    for offset in (-MAX_SKEW, MAX_SKEW):
        assert await verify(now + offset) == TWIN
    for offset in (-MAX_SKEW - 1, MAX_SKEW + 1):
        with pytest.raises(AuthError, match="stale"):
            await verify(now + offset)
    assert len(verifier._nonces) == 2
    await verify(now)  # the first (signed MAX_SKEW ago) is at the edge of staleness: kept
    assert len(verifier._nonces) == 3
    clock.now += 1
    await verify(clock.now)
    assert len(verifier._nonces) == 3  # the first went, the last came


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("hub did not listen")


@pytest.mark.nats
async def test_hub_serve_checks_twins_in_the_registry(
    nats_server: NatsServer, registry, bus_insider: Identity, tmp_path: Path
) -> None:
    from zos.bus import connect
    from zos.bus.subjects import REGISTRY_QUERY
    from zos.registry import RegistryClient
    from zos.registry.signing import RegistrySigner

    user = Identity.generate()
    client = await RegistryClient(nats_server.url, user, registry_key=registry.public_key).connect()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zos.cli", "hub", "serve", "--root", str(tmp_path / "hub"),
         "--listen", f"127.0.0.1:{port}", "--nats", nats_server.url,
         "--registry-key", registry.public_key.hex()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    insider = None
    try:
        twin = await client.register_twin()
        await asyncio.to_thread(_wait_port, port, proc)
        url = f"http://127.0.0.1:{port}"

        async def push(identity: Identity, twin_id: int, name: str) -> None:
            router = Router.parse([url], HubSigner(identity, twin_id))
            try:
                await pack(make_src(tmp_path / name), tmp_path / f"{name}.fl", router)
            finally:
                await router.close()

        await push(user, twin.id, "src")
        assert len([p for p in (tmp_path / "hub/blocks").rglob("*") if p.is_file()]) == 3
        # a key the registry does not know for that twin id
        with pytest.raises(StoreError, match="not registered"):
            await push(Identity.generate(), twin.id + 1000, "src2")
        # the hub connects with its own key, a twin of its own
        hub_key = load_key_file(tmp_path / "hub" / "hub-key.json")
        assert await client.twin_by_key(hub_key.public_key) is not None

        # The twin rotates its key: the hub forgets the old one on the signed event.
        new = Identity.generate()
        await client.rotate_key(new)
        with pytest.raises(StoreError, match="bad signature"):
            await push(user, twin.id, "src3")
        await push(new, twin.id, "src4")

        # The registry is gone; whoever controls the bus answers the hub's lookups with
        # a forged twin record: the hub refuses it (503), logs it, stores nothing.
        other = await RegistryClient(
            nats_server.url, Identity.generate(), registry_key=registry.public_key
        ).connect()
        victim = await other.register_twin()
        await other.close()
        await registry.stop()
        attacker = Identity.generate()
        forged = {"id": victim.id, "public_key": attacker.public_hex, "created": 1.0}
        body = json.dumps({"ok": True, "result": forged}).encode()
        insider = await connect(nats_server.url, bus_insider)

        async def answer(msg) -> None:  # type: ignore[no-untyped-def]
            nonce = json.loads(msg.data)["nonce"]
            await msg.respond(RegistrySigner(attacker).sign(f"answer/{nonce}", body))

        await insider.subscribe(REGISTRY_QUERY, answer)
        await insider.settle()
        before = {p.name for p in (tmp_path / "hub/blocks").rglob("*")}
        with pytest.raises(StoreError, match="503"):
            await push(attacker, victim.id, "src5")
        assert {p.name for p in (tmp_path / "hub/blocks").rglob("*")} == before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if insider is not None:
            await insider.close()
        await client.close()
    assert proc.stderr is not None
    assert "refused registry answer" in proc.stderr.read().decode()


async def _raw_put(hub: Hub, path: str, headers: dict[str, str], timeout: float = 10) -> str:
    """Send a PUT's headers (and not one byte of its body); the hub's answer line."""
    host, port = hub.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "\r\n").encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), timeout)).decode()
    finally:
        writer.close()


async def test_unauthenticated_bodies_are_never_read(hub: Hub) -> None:
    # Issue 12, finding 5: five concurrent 200 MiB PUTs with a bogus signature put ~1 GiB
    # of .part files on the hub's disk before the 403. The signature (over the body's hash,
    # sent as a header) and the declared size are checked before any body is read.
    size = 200 << 20
    body_hash = hashlib.blake2b(b"never sent", digest_size=32).hexdigest()
    bogus = sign_headers(Identity.generate(), TWIN, "PUT", "/flists/7/big.fl", b"never sent")
    bogus["Content-Length"] = str(size)
    answers = await asyncio.gather(
        *(_raw_put(hub, f"/flists/{TWIN}/big{i}.fl", bogus) for i in range(5))
    )
    assert all(" 403 " in a for a in answers), answers
    block = f"/{body_hash[:2]}/{body_hash}"
    headers = {**signed(Identity.generate(), TWIN, b"never sent"), "Content-Length": str(size)}
    assert " 413 " in await _raw_put(hub, block, headers)  # larger than any block
    chunked = {**signed(OWNER, TWIN, b"x"), "Transfer-Encoding": "chunked"}
    assert " 411 " in await _raw_put(hub, f"/flists/{TWIN}/x.fl", chunked)
    unsigned = {"X-Zos-Twin": str(TWIN), "Content-Length": str(size)}
    assert " 401 " in await _raw_put(hub, f"/flists/{TWIN}/x.fl", unsigned)
    assert [p for p in hub.root.rglob("*") if p.is_file()] == []


async def test_a_body_that_is_not_what_was_signed_is_dropped(hub: Hub) -> None:
    signed_for = os.urandom(4096)
    headers = sign_headers(OWNER, TWIN, "PUT", f"/flists/{TWIN}/a.fl", signed_for)
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"{hub.url}/flists/{TWIN}/a.fl", data=b"x" * len(signed_for), headers=headers) as r,
    ):
        assert r.status == 400 and "does not hash to its X-Zos-Content-Hash" in await r.text()
    assert [p for p in hub.root.rglob("*") if p.is_file()] == []


async def test_a_refused_flist_names_no_path_of_the_hub(hub: Hub, tmp_path: Path) -> None:
    # Issue 12, finding 11: the hub's 400 answers named its server-side paths (the
    # temporary .part file under its root).
    signer = HubSigner(OWNER, TWIN)
    for name, body in [
        ("junk.fl", b"SQLite format 3\x00" + os.urandom(5000)),
        ("text.fl", b"not a database at all"),
    ]:
        (tmp_path / name).write_bytes(body)
        with pytest.raises(StoreError) as e:
            await publish_flist(hub.url, signer, tmp_path / name)
        assert "400" in str(e.value) and f"not a valid flist: {name}:" in str(e.value)
        assert str(hub.root) not in str(e.value) and ".part" not in str(e.value)


async def test_a_delete_is_signed_over_no_body(hub: Hub, flist_bytes: bytes) -> None:
    """A DELETE whose signature covers the hash of some body (a signed upload's bytes,
    say) is refused as such, and removes nothing; signed over no body, it removes."""
    await published(hub, TWIN, "app.fl", OWNER, flist_bytes)
    path = f"/flists/{TWIN}/app.fl"
    with_body = sign_headers(OWNER, TWIN, "DELETE", path, flist_bytes)
    assert await send(hub, "DELETE", path, headers=with_body) == (
        400,
        {"error": f"a DELETE has no body: {HEADER_HASH} must be the empty hash"},
    )
    assert flist_files(hub) == {f"{TWIN}/app.fl": flist_bytes}
    own = sign_headers(OWNER, TWIN, "DELETE", path, b"")
    assert await send(hub, "DELETE", path, headers=own) == (200, {"deleted": "app.fl"})
