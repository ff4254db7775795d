"""`zos.bus.connection` on a real nats-server with the registry's auth callout: who gets
in, with which role, and how a connection comes back with a new role or a new client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket

import nats
import nats.errors
import pytest

from hangguard import HANG_GUARD
from zos.bus import BusError, connect
from zos.bus.subjects import REGISTRY_QUERY, inbox_prefix, register_subject
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.identity.nkey import public_nkey
from zos.registry import RegistryClient, RegistryService

pytestmark = pytest.mark.nats


def raw_connect(server: NatsServer, sign: object) -> str:
    """Speak the NATS protocol by hand: CONNECT with `sign(nonce) -> dict` of credentials;
    nats-server's first answer after the PING (PONG: let in)."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        f = s.makefile("rwb")
        info = json.loads(f.readline()[5:])
        creds = sign(info.get("nonce", ""))  # type: ignore[operator]
        opts = {"verbose": False, "pedantic": False, "protocol": 1, "lang": "test", **creds}
        f.write(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        f.flush()
        while True:
            line = f.readline().decode().strip()
            if line != "PING":  # nats-server's own first ping may come before
                return line


async def test_only_a_key_that_signs_the_nonce_gets_in(
    nats_server: NatsServer, registry: RegistryService, enroll
) -> None:
    victim = await enroll()
    nkey = public_nkey(victim.identity.public_key)

    def b64(sig: bytes) -> str:
        return base64.b64encode(sig).decode()

    def no_key(nonce: str) -> dict:
        return {}

    def other_key(nonce: str) -> dict:  # the victim's NKey, signed by someone else
        return {"nkey": nkey, "sig": b64(Identity.generate().sign(nonce.encode()))}

    def other_nonce(nonce: str) -> dict:  # a signature of the victim's, for another nonce
        return {"nkey": nkey, "sig": b64(victim.identity.sign(b"another nonce"))}

    def no_signature(nonce: str) -> dict:
        return {"nkey": nkey}

    def own_key(nonce: str) -> dict:
        return {"nkey": nkey, "sig": b64(victim.identity.sign(nonce.encode()))}

    for sign in (no_key, other_key, other_nonce, no_signature):
        answer = await asyncio.to_thread(raw_connect, nats_server, sign)
        assert answer == "-ERR 'Authorization Violation'", sign
    assert await asyncio.to_thread(raw_connect, nats_server, own_key) == "PONG"
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=5)


async def test_an_unregistered_key_may_only_register(
    nats_server: NatsServer, registry: RegistryService
) -> None:
    identity = Identity.generate()
    conn = await connect(nats_server.url, identity)
    try:
        assert conn.inbox == inbox_prefix(identity.public_key)
        # Refused by nats-server at once (not a timeout), and logged.
        with pytest.raises(BusError) as e:
            await conn.request(REGISTRY_QUERY, b"{}", timeout=60)
        assert e.value.code == "not_permitted" and conn.refused(REGISTRY_QUERY)
        with pytest.raises(BusError) as e:
            await conn.request(register_subject(Identity.generate().public_key), b"{}", 60)
        assert e.value.code == "not_permitted"
        # Its own registration subject is open; once registered, `renew` brings the role.
        client = RegistryClient(conn, identity, registry_key=registry.public_key)
        twin = await client.register_twin()
        assert (await client.get_twin(twin.id)).public_key == identity.public_hex
    finally:
        await conn.close()


async def test_a_request_cancelled_by_its_caller_stays_cancelled(
    nats_server: NatsServer, registry: RegistryService
) -> None:
    """A refusal cancels the request's own task: a cancel from outside must not be taken
    for one, nor a refusal for an outside cancel."""
    conn = await connect(nats_server.url, Identity.generate())
    try:
        asking = asyncio.create_task(conn.request(REGISTRY_QUERY, b"{}", timeout=60))
        await asyncio.sleep(0)  # sent; nats-server's refusal cannot be back yet
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        # The refusal still comes, and is given to the next request, not left pending.
        with pytest.raises(BusError) as e:
            await conn.request(REGISTRY_QUERY, b"{}", timeout=60)
        assert e.value.code == "not_permitted"
        assert not conn._waiting
        await asyncio.sleep(0.05)  # nothing is cancelled late
    finally:
        await conn.close()


async def test_a_refusal_does_not_hide_a_cancel_from_outside(
    nats_server: NatsServer, registry: RegistryService
) -> None:
    """Both at once: the refusal and a cancel from outside in the same turn of the loop.
    The caller asked to stop, so the request is cancelled, not answered `not_permitted`."""
    conn = await connect(nats_server.url, Identity.generate())
    try:
        asking = asyncio.create_task(conn.request(REGISTRY_QUERY, b"{}", timeout=60))
        told = conn.nc._error_cb  # nats-py's error callback: ours, which refuses

        async def told_then_cancelled(e: Exception) -> None:
            await told(e)
            asking.cancel()

        conn.nc._error_cb = told_then_cancelled
        with pytest.raises(asyncio.CancelledError):
            await asking
        assert conn.refused(REGISTRY_QUERY)  # the refusal did come
    finally:
        await conn.close()


async def test_a_closed_nats_client_is_replaced_with_its_subscriptions(
    nats_server: NatsServer, enroll
) -> None:
    """nats-py gives up on some refusals for good; the connection opens a new client."""
    member = await enroll(node=True)
    conn = member.conn
    heard = asyncio.Queue()

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        await heard.put(msg.data)

    subject = f"zos.twin.{member.twin_id}"
    await conn.subscribe(subject, on_msg)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    conn.on_reconnect(on_reconnect)
    old = conn.nc
    await old.close()  # as nats-py does itself after such a refusal
    await asyncio.wait_for(reconnected.wait(), 30)
    assert conn.nc is not old and conn.nc.is_connected
    other = await connect(nats_server.url, member.identity)
    try:
        await conn.settle()
        await other.publish(subject, b"still here")
        assert await asyncio.wait_for(heard.get(), 10) == b"still here"
    finally:
        await other.close()


async def test_closing_gives_up_on_a_server_that_stopped_reading(
    nats_server: NatsServer, bus_insider: Identity
) -> None:
    """nats-py's close flushes what is pending and waits for it for ever: a server that
    no longer reads (stopped here) must not hang a shutdown."""
    conn = await connect(nats_server.url, bus_insider)
    assert nats_server.proc is not None
    os.kill(nats_server.proc.pid, signal.SIGSTOP)
    pump = None
    try:

        async def publish() -> None:
            for _ in range(64):  # more than the sockets hold: the flush cannot finish
                await conn.nc.publish("zos.test.stuck", b"x" * (1 << 20))

        pump = asyncio.ensure_future(publish())
        await asyncio.wait([pump], timeout=2)  # (as far as it gets)
        await asyncio.wait_for(conn.close(), HANG_GUARD)
    finally:
        os.kill(nats_server.proc.pid, signal.SIGCONT)
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
