"""`RegistryClient`: signed transactions and queries to the registry service over NATS.

The client connects with its identity's key and signs a `Transaction` as its twin (found
by public key on first use, or set by `register_twin`/`ensure_twin`). Every answer must
carry the signature of the registry key the client pinned (`registry_key`), made for the
nonce of the request it answers; one that does not is refused (`bad_signature`) and
logged. Every refusal is a `BusError` whose `code` says why (forbidden, not_found,
conflict, invalid, replayed, unavailable, timeout...). `get_*` raise `not_found`; the
lookups `twin_by_key` and `node_by_twin` return None instead.

A connection's permissions follow its key's role when it connects: after registering a
twin or a node the client reconnects (`Connection.renew`), and a request nats-server
refuses (`not_permitted`) is sent once more after a reconnect, in case the role changed.

Nodes hear about their contracts through `subscribe_contract_events` (pushed, signed)
and catch up with `contract_events` after a restart. Key resolvers made by
`key_resolver()` forget a twin when the registry announces, signed, that its key changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from pydantic import TypeAdapter, ValidationError

from zos.bus.connection import Connection, NatsHolder, Subscription
from zos.bus.errors import BusError
from zos.bus.resolver import CachedResolver
from zos.bus.subjects import (
    KEY_EVENTS,
    REGISTRY_QUERY,
    REGISTRY_TX,
    node_events_subject,
    node_status_subject,
    register_subject,
)
from zos.identity import Identity
from zos.registry import heartbeats
from zos.registry.models import (
    Capacity,
    Contract,
    ContractEvent,
    Farm,
    JoinToken,
    KeyChange,
    Location,
    NameContract,
    Node,
    NodeContract,
    PublicConfig,
    Twin,
    rotation_message,
)
from zos.registry.signing import RegistryKey, RegistrySigner
from zos.registry.tx import Transaction, new_nonce, read_answer

log = logging.getLogger(__name__)

CONTRACT: TypeAdapter[NodeContract | NameContract] = TypeAdapter(Contract)
EventHandler = Callable[[ContractEvent], Awaitable[None]]


class RegistryClient(NatsHolder):
    _nats_name = "zos-registry-client"

    def __init__(
        self,
        nats_conn: str | list[str] | Connection,
        identity: Identity,
        *,
        registry_key: bytes | RegistryKey,
        twin_id: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._init_nats(nats_conn, identity)
        self.identity = identity
        self.registry = (
            registry_key if isinstance(registry_key, RegistryKey) else RegistryKey(registry_key)
        )
        self.twin_id = twin_id
        self.timeout = timeout
        self._resolvers: list[CachedResolver] = []
        self._key_sub: Subscription | None = None
        self._signer: RegistrySigner | None = None  # this key, signing heartbeats

    async def connect(self) -> RegistryClient:
        conn = await self._open_nats()
        conn.on_reconnect(self._forget_all_keys)
        return self

    async def close(self) -> None:
        if self._key_sub is not None:
            with contextlib.suppress(Exception):
                await self._key_sub.unsubscribe()
            self._key_sub = None
        await self._close_nats()

    async def __aenter__(self) -> RegistryClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- wire ------------------------------------------------------------------------

    async def _ask(self, subject: str, data: bytes, nonce: str, *, renew: bool = True) -> Any:
        """Send a request; its result once the answer is shown to be the registry's own,
        for this request."""
        msg = await self._request(subject, lambda: data, renew)
        return read_answer(self.registry.open(f"answer/{nonce}", msg.data))

    async def _request(self, subject: str, data: Callable[[], bytes], renew: bool = True) -> Msg:
        try:
            return await self.conn.request(subject, data(), self.timeout)
        except BusError as e:
            if e.code != "not_permitted" or not renew:
                raise
            await self.conn.renew()  # our role may have changed since we connected
            return await self._request(subject, data, renew=False)
        except nats.errors.NoRespondersError:
            raise BusError("unavailable", "no registry service is running") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise BusError("timeout", f"registry did not answer in {self.timeout}s") from None
        except nats.errors.ConnectionClosedError:
            raise BusError("unavailable", "the NATS connection is closed") from None

    async def query(self, query_name: str, /, **args: Any) -> Any:
        nonce = new_nonce()
        request = {"query": query_name, "args": args, "nonce": nonce}
        return await self._ask(REGISTRY_QUERY, json.dumps(request).encode(), nonce)

    async def my_twin_id(self) -> int:
        if self.twin_id is None:
            twin = await self.twin_by_key(self.identity.public_key)
            if twin is None:
                raise BusError("unknown_twin", "this key is not a registered twin")
            self.twin_id = twin.id
        return self.twin_id

    async def sign_tx(self, kind: str, body: dict[str, Any]) -> Transaction:
        twin = 0 if kind == "register_twin" else await self.my_twin_id()
        return Transaction.build(self.identity, twin, kind, body)

    def _subject_of(self, tx: Transaction) -> str:
        if tx.kind == "register_twin":
            return register_subject(self.identity.public_key)
        return REGISTRY_TX

    async def submit(self, tx: Transaction) -> Any:
        return await self._ask(self._subject_of(tx), tx.model_dump_json().encode(), tx.id)

    async def transact(self, kind: str, body: dict[str, Any]) -> Any:
        return await self.submit(await self.sign_tx(kind, body))

    # -- twins -----------------------------------------------------------------------

    async def _register(self) -> tuple[Twin, bool]:
        """This key's twin, registered now or before; reconnects with the twin's role
        when it is new."""
        answer = await self.transact("register_twin", {"public_key": self.identity.public_hex})
        twin, created = Twin.model_validate(answer["twin"]), bool(answer["created"])
        self.twin_id = twin.id
        if created:
            await self.conn.renew()
        return twin, created

    async def register_twin(self) -> Twin:
        """Register this key as a new twin (conflict if it already is one)."""
        twin, created = await self._register()
        if not created:
            raise BusError("conflict", f"this key is already twin {twin.id}")
        return twin

    async def ensure_twin(self) -> Twin:
        """This key's twin, registering it first if needed."""
        try:
            twin = await self._twin_by_key(self.identity.public_key, renew=False)
        except BusError as e:
            if e.code != "not_permitted":  # an unregistered key may not ask yet
                raise
            twin = None
        if twin is None:
            twin, _ = await self._register()
        self.twin_id = twin.id
        return twin

    async def rotate_key(self, new: Identity) -> Twin:
        """Make `new` this twin's key (signed by the current one, the new one proving it
        holds its key). This connection keeps the old key: reconnect with the new one."""
        twin_id = await self.my_twin_id()
        old_hex, new_hex = self.identity.public_hex, new.public_hex
        proof = new.sign(rotation_message(twin_id, old_hex, new_hex)).hex()
        return Twin.model_validate(
            await self.transact("rotate_key", {"new_key": new_hex, "proof": proof})
        )

    async def get_twin(self, twin_id: int) -> Twin:
        return Twin.model_validate(await self.query("get_twin", id=twin_id))

    async def twin_by_key(self, public_key: bytes | str) -> Twin | None:
        return await self._twin_by_key(public_key)

    async def _twin_by_key(self, public_key: bytes | str, renew: bool = True) -> Twin | None:
        key = public_key.hex() if isinstance(public_key, bytes) else public_key.lower()
        nonce = new_nonce()
        request = {"query": "twin_by_key", "args": {"public_key": key}, "nonce": nonce}
        found = await self._ask(REGISTRY_QUERY, json.dumps(request).encode(), nonce, renew=renew)
        return Twin.model_validate(found) if found else None

    async def key_resolver(self, ttl: float = 300.0) -> CachedResolver:
        """A bus key resolver that asks this registry, cached until the registry says the
        twin's key changed (or the connection was lost, or `ttl` passed)."""

        async def fetch(twin_id: int) -> bytes | None:
            try:
                return (await self.get_twin(twin_id)).public_key_bytes
            except BusError as e:
                if e.code in ("not_found", "invalid"):
                    return None
                raise

        resolver = CachedResolver(fetch, ttl=ttl)
        self._resolvers.append(resolver)
        if self._key_sub is None:
            self._key_sub = await self.conn.subscribe(KEY_EVENTS, self._on_key_change)
        return resolver

    async def _on_key_change(self, msg: Msg) -> None:
        try:
            body = self.registry.open(f"event/{KEY_EVENTS}", msg.data, "key change event")
            change = KeyChange.model_validate_json(body)
        except (BusError, ValidationError):
            return  # logged by open, or not one of ours
        log.info("twin %s changed its key: forgetting the old one", change.twin_id)
        for resolver in self._resolvers:
            resolver.forget(change.twin_id)

    async def _forget_all_keys(self) -> None:
        for resolver in self._resolvers:
            resolver.clear()

    # -- farms -----------------------------------------------------------------------

    async def create_farm(self, name: str) -> Farm:
        return Farm.model_validate(await self.transact("create_farm", {"name": name}))

    async def get_farm(self, farm_id: int) -> Farm:
        return Farm.model_validate(await self.query("get_farm", id=farm_id))

    async def farm_by_name(self, name: str) -> Farm:
        return Farm.model_validate(await self.query("farm_by_name", name=name))

    async def list_farms(self, owner_twin: int | None = None) -> list[Farm]:
        return [
            Farm.model_validate(f) for f in await self.query("list_farms", owner_twin=owner_twin)
        ]

    async def farm_join_token(
        self, farm_id: int, node_twin: int = 0, expires: float = 24 * 3600.0
    ) -> str:
        """A join token for `farm_id`, valid `expires` seconds, for one twin or any (0).

        Signed locally; refused here already when this key does not own the farm.
        """
        farm = await self.get_farm(farm_id)
        if farm.owner_twin != await self.my_twin_id():
            raise BusError("forbidden", f"farm {farm_id} is owned by twin {farm.owner_twin}")
        token = JoinToken(
            farm_id=farm_id,
            node_twin=node_twin,
            expires=time.time() + expires,
            nonce=os.urandom(8).hex(),
            registry_key=self.registry.hex,
        )
        return token.signed(self.identity).encode()

    # -- nodes -----------------------------------------------------------------------

    async def register_node(
        self,
        farm_id: int,
        token: str | JoinToken,
        capacity: Capacity | dict[str, int],
        location: Location | dict[str, Any] | None = None,
        public_config: PublicConfig | dict[str, Any] | None = None,
    ) -> Node:
        """Join `farm_id` as this twin's node (or update this node's record); reconnects
        with the node's role when it joined now."""
        if isinstance(token, str):
            try:
                token = JoinToken.decode(token)
            except ValueError as e:
                raise BusError("invalid", str(e)) from None
        body: dict[str, Any] = {
            "farm_id": farm_id,
            "token": token.model_dump(mode="json"),
            "capacity": _plain(capacity),
        }
        if location is not None:
            body["location"] = _plain(location)
        if public_config is not None:
            body["public_config"] = _plain(public_config)
        known = await self.node_by_twin(await self.my_twin_id())
        node = Node.model_validate(await self.transact("register_node", body))
        if known is None or known.id != node.id:
            await self.conn.renew()
        return node

    async def heartbeat(
        self, node_id: int, used_capacity: Capacity | dict[str, int] | None = None
    ) -> dict[str, Any]:
        """The node's status, signed, appended to the heartbeat stream (`heartbeats`):
        {node_id, at (unix ms), seq (its stream sequence)} once JetStream stored it."""
        used = Capacity.model_validate(_plain(used_capacity) if used_capacity else {})
        if self._signer is None:
            self._signer = RegistrySigner(self.identity)
        signer = self._signer
        msg = await self._request(
            node_status_subject(node_id), lambda: heartbeats.sign(signer, node_id, used)
        )
        return heartbeats.stored(msg.data, node_id)

    async def remove_node(self, node_id: int) -> dict[str, Any]:
        return await self.transact("remove_node", {"node_id": node_id})

    async def set_node_public_config(
        self, node_id: int, public_config: PublicConfig | dict[str, Any] | None
    ) -> Node:
        """Set a node's public config (only its farm's owner may); None clears it."""
        body = {"node_id": node_id, "public_config": _plain(public_config or PublicConfig())}
        return Node.model_validate(await self.transact("set_node_public_config", body))

    async def get_node(self, node_id: int) -> Node:
        return Node.model_validate(await self.query("get_node", id=node_id))

    async def node_by_twin(self, twin_id: int) -> Node | None:
        found = await self.query("node_by_twin", twin_id=twin_id)
        return Node.model_validate(found) if found else None

    async def list_nodes(
        self,
        farm: int | None = None,
        status: str | None = None,
        free_cru: int = 0,
        free_mru: int = 0,
        free_sru: int = 0,
        free_hru: int = 0,
        *,
        gateway: bool | None = None,
        after_id: int = 0,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Node]:
        """Nodes by farm, status, free capacity and whether they serve gateways (a
        public IPv4 and a domain), in id order: a page starts after node `after_id`."""
        # `gateway` only when asked, so a registry that does not know it still answers.
        wanted = {} if gateway is None else {"gateway": gateway}
        found = await self.query(
            "list_nodes",
            farm_id=farm,
            status=status,
            free_cru=free_cru,
            free_mru=free_mru,
            free_sru=free_sru,
            free_hru=free_hru,
            after_id=after_id,
            offset=offset,
            limit=limit,
            **wanted,
        )
        return [Node.model_validate(n) for n in found]

    # -- contracts -------------------------------------------------------------------

    async def create_node_contract(
        self, node_id: int, deployment_hash: str, public_ips: int = 0
    ) -> NodeContract:
        body = {"node_id": node_id, "deployment_hash": deployment_hash, "public_ips": public_ips}
        return NodeContract.model_validate(await self.transact("create_node_contract", body))

    async def update_node_contract(self, contract_id: int, deployment_hash: str) -> NodeContract:
        body = {"contract_id": contract_id, "deployment_hash": deployment_hash}
        return NodeContract.model_validate(await self.transact("update_node_contract", body))

    async def cancel_contract(self, contract_id: int) -> NodeContract | NameContract:
        result = await self.transact("cancel_contract", {"contract_id": contract_id})
        return CONTRACT.validate_python(result)

    async def get_contract(self, contract_id: int) -> NodeContract | NameContract:
        return CONTRACT.validate_python(await self.query("get_contract", id=contract_id))

    async def list_contracts(
        self,
        twin: int | None = None,
        *,
        node: int | None = None,
        state: str | None = None,
        type: str | None = None,
        offset: int = 0,
        limit: int = 1000,
    ) -> list[NodeContract | NameContract]:
        found = await self.query(
            "list_contracts",
            twin_id=twin,
            node_id=node,
            state=state,
            type=type,
            offset=offset,
            limit=limit,
        )
        return [CONTRACT.validate_python(c) for c in found]

    async def create_name_contract(self, name: str) -> NameContract:
        return NameContract.model_validate(
            await self.transact("create_name_contract", {"name": name})
        )

    async def cancel_name_contract(self, name: str) -> NameContract:
        return NameContract.model_validate(
            await self.transact("cancel_name_contract", {"name": name})
        )

    async def get_name_contract(self, name: str) -> NameContract:
        return NameContract.model_validate(await self.query("get_name_contract", name=name))

    async def contract_events(
        self, node_id: int, after_seq: int = 0, limit: int = 100
    ) -> list[ContractEvent]:
        """Contract events of `node_id` stored after stream sequence `after_seq`."""
        found = await self.query(
            "contract_events", node_id=node_id, after_seq=after_seq, limit=limit
        )
        events = [ContractEvent.model_validate(e) for e in found]
        return [e for e in events if e.contract.node_id == node_id and e.seq > after_seq]

    async def subscribe_contract_events(self, node_id: int, handle: EventHandler) -> Subscription:
        """Call `handle` with each contract event the registry pushes to `node_id` (only
        that node may subscribe); events not signed by the registry are dropped, logged."""
        subject = node_events_subject(node_id)

        async def on_event(msg: Msg) -> None:
            try:
                body = self.registry.open(f"event/{subject}", msg.data, "contract event")
                event = ContractEvent.model_validate_json(body)
            except (BusError, ValidationError) as e:
                if isinstance(e, ValidationError):
                    log.warning("refused a contract event that does not parse")
                return
            if event.contract.node_id != node_id:
                log.warning("refused a contract event for node %s", event.contract.node_id)
                return
            await handle(event)

        return await self.conn.subscribe(subject, on_event)


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value
