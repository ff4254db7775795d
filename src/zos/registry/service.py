"""The registry service: checks signed transactions and answers queries over NATS.

It is stateless: everything is in JetStream (see `store`), so any number of copies may
run at once; they share the registry's subjects (`zos.bus.subjects`) and nats-server's
auth callout as the queue group `zos-registry`, and NATS gives each request to one of
them. Every copy holds the registry's key: it signs every answer (bound to the request's
nonce), every value it writes, every event it stores and pushes, and the users it lets
onto the bus (`callout`, permissions by role in `roles`).

A transaction is checked in this order, and the first failure is the answer: its size
and shape (too_large, malformed), its timestamp (expired), its signer (unknown_twin:
the twin must exist, except for `register_twin` which is signed by the key it
registers), its signature (bad_signature), its body (invalid, naming the field), its id
(replayed: ids are recorded in a KV bucket with a TTL), then the rules of its kind
(not_found, forbidden, conflict, unavailable). Only then is it written. Registrations
are limited per key (busy past REGISTER_BURST at once, then one every REGISTER_EVERY
seconds).

Needs nats-server 2.10 or newer when replicated: older servers may accept two
compare-and-set writes on a clustered stream at once (nats-server#4320).

The rules of each kind, and the queries, are in one module per object
(`zos.registry.objects`: twins, farms, nodes, contracts, node contracts, name
contracts); the service takes its dispatch tables from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import nats.js.errors
from nats.aio.msg import Msg
from pydantic import ValidationError

from zos.bus.connection import Connection, NatsHolder, Subscription
from zos.bus.errors import BusError, describe_error
from zos.bus.subjects import (
    AUTH_CALLOUT,
    REGISTER_PREFIX,
    REGISTRY_QUERY,
    REGISTRY_QUEUE,
    REGISTRY_TX,
    last_token,
)
from zos.identity import Identity
from zos.registry.callout import AuthCallout
from zos.registry.index import NodeIndex
from zos.registry.models import DOWN_AFTER
from zos.registry.objects import ON_CANCEL, QUERIES, TRANSACTIONS, base, nodes, twins
from zos.registry.roles import Role
from zos.registry.signing import RegistrySigner
from zos.registry.store import AUDIT_PREFIX, TRANSIENT, Mirror, Store
from zos.registry.tx import NONCE, Transaction, fail, ok, parse_request

log = logging.getLogger(__name__)

REGISTER_BURST = 10  # registrations a key may send at once
REGISTER_EVERY = 6.0  # seconds to earn one more
ADMIN_TIMEOUT = 30.0  # seconds for a consumer or stream to be made (a big grid's buckets take long)
# The kinds sent on a subject of their own rather than the transaction subject.
OWN_SUBJECT = {rule.route: kind for kind, rule in TRANSACTIONS.items() if rule.route != "tx"}


Handle = Callable[[str, dict[str, Any]], Awaitable[Any]]


class KeyRateLimit:
    """A token bucket per key (the key in the registration subject, which nats-server
    lets only that key publish to), for the most recently seen `max_keys` keys."""

    def __init__(self, burst: int, every: float, max_keys: int = 100_000) -> None:
        self.burst, self.every, self.max_keys = burst, every, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.every)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed


def _nonce_of(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    return value if isinstance(value, str) and re.fullmatch(NONCE, value) else ""


class RegistryService(NatsHolder):
    _nats_name = "zos-registry"

    def __init__(
        self,
        nats_conn: str | list[str] | Connection,
        identity: Identity,
        *,
        replicas: int = 1,
        down_after: float = DOWN_AFTER,
        max_concurrency: int = 256,
        setup_timeout: float = 60.0,
    ) -> None:
        self.setup_timeout = setup_timeout
        self._init_nats(nats_conn, identity)
        self.signer = RegistrySigner(identity)
        self.callout = AuthCallout(self.signer, self.role_of)
        self.replicas = replicas
        self.down_after = down_after
        self.max_concurrency = max_concurrency
        self.register_limit = KeyRateLimit(REGISTER_BURST, REGISTER_EVERY)
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    # -- life ------------------------------------------------------------------------

    async def start(self) -> RegistryService:
        conn = await self._open_nats()
        nc = conn.nc
        version = nc.connected_server_version
        if self.replicas > 1 and (version.major, version.minor) < (2, 10):
            # nats-server#4320: older clustered streams accept concurrent compare-and-set
            # writes with the same expected revision (seen here: duplicate ids).
            await self._close_nats()
            raise BusError(
                "unavailable",
                f"nats-server {version.major}.{version.minor}.{version.patch} cannot keep a "
                "replicated registry consistent; use 2.10 or newer",
            )
        self.store = Store(
            nc.jetstream(timeout=2.0),
            self.signer,
            replicas=self.replicas,
            admin_js=nc.jetstream(timeout=ADMIN_TIMEOUT),
        )
        await self._setup_store()
        self.farms = Mirror(self.store, "farms", base.FARM)
        self.nodes = Mirror(self.store, "nodes", base.NODE)
        self.contracts = Mirror(self.store, "contracts", base.CONTRACT)
        self.index = NodeIndex(self.store, self.nodes, self.down_after)
        self.context = base.Context(
            self.store,
            self.signer,
            conn,
            self.down_after,
            self.farms,
            self.nodes,
            self.contracts,
            self.index,
            ON_CANCEL,
        )
        # First, so that connections are let in while the mirrors fill.
        self._subs.append(await conn.subscribe(AUTH_CALLOUT, self._on_callout, REGISTRY_QUEUE))
        for mirror in (self.farms, self.nodes, self.contracts):
            await mirror.start()
        await self.index.start()
        # A transaction's id is its nonce; a query carries one.
        routes: list[tuple[str, Handle, str]] = [
            (REGISTRY_TX, self.handle_tx, "id"),
            (REGISTRY_QUERY, self.handle_query, "nonce"),
            (f"{REGISTER_PREFIX}*", self.handle_register, "id"),
        ]
        for subject, handle, nonce_field in routes:
            on_message = self._dispatcher(handle, nonce_field)
            self._subs.append(await conn.subscribe(subject, on_message, REGISTRY_QUEUE))
        await conn.settle()
        return self

    async def _setup_store(self) -> None:
        # A cluster that has just started elects its JetStream leaders for a few seconds.
        deadline = time.monotonic() + self.setup_timeout
        while True:
            try:
                await self.store.setup()
                return
            except (*TRANSIENT, nats.js.errors.APIError) as e:
                if time.monotonic() > deadline:
                    raise
                log.info("JetStream not ready (%s); retrying", e)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if hasattr(self, "index"):
            await self.index.stop()
        for mirror in (
            getattr(self, "farms", None),
            getattr(self, "nodes", None),
            getattr(self, "contracts", None),
        ):
            if mirror is not None:
                await mirror.stop()
        await self._close_nats()

    async def __aenter__(self) -> RegistryService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- dispatch --------------------------------------------------------------------

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatcher(self, handle: Handle, nonce_field: str) -> Callable[[Msg], Awaitable[None]]:
        """Answer each request on a subject with `handle`, signed for the request's nonce
        (its `nonce_field`)."""

        async def on_message(msg: Msg) -> None:
            busy = len(self._tasks) >= self.max_concurrency
            if busy and not msg.reply:
                return
            self._track(asyncio.create_task(self._answer(msg, handle, nonce_field, busy)))

        return on_message

    async def _answer(self, msg: Msg, handle: Handle, nonce_field: str, busy: bool) -> None:
        nonce = ""
        try:
            body = parse_request(msg.data, "request")
            nonce = _nonce_of(body, nonce_field)
            if busy:
                raise BusError("busy", "registry is busy; try again")
            answer = ok(await handle(msg.subject, body))
        except BusError as e:
            answer = fail(e)
        except TRANSIENT as e:
            log.warning("registry storage not answering: %s", e)
            answer = fail(BusError("unavailable", "registry storage is not answering; retry"))
        except Exception:
            log.exception("registry request failed")
            answer = fail(BusError("internal", "internal registry error"))
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(self.signer.sign(f"answer/{nonce}", answer))

    async def _on_callout(self, msg: Msg) -> None:
        async def run() -> None:
            answer = await self.callout.answer(msg.data)
            if msg.reply:
                with contextlib.suppress(Exception):
                    await msg.respond(answer)

        self._track(asyncio.create_task(run()))

    async def role_of(self, public_key: bytes) -> Role:
        """What this key is in the registry now (for the auth callout)."""
        twin = await twins.of_key(self.context, public_key.hex())
        if twin is None:
            return Role("unknown", public_key)
        node = await nodes.of_twin(self.context, twin.id)
        if node is not None:
            return Role("node", public_key, twin.id, node.id)
        return Role("twin", public_key, twin.id)

    async def handle_register(self, subject: str, body: dict[str, Any]) -> Any:
        """`register_twin`, on the registration subject of the key it registers."""
        key_hex = last_token(subject)
        if not self.register_limit.take(key_hex):
            raise BusError("busy", "too many registrations from this key; wait a minute")
        tx = Transaction.parse(body)
        if tx.kind != OWN_SUBJECT["register"]:
            raise BusError("malformed", f"only {OWN_SUBJECT['register']} goes to {subject}")
        if tx.body.get("public_key") != key_hex or not re.fullmatch(r"[0-9a-f]{64}", key_hex):
            raise BusError("forbidden", "register_twin registers the key of its own subject")
        return await self._transact(tx, twin_key=bytes.fromhex(key_hex))

    async def handle_tx(self, subject: str, body: dict[str, Any]) -> Any:
        tx = Transaction.parse(body)
        if tx.kind in OWN_SUBJECT.values():
            raise BusError("malformed", f"{tx.kind} has its own subject (see zos.bus.subjects)")
        return await self._transact(tx)

    async def _transact(self, tx: Transaction, twin_key: bytes | None = None) -> Any:
        tx.check_time()
        rule = TRANSACTIONS.get(tx.kind)
        if rule is None:
            raise BusError("malformed", f"unknown transaction kind {tx.kind!r}")
        if twin_key is not None:  # register_twin: signed by the key it registers
            if tx.twin != 0:
                raise BusError("malformed", "register_twin is sent with twin 0")
            key = twin_key
        else:
            twin = await twins.get(self.context, tx.twin)
            if twin is None:
                raise BusError("unknown_twin", f"twin {tx.twin} is not registered")
            key = twin.public_key_bytes
        if not tx.verify(key):
            raise BusError(
                "bad_signature", f"transaction signature does not verify for {key_hex_of(key)}"
            )
        try:
            args = rule.args.model_validate(tx.body)
        except ValidationError as e:
            raise BusError("invalid", f"{tx.kind}: {describe_error(e)}") from None
        if not await self.store.claim_tx(tx.id):
            raise BusError("replayed", f"transaction {tx.id} was already submitted")
        result = await rule.apply(self.context, tx, args)
        await self.store.publish(
            f"{AUDIT_PREFIX}.{tx.kind}",
            {"tx": tx.model_dump(mode="json"), "result": result},
            msg_id=tx.id,
        )
        return result

    async def handle_query(self, subject: str, body: dict[str, Any]) -> Any:
        if not isinstance(body.get("query"), str):
            raise BusError("malformed", "query must be {'query': name, 'args': {...}}")
        query = QUERIES.get(body["query"])
        if query is None:
            raise BusError("not_found", f"unknown query {body['query']!r}")
        try:
            args = query.args.model_validate(body.get("args") or {})
        except ValidationError as e:
            raise BusError("invalid", f"{body['query']}: {describe_error(e)}") from None
        return await query.answer(self.context, args)


def key_hex_of(key: bytes) -> str:
    return f"key {key.hex()[:16]}..."
