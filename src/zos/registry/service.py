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

Rules:
- register_twin: one twin per public key, on that key's own registration subject; for a
  key that already is a twin it answers that twin (`created` false).
- rotate_key: the twin's current key signs it, the new key signs the rotation
  (`models.rotation_message`) and is no twin yet; a signed KeyChange event tells every
  node, hub and client cache to forget the old key.
- create_farm: any twin; farm names are unique (case-insensitive); the signer owns it.
- register_node: the signer twin becomes (or updates) a node of the farm, only with a
  join token signed by the farm's owner, for that farm, not expired, naming the signer
  or any twin (0). A twin already a node of another farm is refused.
- heartbeat: only the node's own twin, on the node's own heartbeat subject; sets
  last_heartbeat and used capacity.
- remove_node: only the owner of the node's farm.
- create_node_contract: any twin, for a node that exists and is up; the signer owns it.
- update_node_contract / cancel_contract / cancel_name_contract: only the contract's
  owner, and only while the contract is not cancelled.
- create_name_contract: the name must be free.

Contract events (created, updated, cancelled) are stored in the stream and pushed to
`zos.registry.events.<node id>`, signed, with their stream sequence; a node that was
away asks `contract_events` from the last sequence it handled.
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
from pydantic import BaseModel, TypeAdapter, ValidationError

from zos.bus.connection import Connection, NatsHolder, Subscription
from zos.bus.errors import BusError, describe_error
from zos.bus.subjects import (
    AUTH_CALLOUT,
    HEARTBEAT_PREFIX,
    KEY_EVENTS,
    REGISTER_PREFIX,
    REGISTRY_QUERY,
    REGISTRY_QUEUE,
    REGISTRY_TX,
    last_token,
    node_events_subject,
)
from zos.identity import Identity, verify_ed25519
from zos.registry.args import (
    Args,
    ContractEventsArgs,
    ContractIdArgs,
    CreateFarmArgs,
    CreateNodeContractArgs,
    FarmNameArgs,
    HeartbeatArgs,
    IdArgs,
    KeyArgs,
    ListContractsArgs,
    ListFarmsArgs,
    ListNodesArgs,
    NameArgs,
    NodeIdArgs,
    RegisterNodeArgs,
    RegisterTwinArgs,
    RotateKeyArgs,
    TwinIdArgs,
    UpdateNodeContractArgs,
)
from zos.registry.callout import AuthCallout
from zos.registry.models import (
    DOWN_AFTER,
    Contract,
    ContractEvent,
    Farm,
    KeyChange,
    NameContract,
    Node,
    NodeContract,
    Twin,
    rotation_message,
)
from zos.registry.roles import Role
from zos.registry.signing import RegistrySigner
from zos.registry.store import (
    AUDIT_PREFIX,
    CONTRACTS_PREFIX,
    KEYCHANGES_PREFIX,
    TRANSIENT,
    Mirror,
    Store,
)
from zos.registry.tx import NONCE, Transaction, fail, ok, parse_request

log = logging.getLogger(__name__)

TWIN = TypeAdapter(Twin)
FARM = TypeAdapter(Farm)
NODE = TypeAdapter(Node)
CONTRACT: TypeAdapter[NodeContract | NameContract] = TypeAdapter(Contract)
INT = TypeAdapter(int)

REGISTER_BURST = 10  # registrations a key may send at once
REGISTER_EVERY = 6.0  # seconds to earn one more


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


TxHandler = Callable[[Transaction, Any], Awaitable[Any]]
QueryHandler = Callable[[Any], Awaitable[Any]]
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
        self._tx: dict[str, tuple[type[Args], TxHandler]] = {
            "register_twin": (RegisterTwinArgs, self._register_twin),
            "rotate_key": (RotateKeyArgs, self._rotate_key),
            "create_farm": (CreateFarmArgs, self._create_farm),
            "register_node": (RegisterNodeArgs, self._register_node),
            "heartbeat": (HeartbeatArgs, self._heartbeat),
            "remove_node": (NodeIdArgs, self._remove_node),
            "create_node_contract": (CreateNodeContractArgs, self._create_node_contract),
            "update_node_contract": (UpdateNodeContractArgs, self._update_node_contract),
            "cancel_contract": (ContractIdArgs, self._cancel_contract),
            "create_name_contract": (NameArgs, self._create_name_contract),
            "cancel_name_contract": (NameArgs, self._cancel_name_contract),
        }
        self._queries: dict[str, tuple[type[Args], QueryHandler]] = {
            "get_twin": (IdArgs, self._get_twin),
            "twin_by_key": (KeyArgs, self._twin_by_key),
            "get_farm": (IdArgs, self._get_farm),
            "farm_by_name": (FarmNameArgs, self._farm_by_name),
            "list_farms": (ListFarmsArgs, self._list_farms),
            "get_node": (IdArgs, self._get_node),
            "node_by_twin": (TwinIdArgs, self._node_by_twin),
            "list_nodes": (ListNodesArgs, self._list_nodes),
            "get_contract": (IdArgs, self._get_contract),
            "get_name_contract": (NameArgs, self._get_name_contract),
            "list_contracts": (ListContractsArgs, self._list_contracts),
            "contract_events": (ContractEventsArgs, self._contract_events),
        }

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
        self.store = Store(nc.jetstream(timeout=2.0), self.signer, replicas=self.replicas)
        await self._setup_store()
        # First, so that connections are let in while the mirrors fill.
        self._subs.append(await conn.subscribe(AUTH_CALLOUT, self._on_callout, REGISTRY_QUEUE))
        self.farms = Mirror(self.store, "farms", FARM)
        self.nodes = Mirror(self.store, "nodes", NODE)
        self.contracts = Mirror(self.store, "contracts", CONTRACT)
        for mirror in (self.farms, self.nodes, self.contracts):
            await mirror.start()
        # A transaction's id is its nonce; a query carries one.
        routes: list[tuple[str, Handle, str]] = [
            (REGISTRY_TX, self.handle_tx, "id"),
            (REGISTRY_QUERY, self.handle_query, "nonce"),
            (f"{REGISTER_PREFIX}*", self.handle_register, "id"),
            (f"{HEARTBEAT_PREFIX}*", self.handle_heartbeat, "id"),
        ]
        for subject, handle, nonce_field in routes:
            on_message = self._dispatcher(handle, nonce_field)
            self._subs.append(await conn.subscribe(subject, on_message, REGISTRY_QUEUE))
        await nc.flush()
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
        twin = await self._twin_of_key(public_key.hex())
        if twin is None:
            return Role("unknown", public_key)
        node_id = await self.store.get_int("node-twins", str(twin.id))
        got = await self.store.get("nodes", node_id, NODE) if node_id is not None else None
        if got is not None and got[0].twin_id == twin.id:
            return Role("node", public_key, twin.id, got[0].id)
        return Role("twin", public_key, twin.id)

    async def handle_register(self, subject: str, body: dict[str, Any]) -> Any:
        """`register_twin`, on the registration subject of the key it registers."""
        key_hex = last_token(subject)
        if not self.register_limit.take(key_hex):
            raise BusError("busy", "too many registrations from this key; wait a minute")
        tx = Transaction.parse(body)
        if tx.kind != "register_twin":
            raise BusError("malformed", f"only register_twin goes to {subject}")
        if tx.body.get("public_key") != key_hex or not re.fullmatch(r"[0-9a-f]{64}", key_hex):
            raise BusError("forbidden", "register_twin registers the key of its own subject")
        return await self._transact(tx, twin_key=bytes.fromhex(key_hex))

    async def handle_heartbeat(self, subject: str, body: dict[str, Any]) -> Any:
        """`heartbeat`, on the heartbeat subject of its node."""
        tx = Transaction.parse(body)
        if tx.kind != "heartbeat":
            raise BusError("malformed", f"only heartbeats go to {subject}")
        if str(tx.body.get("node_id")) != last_token(subject):
            raise BusError("forbidden", f"a heartbeat on {subject} is for that node only")
        return await self._transact(tx)

    async def handle_tx(self, subject: str, body: dict[str, Any]) -> Any:
        tx = Transaction.parse(body)
        if tx.kind in ("register_twin", "heartbeat"):
            raise BusError("malformed", f"{tx.kind} has its own subject (see zos.bus.subjects)")
        return await self._transact(tx)

    async def _transact(self, tx: Transaction, twin_key: bytes | None = None) -> Any:
        tx.check_time()
        entry = self._tx.get(tx.kind)
        if entry is None:
            raise BusError("malformed", f"unknown transaction kind {tx.kind!r}")
        args_model, handler = entry
        if twin_key is not None:  # register_twin: signed by the key it registers
            if tx.twin != 0:
                raise BusError("malformed", "register_twin is sent with twin 0")
            key = twin_key
        else:
            twin = await self._twin(tx.twin)
            if twin is None:
                raise BusError("unknown_twin", f"twin {tx.twin} is not registered")
            key = twin.public_key_bytes
        if not tx.verify(key):
            raise BusError(
                "bad_signature", f"transaction signature does not verify for {key_hex_of(key)}"
            )
        try:
            args = args_model.model_validate(tx.body)
        except ValidationError as e:
            raise BusError("invalid", f"{tx.kind}: {describe_error(e)}") from None
        if not await self.store.claim_tx(tx.id):
            raise BusError("replayed", f"transaction {tx.id} was already submitted")
        result = await handler(tx, args)
        if tx.kind != "heartbeat":  # heartbeats would drown the audit trail
            await self.store.publish(
                f"{AUDIT_PREFIX}.{tx.kind}",
                {"tx": tx.model_dump(mode="json"), "result": result},
                msg_id=tx.id,
            )
        return result

    async def handle_query(self, subject: str, body: dict[str, Any]) -> Any:
        if not isinstance(body.get("query"), str):
            raise BusError("malformed", "query must be {'query': name, 'args': {...}}")
        entry = self._queries.get(body["query"])
        if entry is None:
            raise BusError("not_found", f"unknown query {body['query']!r}")
        args_model, handler = entry
        try:
            args = args_model.model_validate(body.get("args") or {})
        except ValidationError as e:
            raise BusError("invalid", f"{body['query']}: {describe_error(e)}") from None
        return await handler(args)

    # -- helpers ---------------------------------------------------------------------

    async def _twin(self, twin_id: int) -> Twin | None:
        got = await self.store.get("twins", twin_id, TWIN)
        return got[0] if got else None

    async def _farm(self, farm_id: int) -> Farm:
        got = await self.store.get("farms", farm_id, FARM)
        if got is None:
            raise BusError("not_found", f"farm {farm_id} does not exist")
        return got[0]

    async def _node(self, node_id: int) -> Node:
        got = await self.store.get("nodes", node_id, NODE)
        if got is None:
            raise BusError("not_found", f"node {node_id} does not exist")
        return got[0].with_status(time.time(), self.down_after)

    async def _contract(self, contract_id: int) -> NodeContract | NameContract:
        got = await self.store.get("contracts", contract_id, CONTRACT)
        if got is None:
            raise BusError("not_found", f"contract {contract_id} does not exist")
        return got[0]

    def _owned_live(self, contract: NodeContract | NameContract, twin: int) -> None:
        if contract.owner_twin != twin:
            raise BusError(
                "forbidden",
                f"contract {contract.id} belongs to twin {contract.owner_twin}, not {twin}",
            )
        if contract.state != "created":
            raise BusError("conflict", f"contract {contract.id} is cancelled")

    async def _twin_of_key(self, key_hex: str) -> Twin | None:
        """The twin whose key this is now (an index left by a crashed rotation is not)."""
        twin_id = await self.store.get_int("twin-keys", key_hex)
        twin = await self._twin(twin_id) if twin_id is not None else None
        return twin if twin is not None and twin.public_key == key_hex else None

    async def _event(self, stored_subject: str, push_subject: str, event: Any, msg_id: str) -> None:
        """Store an event in the stream (signed), then push it with its sequence (signed):
        the stream is what a node reads after a restart, the push what it hears at once."""
        seq = await self.store.publish(stored_subject, _json(event), msg_id=msg_id)
        pushed = event.model_copy(update={"seq": seq}).model_dump_json().encode()
        with contextlib.suppress(Exception):  # the stream has it; a missed push is read later
            await self.conn.publish(push_subject, self.signer.sign(f"event/{push_subject}", pushed))

    async def _contract_event(self, tx: Transaction, kind: str, contract: NodeContract) -> None:
        event = ContractEvent(kind=kind, contract=contract, at=time.time())  # type: ignore[arg-type]
        await self._event(
            f"{CONTRACTS_PREFIX}.{contract.node_id}",
            node_events_subject(contract.node_id),
            event,
            msg_id=f"{tx.id}.contract",
        )

    # -- transactions ----------------------------------------------------------------

    async def _register_twin(self, tx: Transaction, args: RegisterTwinArgs) -> Any:
        existing = await self._twin_of_key(args.public_key)
        if existing is not None:
            return {"twin": _json(existing), "created": False}
        twin_id = await self.store.next_id("twin")
        if await self.store.create("twin-keys", args.public_key, twin_id) is None:
            raise BusError("conflict", "this key was registered at the same moment; ask again")
        twin = Twin(id=twin_id, public_key=args.public_key, created=time.time())
        await self.store.create_new("twins", twin_id, twin)
        return {"twin": _json(twin), "created": True}

    async def _rotate_key(self, tx: Transaction, args: RotateKeyArgs) -> Any:
        twin = await self._twin(tx.twin)
        assert twin is not None  # the transaction was signed by its key
        old, new = twin.public_key, args.new_key
        if new == old:
            raise BusError("invalid", "new_key: is the twin's current key")
        if not verify_ed25519(
            bytes.fromhex(new), rotation_message(twin.id, old, new), bytes.fromhex(args.proof)
        ):
            raise BusError("forbidden", "proof: not signed by new_key for this rotation")
        taken = await self.store.create("twin-keys", new, twin.id) is None
        if taken and await self.store.get_int("twin-keys", new) != twin.id:  # not our retry
            raise BusError("conflict", "new_key: is already another twin's key")

        def change(current: Twin) -> Twin:
            if current.public_key != old:
                raise BusError("conflict", f"twin {twin.id}'s key changed meanwhile")
            return current.model_copy(update={"public_key": new})

        rotated, _ = await self.store.update("twins", twin.id, TWIN, change)
        await self.store.delete("twin-keys", old)
        change_event = KeyChange(twin_id=twin.id, old_key=old, new_key=new, at=time.time())
        await self._event(
            f"{KEYCHANGES_PREFIX}.{twin.id}", KEY_EVENTS, change_event, msg_id=f"{tx.id}.key"
        )
        return _json(rotated)

    async def _create_farm(self, tx: Transaction, args: CreateFarmArgs) -> Any:
        name_key = args.name.lower()
        existing = await self.store.get_int("farm-names", name_key)
        if existing is not None:
            raise BusError("conflict", f"farm name {args.name!r} is taken (farm {existing})")
        farm_id = await self.store.next_id("farm")
        if await self.store.create("farm-names", name_key, farm_id) is None:
            raise BusError("conflict", f"farm name {args.name!r} is taken")
        farm = Farm(id=farm_id, name=args.name, owner_twin=tx.twin, created=time.time())
        rev = await self.store.create_new("farms", farm_id, farm)
        self.farms.apply(str(farm_id), rev, farm)
        return _json(farm)

    async def _register_node(self, tx: Transaction, args: RegisterNodeArgs) -> Any:
        farm = await self._farm(args.farm_id)
        token = args.token
        if token.farm_id != farm.id:
            raise BusError("forbidden", f"join token is for farm {token.farm_id}, not {farm.id}")
        if token.registry_key != self.public_key.hex():
            raise BusError(
                "forbidden",
                f"join token names registry key {token.registry_key[:16]}..., "
                f"this registry's is {self.public_key.hex()[:16]}...",
            )
        if token.node_twin not in (0, tx.twin):
            raise BusError("forbidden", f"join token is for twin {token.node_twin}, not {tx.twin}")
        now = time.time()
        if token.expires < now:
            raise BusError("forbidden", "join token has expired")
        owner = await self._twin(farm.owner_twin)
        if owner is None or not token.verify(owner.public_key_bytes):
            raise BusError("forbidden", f"join token is not signed by farm {farm.id}'s owner")

        def refresh(node: Node) -> Node:
            if node.farm_id != farm.id:
                raise BusError(
                    "conflict", f"twin {tx.twin} is already node {node.id} of farm {node.farm_id}"
                )
            return node.model_copy(
                update={
                    "capacity": args.capacity,
                    "location": args.location,
                    "public_config": args.public_config,
                    "last_heartbeat": now,
                }
            )

        node_id = await self.store.get_int("node-twins", str(tx.twin))
        if node_id is None:
            node_id = await self.store.next_id("node")
            if await self.store.create("node-twins", tx.twin, node_id) is None:
                raise BusError("conflict", f"twin {tx.twin} registered as a node at the same time")
            node = Node(
                id=node_id,
                farm_id=farm.id,
                twin_id=tx.twin,
                capacity=args.capacity,
                location=args.location,
                public_config=args.public_config,
                created=now,
                last_heartbeat=now,
            )
            rev = await self.store.create_new("nodes", node_id, node)
        else:
            node, rev = await self.store.update("nodes", node_id, NODE, refresh)
        self.nodes.apply(str(node_id), rev, node)
        return _json(node.with_status(time.time(), self.down_after))

    async def _heartbeat(self, tx: Transaction, args: HeartbeatArgs) -> Any:
        now = time.time()

        def beat(node: Node) -> Node:
            if node.twin_id != tx.twin:
                raise BusError(
                    "forbidden", f"node {node.id} is twin {node.twin_id}'s, not {tx.twin}'s"
                )
            return node.model_copy(update={"last_heartbeat": now, "used": args.used})

        node, rev = await self.store.update("nodes", args.node_id, NODE, beat)
        self.nodes.apply(str(node.id), rev, node)
        return {"node_id": node.id, "last_heartbeat": now}

    async def _remove_node(self, tx: Transaction, args: NodeIdArgs) -> Any:
        node = await self._node(args.node_id)
        farm = await self._farm(node.farm_id)
        if farm.owner_twin != tx.twin:
            raise BusError(
                "forbidden", f"only farm {farm.id}'s owner (twin {farm.owner_twin}) removes nodes"
            )
        rev = await self.store.delete("nodes", node.id)
        self.nodes.apply(str(node.id), rev, None)
        await self.store.delete("node-twins", node.twin_id)
        return {"node_id": node.id, "removed": True}

    async def _create_node_contract(self, tx: Transaction, args: CreateNodeContractArgs) -> Any:
        node = await self._node(args.node_id)
        if node.status != "up":
            ago = time.time() - node.last_heartbeat
            raise BusError("unavailable", f"node {node.id} is down (last heartbeat {ago:.0f}s ago)")
        now = time.time()
        contract_id = await self.store.next_id("contract")
        contract = NodeContract(
            id=contract_id,
            node_id=node.id,
            owner_twin=tx.twin,
            deployment_hash=args.deployment_hash,
            public_ips=args.public_ips,
            created=now,
            updated=now,
        )
        rev = await self.store.create_new("contracts", contract_id, contract)
        self.contracts.apply(str(contract_id), rev, contract)
        await self._contract_event(tx, "created", contract)
        return _json(contract)

    async def _update_node_contract(self, tx: Transaction, args: UpdateNodeContractArgs) -> Any:
        def change(contract: NodeContract | NameContract) -> NodeContract:
            if not isinstance(contract, NodeContract):
                raise BusError("invalid", f"contract {contract.id} is a name contract")
            self._owned_live(contract, tx.twin)
            return contract.model_copy(
                update={"deployment_hash": args.deployment_hash, "updated": time.time()}
            )

        contract, rev = await self.store.update("contracts", args.contract_id, CONTRACT, change)
        self.contracts.apply(str(contract.id), rev, contract)
        assert isinstance(contract, NodeContract)
        await self._contract_event(tx, "updated", contract)
        return _json(contract)

    async def _cancel(self, tx: Transaction, contract_id: int) -> NodeContract | NameContract:
        def change(contract: NodeContract | NameContract) -> NodeContract | NameContract:
            self._owned_live(contract, tx.twin)
            return contract.model_copy(update={"state": "deleted", "updated": time.time()})

        contract, rev = await self.store.update("contracts", contract_id, CONTRACT, change)
        self.contracts.apply(str(contract.id), rev, contract)
        if isinstance(contract, NodeContract):
            await self._contract_event(tx, "cancelled", contract)
        else:
            await self.store.delete("names", contract.name)
        return contract

    async def _cancel_contract(self, tx: Transaction, args: ContractIdArgs) -> Any:
        return _json(await self._cancel(tx, args.contract_id))

    async def _create_name_contract(self, tx: Transaction, args: NameArgs) -> Any:
        existing = await self.store.get_int("names", args.name)
        if existing is not None:
            raise BusError("conflict", f"name {args.name!r} is taken (contract {existing})")
        contract_id = await self.store.next_id("contract")
        if await self.store.create("names", args.name, contract_id) is None:
            raise BusError("conflict", f"name {args.name!r} is taken")
        now = time.time()
        contract = NameContract(
            id=contract_id, name=args.name, owner_twin=tx.twin, created=now, updated=now
        )
        rev = await self.store.create_new("contracts", contract_id, contract)
        self.contracts.apply(str(contract_id), rev, contract)
        return _json(contract)

    async def _cancel_name_contract(self, tx: Transaction, args: NameArgs) -> Any:
        contract_id = await self.store.get_int("names", args.name)
        if contract_id is None:
            raise BusError("not_found", f"no name contract for {args.name!r}")
        return _json(await self._cancel(tx, contract_id))

    # -- queries ---------------------------------------------------------------------

    async def _get_twin(self, args: IdArgs) -> Any:
        twin = await self._twin(args.id)
        if twin is None:
            raise BusError("not_found", f"twin {args.id} does not exist")
        return _json(twin)

    async def _twin_by_key(self, args: KeyArgs) -> Any:
        twin = await self._twin_of_key(args.public_key)
        return _json(twin) if twin else None

    async def _get_farm(self, args: IdArgs) -> Any:
        return _json(await self._farm(args.id))

    async def _farm_by_name(self, args: FarmNameArgs) -> Any:
        name = args.name.lower()
        farm_id = await self.store.get_int("farm-names", name) if _kv_key(name) else None
        if farm_id is None:
            raise BusError("not_found", f"no farm named {args.name!r}")
        return _json(await self._farm(farm_id))

    async def _list_farms(self, args: ListFarmsArgs) -> Any:
        return [
            self.farms.dumped(str(f.id))
            for f in self.farms.values()
            if args.owner_twin in (None, f.owner_twin)
        ]

    async def _get_node(self, args: IdArgs) -> Any:
        return _json(await self._node(args.id))

    async def _node_by_twin(self, args: TwinIdArgs) -> Any:
        node_id = await self.store.get_int("node-twins", str(args.twin_id))
        if node_id is None:
            return None
        try:
            return _json(await self._node(node_id))
        except BusError:
            return None

    async def _list_nodes(self, args: ListNodesArgs) -> Any:
        # Plain arithmetic over the mirror: no model is built for a node filtered out.
        now = time.time()
        skip, found = args.offset, []
        for node in self.nodes.values():
            if args.farm_id is not None and node.farm_id != args.farm_id:
                continue
            status = "up" if now - node.last_heartbeat <= self.down_after else "down"
            if args.status is not None and status != args.status:
                continue
            # Free is never below 0 (cores may be overbooked; what a node reports as used
            # must not hide it from a listing that asks for nothing).
            c, u = node.capacity, node.used
            if (
                max(0, c.cru - u.cru) < args.free_cru
                or max(0, c.mru - u.mru) < args.free_mru
                or max(0, c.sru - u.sru) < args.free_sru
                or max(0, c.hru - u.hru) < args.free_hru
            ):
                continue
            if skip:
                skip -= 1
                continue
            found.append({**self.nodes.dumped(str(node.id)), "status": status})
            if len(found) == args.limit:
                break
        return found

    async def _get_contract(self, args: IdArgs) -> Any:
        return _json(await self._contract(args.id))

    async def _get_name_contract(self, args: NameArgs) -> Any:
        contract_id = await self.store.get_int("names", args.name)
        if contract_id is None:
            raise BusError("not_found", f"no name contract for {args.name!r}")
        return _json(await self._contract(contract_id))

    async def _list_contracts(self, args: ListContractsArgs) -> Any:
        skip, found = args.offset, []
        for c in self.contracts.values():
            if args.twin_id is not None and c.owner_twin != args.twin_id:
                continue
            if args.node_id is not None and getattr(c, "node_id", None) != args.node_id:
                continue
            if args.state is not None and c.state != args.state:
                continue
            if args.type is not None and c.type != args.type:
                continue
            if skip:
                skip -= 1
                continue
            found.append(self.contracts.dumped(str(c.id)))
            if len(found) == args.limit:
                break
        return found

    async def _contract_events(self, args: ContractEventsArgs) -> Any:
        found = await self.store.read_stream(
            f"{CONTRACTS_PREFIX}.{args.node_id}", args.after_seq, args.limit
        )
        events = []
        for seq, body in found:
            event = ContractEvent.model_validate_json(body)
            events.append({**_json(event), "seq": seq})
        return events


def key_hex_of(key: bytes) -> str:
    return f"key {key.hex()[:16]}..."


def _kv_key(text: str) -> bool:
    return bool(text) and all(ch.isalnum() or ch in "-_" for ch in text) and text.isascii()
