"""`BusClient`: send signed requests to twins and serve commands on one's own subject.

A twin serves on the subject `zos.twin.<id>`. A request is an `Envelope` from the caller
to that twin, published with a NATS inbox as reply subject; the response is itself a
signed envelope from the destination back to the caller (`reply_to` = the request id),
sealed when the request was sealed, so callers verify responses as servers verify
requests. The response payload is JSON: `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"code": ..., "message": ...}}`.

A request that fails the checks in `zos.bus.envelope` is answered with a signed (not
sealed) error, so the caller learns why. A server refuses requests that are not sealed
(`unsealed`), except for the commands it lists in `unsealed_commands` (none by default).
Handlers run concurrently, at most `max_concurrency` at a time; past that, requests are
answered `busy`.

The NATS connection proves the client's key and reconnects by itself
(`zos.bus.connection`); the subscription is restored with it. nats-server lets a twin
serve only its own subject, and only a registered node serve at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from zos.bus.connection import Connection, NatsHolder, Subscription
from zos.bus.envelope import DEFAULT_TTL, MAX_TTL, Envelope, ReplayCache
from zos.bus.errors import BusError
from zos.bus.keys import Keys
from zos.bus.resolver import KeyResolver
from zos.bus.router import Request, Router
from zos.bus.subjects import twin_subject
from zos.identity import Identity

log = logging.getLogger(__name__)


# Built once: json.dumps with arguments builds an encoder per call.
_to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _encode(value: Any) -> bytes:
    return _to_json(value).encode()


class BusClient(NatsHolder):
    def __init__(
        self,
        nats_conn: str | list[str] | Connection,
        identity: Identity,
        twin_id: int,
        resolver: KeyResolver,
        *,
        seal: bool = True,
        ttl: float = DEFAULT_TTL,
        max_concurrency: int = 256,
        replay_cache: ReplayCache | None = None,
        unsealed_commands: frozenset[str] = frozenset(),
    ) -> None:
        self._init_nats(nats_conn, identity)
        self._nats_name = f"zos-twin-{twin_id}"
        self.identity = identity
        self.keys = Keys(identity)
        self.twin_id = twin_id
        self.resolver = resolver
        self.seal = seal
        self.ttl = ttl
        self.max_concurrency = max_concurrency
        self.replay = replay_cache or ReplayCache()
        self.unsealed_commands = unsealed_commands
        self._sub: Subscription | None = None
        self._router: Router | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> BusClient:
        await self._open_nats()
        return self

    async def __aenter__(self) -> BusClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
            for t in list(self._tasks):
                t.cancel()
        await self._close_nats()

    # -- calling ---------------------------------------------------------------------

    async def _key_of(self, twin_id: int) -> bytes:
        key = await self.resolver(twin_id)
        if key is None:
            raise BusError("unknown_twin", f"twin {twin_id} is not known")
        return key

    async def request(
        self,
        dest_twin: int,
        command: str,
        payload: Any = None,
        *,
        timeout: float = 10.0,
        seal: bool | None = None,
    ) -> Any:
        """Send `command` to `dest_twin`; its result, or BusError (code `timeout` too)."""
        key = await self._key_of(dest_twin)
        sealed = self.seal if seal is None else seal
        data = b"" if payload is None else _encode(payload)
        ttl = min(MAX_TTL, max(self.ttl, timeout + 1.0))
        env = Envelope.create(
            self.keys,
            self.twin_id,
            dest_twin,
            command,
            data,
            seal_to=key if sealed else None,
            ttl=ttl,
        )
        try:
            msg = await self.conn.request(twin_subject(dest_twin), env.to_bytes(), timeout)
        except nats.errors.NoRespondersError:
            raise BusError("unreachable", f"twin {dest_twin} is not connected") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise BusError("timeout", f"no answer from twin {dest_twin} in {timeout}s") from None
        except nats.errors.ConnectionClosedError:
            raise BusError("unreachable", "the bus connection is closed") from None
        return self._read_response(msg.data, env, key)

    def _read_response(self, data: bytes, request: Envelope, key: bytes) -> Any:
        resp = Envelope.from_bytes(data)
        if resp.source != request.destination or resp.destination != request.source:
            raise BusError("malformed", "response is not from the twin asked or not for us")
        # Exactly this request's id: an empty reply_to is what a *request* from that twin
        # to us carries, and one must never be taken for the answer to ours.
        if resp.reply_to != request.id:
            raise BusError("malformed", "response answers another request")
        if not resp.verify(key):
            raise BusError("bad_signature", f"response signature of twin {resp.source} is bad")
        resp.check_time()
        body = resp.decode_payload(self.keys, key)
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            raise BusError("malformed", "response payload has no 'ok'")
        if not body["ok"]:
            raise BusError.from_dict(body.get("error"))
        return body.get("result")

    # -- serving ---------------------------------------------------------------------

    async def serve(self, router: Router) -> None:
        """Answer requests to this twin with `router` (returns once subscribed)."""
        if self._sub is not None:
            raise RuntimeError("this BusClient already serves a router")
        self._router = router
        self._sub = await self.conn.subscribe(twin_subject(self.twin_id), self._on_message)
        await self.conn.settle()

    async def _on_message(self, msg: Msg) -> None:
        if len(self._tasks) >= self.max_concurrency:
            # Addressed to the sender it names and bound to its id (not checked: a
            # `busy` says nothing), or the caller would refuse it as not for them.
            try:
                request: Envelope | None = Envelope.from_bytes(msg.data)
            except BusError:
                request = None
            await self._reply(msg, request, {"ok": False, "error": _busy.to_dict()}, None)
            return
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            env = Envelope.from_bytes(msg.data)
        except BusError as e:
            await self._reply(msg, None, {"ok": False, "error": e.to_dict()}, None)
            return
        key: bytes | None = None
        try:
            if env.destination != self.twin_id:
                raise BusError("malformed", f"envelope is for twin {env.destination}")
            env.check_time()
            key = await self.resolver(env.source)
            if key is None:
                raise BusError("unknown_twin", f"twin {env.source} is not known")
            if not env.verify(key):
                raise BusError("bad_signature", "envelope signature does not verify")
            if not env.sealed and env.command not in self.unsealed_commands:
                raise BusError("unsealed", f"{env.command} must be sealed to twin {self.twin_id}")
            self.replay.check_and_add(env.source, env.id, env.expiry)
            payload = env.decode_payload(self.keys, key)
        except BusError as e:
            await self._reply(msg, env, {"ok": False, "error": e.to_dict()}, None)
            return
        assert self._router is not None
        request = Request(
            source_twin=env.source, command=env.command, payload=payload, envelope=env
        )
        try:
            body = {"ok": True, "result": await self._router.dispatch(request)}
        except BusError as e:
            body = {"ok": False, "error": e.to_dict()}
        await self._reply(msg, env, body, key if env.sealed else None)

    async def _reply(
        self, msg: Msg, request: Envelope | None, body: dict[str, Any], seal_to: bytes | None
    ) -> None:
        if not msg.reply:
            return
        try:
            data = _encode(body)
        except (TypeError, ValueError):
            log.error("result of %s is not JSON-able", request.command if request else "?")
            data = _encode({"ok": False, "error": _not_json.to_dict()})
        try:
            reply = Envelope.create(
                self.keys,
                self.twin_id,
                request.source if request else 0,
                request.command if request else "error",
                data,
                seal_to=seal_to,
                reply_to=request.id if request else "",
            )
        except BusError as e:  # a result too large to send
            reply = Envelope.create(
                self.keys,
                self.twin_id,
                request.source if request else 0,
                request.command if request else "error",
                _encode({"ok": False, "error": e.to_dict()}),
                reply_to=request.id if request else "",
            )
        with contextlib.suppress(Exception):
            await msg.respond(reply.to_bytes())


_busy = BusError("busy", "too many requests in progress; try again later")
_not_json = BusError("internal", "handler result is not JSON")
