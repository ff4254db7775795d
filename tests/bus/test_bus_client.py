"""Request/response between twins over a real nats-server (authorization on: Alice is a
registered twin, Bob a registered node, each connected with its own key)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.msg import Msg

from zos.bus import (
    BusClient,
    BusError,
    Envelope,
    Keys,
    Request,
    Router,
    StaticResolver,
    connect,
    twin_subject,
)
from zos.bus.connection import Connection
from zos.grid.natsserver import NatsServer
from zos.identity import Identity

pytestmark = pytest.mark.nats

ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()
KEYS = StaticResolver({1: ALICE.public_key, 2: BOB.public_key})  # as enrolled below
A, B, M = Keys(ALICE), Keys(BOB), Keys(MALLORY)


def router() -> Router:
    r = Router()

    @r.command("echo")
    async def echo(req: Request) -> object:
        return {"from": req.source_twin, "payload": req.payload, "sealed": req.envelope.sealed}

    @r.command("refuse")
    async def refuse(req: Request) -> object:
        raise BusError("forbidden", "not for you")

    @r.command("crash")
    async def crash(req: Request) -> object:
        raise RuntimeError("secret detail")

    @r.command("slow")
    async def slow(req: Request) -> object:
        await asyncio.sleep(2)
        return "late"

    @r.command("odd")
    async def odd(req: Request) -> object:
        return {1, 2}  # not JSON

    @r.command("huge")
    async def huge(req: Request) -> object:
        return "x" * (2 << 20)  # over what one envelope carries

    return r


@pytest.fixture
async def pair(enroll) -> AsyncIterator[tuple[BusClient, BusClient]]:
    a = await enroll(ALICE)  # twin 1
    b = await enroll(BOB, node=True)  # twin 2 (its farmer is twin 3)
    assert (a.twin_id, b.twin_id) == (1, 2)
    alice = await BusClient(a.conn, ALICE, 1, KEYS).connect()
    bob = await BusClient(b.conn, BOB, 2, KEYS).connect()
    await bob.serve(router())
    await b.conn.settle()  # bob's subscription is in place before alice asks
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


async def test_request_response_sealed_and_unsealed_refused(
    pair: tuple[BusClient, BusClient],
) -> None:
    alice, bob = pair
    assert await alice.request(2, "echo", {"a": [1, 2]}) == {
        "from": 1,
        "payload": {"a": [1, 2]},
        "sealed": True,
    }
    with pytest.raises(BusError) as e:
        await alice.request(2, "echo", "hi", seal=False)
    assert e.value.code == "unsealed"
    bob.unsealed_commands = frozenset({"echo"})  # a server may list what travels unsealed
    plain = await alice.request(2, "echo", "hi", seal=False)
    assert plain == {"from": 1, "payload": "hi", "sealed": False}


async def test_structured_errors(pair: tuple[BusClient, BusClient]) -> None:
    alice, _ = pair
    cases = {
        "refuse": "forbidden",
        "crash": "internal",
        "odd": "internal",
        "huge": "too_large",
        "nope": "not_found",
    }
    for command, code in cases.items():
        with pytest.raises(BusError) as e:
            await alice.request(2, command, {})
        assert e.value.code == code
    with pytest.raises(BusError) as e:
        await alice.request(2, "crash")
    assert "secret" not in e.value.message
    with pytest.raises(BusError) as e:
        await alice.request(2, "slow", timeout=0.3)
    assert e.value.code == "timeout"
    with pytest.raises(BusError) as e:
        await alice.request(9, "echo")
    assert e.value.code == "unknown_twin"
    with pytest.raises(BusError) as e:
        await BusClient(alice.conn, BOB, 2, KEYS).request(1, "echo")  # alice serves nothing
    assert e.value.code == "unreachable"


async def raw_request(nc: nats.NATS, data: bytes) -> dict[str, object]:
    """Send raw bytes to twin 2 and read the (signed) answer."""
    msg = await nc.request(twin_subject(2), data, timeout=5)
    reply = Envelope.from_bytes(msg.data)
    assert reply.source == 2 and reply.verify(BOB.public_key)
    body = json.loads(reply.open(A, BOB.public_key))
    return body


async def test_refusals_reach_the_caller(pair: tuple[BusClient, BusClient]) -> None:
    alice, _ = pair
    nc = alice.nc

    async def code_of(env_or_bytes: Envelope | bytes) -> str:
        data = env_or_bytes.to_bytes() if isinstance(env_or_bytes, Envelope) else env_or_bytes
        body = await raw_request(nc, data)
        assert body["ok"] is False
        return body["error"]["code"]  # type: ignore[index]

    good = Envelope.create(A, 1, 2, "echo", b'"x"', seal_to=BOB.public_key)
    assert (await raw_request(nc, good.to_bytes()))["ok"] is True
    assert await code_of(good) == "replayed"

    forged = Envelope.create(M, 1, 2, "echo", b'"x"')
    assert await code_of(forged) == "bad_signature"
    tampered = Envelope.create(A, 1, 2, "echo", b'"x"')
    tampered.command = "refuse"
    assert await code_of(tampered) == "bad_signature"
    stranger = Envelope.create(M, 7, 2, "echo", b'"x"')
    assert await code_of(stranger) == "unknown_twin"
    old = Envelope.create(A, 1, 2, "echo", b'"x"')
    old.timestamp -= 600_000
    old.expiry -= 600_000
    old.signature = ALICE.sign(old.signing_bytes())
    assert await code_of(old) == "expired"
    future = Envelope.create(A, 1, 2, "echo", b'"x"')
    future.timestamp += 120_000
    future.expiry += 120_000
    future.signature = ALICE.sign(future.signing_bytes())
    assert await code_of(future) == "expired"
    assert await code_of(b"{not json") == "malformed"
    assert await code_of(b"x" * (3 << 20)) == "too_large"
    sealed_to_other = Envelope.create(A, 1, 2, "echo", b'"x"', seal_to=ALICE.public_key)
    assert await code_of(sealed_to_other) == "malformed"
    not_json = Envelope.create(A, 1, 2, "echo", b"\xff\xfe", seal_to=BOB.public_key)
    assert await code_of(not_json) == "malformed"
    unsealed = Envelope.create(A, 1, 2, "echo", b'"x"')
    assert await code_of(unsealed) == "unsealed"
    # Mallory's box to Bob, carried in an envelope Alice signed: it opens only as Mallory's.
    copied = Envelope.create(A, 1, 2, "echo", b"")
    copied.payload, copied.sealed = M.seal(2, BOB.public_key, b'"x"'), True
    copied.signature = ALICE.sign(copied.signing_bytes())
    assert await code_of(copied) == "malformed"


async def test_nobody_else_serves_a_twin(pair: tuple[BusClient, BusClient], enroll) -> None:
    """nats-server lets only twin 2's own node serve `zos.twin.2`."""
    m = await enroll(MALLORY)
    impostor = BusClient(m.conn, MALLORY, 2, KEYS)
    await impostor.serve(router())
    await m.conn.settle()
    assert m.conn.refused(twin_subject(2), "subscription")
    await impostor.close()


async def test_forged_response_is_refused(
    nats_server: NatsServer, bus_insider: Identity, enroll
) -> None:
    """A party that controls the bus itself can answer for twin 2, but not with twin 2's
    key: the caller refuses the answer."""
    a = await enroll(ALICE)
    insider = await connect(nats_server.url, bus_insider)
    impostor = BusClient(insider, MALLORY, 2, KEYS)
    await impostor.serve(router())
    await insider.settle()
    alice = BusClient(a.conn, ALICE, 1, KEYS)
    try:
        with pytest.raises(BusError) as e:
            await alice.request(2, "echo", 1)
        assert e.value.code == "bad_signature"
    finally:
        await impostor.close()
        await insider.close()


async def test_envelope_for_another_twin_is_refused(pair: tuple[BusClient, BusClient]) -> None:
    """An envelope Alice signed for twin 3, published on Bob's subject (a relay that
    re-routes it, or a replay): Bob is not its destination and runs nothing. Sealed to
    Bob's key, so that neither the seal nor the unsealed rule is what stops it."""
    alice, _ = pair
    for_carol = Envelope.create(A, 1, 3, "echo", b'"for twin 3"', seal_to=BOB.public_key)
    body = await raw_request(alice.nc, for_carol.to_bytes())
    assert body["ok"] is False
    assert body["error"] == {"code": "malformed", "message": "envelope is for twin 3"}


@pytest.fixture
async def insider(nats_server: NatsServer, bus_insider: Identity) -> AsyncIterator[Connection]:
    """A connection of a party that controls the bus itself: it may serve any subject."""
    conn = await connect(nats_server.url, bus_insider)
    try:
        yield conn
    finally:
        await conn.close()


async def serve_canned(conn: Connection, answers: list[bytes]) -> None:
    """Answer every request on twin 2's subject with the next of `answers`: a party that
    controls the bus (`conn` is an insider's) standing in for twin 2, with nothing but
    what it recorded."""

    async def answer(msg: Msg) -> None:
        await msg.respond(answers.pop(0))

    await conn.subscribe(twin_subject(2), answer)
    await conn.settle()


async def test_response_to_another_request_is_refused(
    pair: tuple[BusClient, BusClient], nats_server: NatsServer, bus_insider: Identity
) -> None:
    """Bob's genuine, signed and sealed answer to one request, replayed as the answer to
    a later one: the client takes only an answer bound to its own request's id."""
    alice, bob = pair
    first = Envelope.create(A, 1, 2, "echo", b'"first"', seal_to=BOB.public_key)
    recorded = (await alice.nc.request(twin_subject(2), first.to_bytes(), timeout=5)).data
    assert Envelope.from_bytes(recorded).reply_to == first.id
    await bob.close()  # Bob goes away; the recorder answers in his place
    insider = await connect(nats_server.url, bus_insider)
    try:
        await serve_canned(insider, [recorded])
        with pytest.raises(BusError) as e:
            await alice.request(2, "echo", "second")
        assert e.value.code == "malformed" and "another request" in e.value.message
    finally:
        await insider.close()


async def test_request_is_not_taken_as_a_response(
    nats_server: NatsServer, bus_insider: Identity, enroll
) -> None:
    """A request Bob signed and sealed to Alice (reply_to empty) is not an answer to
    Alice's request to Bob, even when its payload looks like one."""
    alice = BusClient((await enroll(ALICE)).conn, ALICE, 1, KEYS)
    insider = await connect(nats_server.url, bus_insider)
    try:
        lookalike = Envelope.create(
            B, 2, 1, "echo", b'{"ok":true,"result":"forged"}', seal_to=ALICE.public_key
        )
        await serve_canned(insider, [lookalike.to_bytes()])
        with pytest.raises(BusError) as e:
            await alice.request(2, "echo", "hi")
        assert e.value.code == "malformed" and "another request" in e.value.message
    finally:
        await insider.close()


async def serve_crafted(conn: Connection, answer: Callable[[Envelope], Envelope | bytes]) -> None:
    """Answer each request on twin 2's subject with what `answer` makes of it (a party
    that controls the bus, `conn` an insider's, or a broken twin 2: holding Bob's key
    where it signs)."""

    async def respond(msg: Msg) -> None:
        reply = answer(Envelope.from_bytes(msg.data))
        await msg.respond(reply if isinstance(reply, bytes) else reply.to_bytes())

    await conn.subscribe(twin_subject(2), respond)
    await conn.settle()


def signed_by_bob(request: Envelope, body: bytes, **changes: object) -> Envelope:
    """Bob's signed answer to `request`, with some fields changed before signing."""
    env = Envelope.create(B, 2, request.source, request.command, body, reply_to=request.id)
    env = env.model_copy(update=changes)
    env.signature = BOB.sign(env.signing_bytes())
    return env


OK_BODY = b'{"ok":true,"result":"forged"}'
EXPIRED = {"timestamp": 1_600_000_000_000, "expiry": 1_600_000_060_000}


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        # Bob's answer to Mallory (twin 3), who made Bob answer a request with the id of
        # Alice's: signed by Bob, bound to the id, but not for Alice.
        (lambda r: signed_by_bob(r, OK_BODY, destination=3), "malformed", "not for us"),
        (lambda r: signed_by_bob(r, OK_BODY, **EXPIRED), "expired", "expired"),
        (lambda r: signed_by_bob(r, b'{"result":"no ok"}'), "malformed", "no 'ok'"),
        (lambda r: signed_by_bob(r, b"[1]"), "malformed", "no 'ok'"),
        (lambda r: signed_by_bob(r, b'{"ok":"yes"}'), "malformed", "no 'ok'"),
        (lambda r: b"{not json", "malformed", "envelope"),
    ],
    ids=["for another twin", "expired", "no ok", "not an object", "ok not a bool", "garbage"],
)
async def test_bad_responses_are_refused(
    insider: Connection,
    enroll,
    answer: Callable[[Envelope], Envelope | bytes],
    code: str,
    words: str,
) -> None:
    alice = BusClient((await enroll(ALICE)).conn, ALICE, 1, KEYS)
    await serve_crafted(insider, answer)
    with pytest.raises(BusError) as e:
        await alice.request(2, "echo", "hi")
    assert e.value.code == code and words in e.value.message, e.value


async def test_a_request_outlives_its_own_timeout(insider: Connection, enroll) -> None:
    """The envelope's expiry covers the whole wait (timeout + 1 s), even when the
    client's default ttl is shorter, so a slow answer is not refused as expired."""
    seen: list[Envelope] = []

    def answer(request: Envelope) -> Envelope:
        seen.append(request)
        return signed_by_bob(request, b'{"ok":true,"result":1}')

    alice = BusClient((await enroll(ALICE)).conn, ALICE, 1, KEYS, ttl=1)
    await serve_crafted(insider, answer)
    assert await alice.request(2, "echo", timeout=20) == 1
    assert seen[0].expiry - seen[0].timestamp == 21_000


async def test_requests_past_the_concurrency_bound_are_answered_busy(enroll) -> None:
    """Bob runs at most two handlers at once; a third request meanwhile is answered
    `busy` (to its sender, bound to it), and once one ends there is room again."""
    running, release = asyncio.Queue[None](), asyncio.Event()
    r = Router()

    @r.command("hold")
    async def hold(req: Request) -> object:
        await running.put(None)
        await release.wait()
        return "done"

    alice = BusClient((await enroll(ALICE)).conn, ALICE, 1, KEYS)
    bob = BusClient((await enroll(BOB, node=True)).conn, BOB, 2, KEYS, max_concurrency=2)
    await bob.serve(r)
    try:
        held = [asyncio.create_task(alice.request(2, "hold")) for _ in range(2)]
        for _ in held:
            await running.get()
        with pytest.raises(BusError) as e:
            await alice.request(2, "hold")
        assert e.value.code == "busy"
        # even bytes that are no envelope get an answer (from Bob, for nobody)
        reply = Envelope.from_bytes((await alice.nc.request(twin_subject(2), b"{", timeout=5)).data)
        assert reply.source == 2 and reply.verify(BOB.public_key)
        assert json.loads(reply.payload)["error"]["code"] == "busy"
        release.set()
        assert await asyncio.gather(*held) == ["done", "done"]
        assert await alice.request(2, "hold") == "done"
    finally:
        release.set()
        await alice.close()
        await bob.close()


@pytest.mark.parametrize("box_between", ["bob and mallory", "mallory and alice"])
async def test_a_response_sealed_between_other_twins_is_refused(enroll, box_between: str) -> None:
    """Twin 2 answers Alice, signed by its own key and for her request, but with a payload
    sealed to another peer, or by a key other than the response's source: refused."""
    a, b = await enroll(ALICE), await enroll(BOB, node=True)
    bob_keys = Keys(BOB)

    async def answer(msg: nats.aio.msg.Msg) -> None:
        request = Envelope.from_bytes(msg.data)
        body = b'{"ok":true,"result":"leaked"}'
        if box_between == "bob and mallory":
            sealed = bob_keys.seal(3, MALLORY.public_key, body)
        else:
            sealed = M.seal(1, ALICE.public_key, body)
        reply = Envelope.create(bob_keys, 2, 1, request.command, b"", reply_to=request.id)
        reply.payload, reply.sealed = sealed, True
        reply.signature = BOB.sign(reply.signing_bytes())
        await msg.respond(reply.to_bytes())

    await b.conn.subscribe(twin_subject(2), answer)
    await b.conn.settle()
    alice = BusClient(a.conn, ALICE, 1, KEYS)
    with pytest.raises(BusError) as e:
        await alice.request(2, "echo", 1)
    assert e.value.code == "malformed" and "cannot be opened" in e.value.message


async def test_a_rotated_twin_key_replaces_its_cached_box_key(enroll) -> None:
    """Bob caches the box key he shares with Alice's key; once the resolver gives Alice's
    new key (issue 11's rotation), that entry is dropped: what is sealed with the old key
    no longer opens, even in an envelope the new key signed, and the new key works."""
    a, b = await enroll(ALICE), await enroll(BOB, node=True)
    keys = StaticResolver(KEYS.keys)
    bob = BusClient(b.conn, BOB, 2, keys)
    await bob.serve(router())
    await b.conn.settle()
    old_alice = BusClient(a.conn, ALICE, 1, keys)
    new_key = Identity.generate()
    new_alice = BusClient(a.conn, new_key, 1, keys)
    try:
        assert (await old_alice.request(2, "echo", 1))["payload"] == 1
        assert bob.keys.cached_peer_key(1) == ALICE.public_key
        keys.keys[1] = new_key.public_key  # what the registry's key change event leads to
        with pytest.raises(BusError) as e:
            await old_alice.request(2, "echo", 2)
        assert e.value.code == "bad_signature"
        # Signed by the new key, sealed with the old one's box key: does not open.
        stale = Envelope.create(new_alice.keys, 1, 2, "echo", b"")
        stale.payload, stale.sealed = A.seal(2, BOB.public_key, b"3"), True
        stale.signature = new_key.sign(stale.signing_bytes())
        msg = await a.conn.request(twin_subject(2), stale.to_bytes(), 5)
        with pytest.raises(BusError) as e:
            new_alice._read_response(msg.data, stale, BOB.public_key)
        assert e.value.code == "malformed" and "cannot be opened" in e.value.message
        assert bob.keys.cached_peer_key(1) == new_key.public_key
        assert (await new_alice.request(2, "echo", 4))["payload"] == 4
    finally:
        await bob.close()


async def test_concurrent_requests(pair: tuple[BusClient, BusClient]) -> None:
    alice, _ = pair
    results = await asyncio.gather(*(alice.request(2, "echo", i) for i in range(200)))
    assert [r["payload"] for r in results] == list(range(200))


async def test_reconnects_after_server_restart(
    nats_server: NatsServer, pair: tuple[BusClient, BusClient]
) -> None:
    alice, _ = pair
    assert (await alice.request(2, "echo", 1))["payload"] == 1
    nats_server.kill()
    with pytest.raises(BusError):
        await alice.request(2, "echo", 2, timeout=0.5)
    nats_server.start()  # same port
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            assert (await alice.request(2, "echo", 3, timeout=1))["payload"] == 3
            break
        except BusError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_deeply_nested_json_is_malformed_not_a_crash(
    pair: tuple[BusClient, BusClient],
) -> None:
    # Issue 12, finding 9: 200,000 nested arrays raised an unhandled RecursionError in the
    # serving client's handler: no reply, the caller timed out. Answered `malformed` now.
    alice, _ = pair
    deep = b"[" * 200_000 + b"]" * 200_000
    env = Envelope.create(alice.keys, 1, 2, "echo", deep, seal_to=BOB.public_key)
    msg = await alice.nc.request(twin_subject(2), env.to_bytes(), timeout=5)
    with pytest.raises(BusError) as e:
        alice._read_response(msg.data, env, BOB.public_key)
    assert e.value.code == "malformed" and "nests more than 64 levels deep" in e.value.message
    # 60 levels still parse (the answer wraps them in 3 more); brackets in strings do not nest
    nested: object = "[{[{"
    for _ in range(60):
        nested = [nested]
    assert (await alice.request(2, "echo", nested))["payload"] == nested
