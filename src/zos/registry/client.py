"""`RegistryClient`: signed transactions and queries to the registry service over NATS.

Methods that change something need an `identity`; the client signs a `Transaction` as
its twin (found by public key on first use, or set by `register_twin`/`ensure_twin`).
Every refusal is a `BusError` whose `code` says why (forbidden, not_found, conflict,
invalid, replayed, unavailable, timeout...). `get_*` raise `not_found`; the lookups
`twin_by_key` and `node_by_twin` return None instead.

`watch_contracts(node_id)` follows the registry's event stream for one node, so a node
learns when a contract on it is created, updated or cancelled.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import TypeAdapter

from zos.bus.connection import NatsHolder
from zos.bus.errors import BusError
from zos.bus.resolver import CachedResolver
from zos.identity import Identity
from zos.registry.models import (
    Capacity,
    Contract,
    ContractEvent,
    Farm,
    JoinToken,
    Location,
    NameContract,
    Node,
    NodeContract,
    PublicConfig,
    Twin,
)
from zos.registry.store import CONTRACTS_PREFIX, STREAM
from zos.registry.tx import QUERY_SUBJECT, TX_SUBJECT, Transaction, read_answer

CONTRACT: TypeAdapter[NodeContract | NameContract] = TypeAdapter(Contract)


class RegistryClient(NatsHolder):
    _nats_name = "zos-registry-client"

    def __init__(
        self,
        nats_conn: str | list[str] | NATS,
        identity: Identity | None = None,
        *,
        twin_id: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._init_nats(nats_conn)
        self.identity = identity
        self.twin_id = twin_id
        self.timeout = timeout

    async def connect(self) -> RegistryClient:
        await self._open_nats()
        return self

    async def close(self) -> None:
        await self._close_nats()

    async def __aenter__(self) -> RegistryClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- wire ------------------------------------------------------------------------

    async def _ask(self, subject: str, data: bytes) -> Any:
        try:
            msg = await self.nc.request(subject, data, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise BusError("unavailable", "no registry service is running") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise BusError("timeout", f"registry did not answer in {self.timeout}s") from None
        except nats.errors.ConnectionClosedError:
            raise BusError("unavailable", "the NATS connection is closed") from None
        return read_answer(msg.data)

    async def query(self, query_name: str, /, **args: Any) -> Any:
        return await self._ask(
            QUERY_SUBJECT, json.dumps({"query": query_name, "args": args}).encode()
        )

    def _signer(self) -> Identity:
        if self.identity is None:
            raise BusError("forbidden", "this registry client has no key to sign with")
        return self.identity

    async def my_twin_id(self) -> int:
        if self.twin_id is None:
            twin = await self.twin_by_key(self._signer().public_key)
            if twin is None:
                raise BusError("unknown_twin", "this key is not a registered twin")
            self.twin_id = twin.id
        return self.twin_id

    async def sign_tx(self, kind: str, body: dict[str, Any]) -> Transaction:
        twin = 0 if kind == "register_twin" else await self.my_twin_id()
        return Transaction.build(self._signer(), twin, kind, body)

    async def submit(self, tx: Transaction) -> Any:
        return await self._ask(TX_SUBJECT, tx.model_dump_json().encode())

    async def transact(self, kind: str, body: dict[str, Any]) -> Any:
        return await self.submit(await self.sign_tx(kind, body))

    # -- twins -----------------------------------------------------------------------

    async def register_twin(self) -> Twin:
        twin = Twin.model_validate(
            await self.transact("register_twin", {"public_key": self._signer().public_hex})
        )
        self.twin_id = twin.id
        return twin

    async def ensure_twin(self) -> Twin:
        """This key's twin, registering it first if needed."""
        twin = await self.twin_by_key(self._signer().public_key)
        if twin is None:
            try:
                return await self.register_twin()
            except BusError as e:
                if e.code != "conflict":
                    raise
                twin = await self.twin_by_key(self._signer().public_key)
                assert twin is not None
        self.twin_id = twin.id
        return twin

    async def get_twin(self, twin_id: int) -> Twin:
        return Twin.model_validate(await self.query("get_twin", id=twin_id))

    async def twin_by_key(self, public_key: bytes | str) -> Twin | None:
        key = public_key.hex() if isinstance(public_key, bytes) else public_key.lower()
        found = await self.query("twin_by_key", public_key=key)
        return Twin.model_validate(found) if found else None

    def key_resolver(self, ttl: float = 300.0) -> CachedResolver:
        """A bus key resolver that asks this registry (cached)."""

        async def fetch(twin_id: int) -> bytes | None:
            try:
                return (await self.get_twin(twin_id)).public_key_bytes
            except BusError as e:
                if e.code in ("not_found", "invalid"):
                    return None
                raise

        return CachedResolver(fetch, ttl=ttl)

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
        )
        return token.signed(self._signer()).encode()

    # -- nodes -----------------------------------------------------------------------

    async def register_node(
        self,
        farm_id: int,
        token: str | JoinToken,
        capacity: Capacity | dict[str, int],
        location: Location | dict[str, Any] | None = None,
        public_config: PublicConfig | dict[str, Any] | None = None,
    ) -> Node:
        """Join `farm_id` as this twin's node (or update this node's record)."""
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
        return Node.model_validate(await self.transact("register_node", body))

    async def heartbeat(
        self, node_id: int, used_capacity: Capacity | dict[str, int] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"node_id": node_id}
        if used_capacity is not None:
            body["used"] = _plain(used_capacity)
        return await self.transact("heartbeat", body)

    async def remove_node(self, node_id: int) -> dict[str, Any]:
        return await self.transact("remove_node", {"node_id": node_id})

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
        offset: int = 0,
        limit: int = 100,
    ) -> list[Node]:
        found = await self.query(
            "list_nodes",
            farm_id=farm,
            status=status,
            free_cru=free_cru,
            free_mru=free_mru,
            free_sru=free_sru,
            free_hru=free_hru,
            offset=offset,
            limit=limit,
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
    ) -> list[NodeContract | NameContract]:
        found = await self.query(
            "list_contracts", twin_id=twin, node_id=node, state=state, type=type
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

    async def watch_contracts(
        self, node_id: int, *, start_seq: int | None = None
    ) -> AsyncIterator[ContractEvent]:
        """Contract events of `node_id`: all of them, or from stream sequence `start_seq`.

        Each event carries its `seq`; a node that keeps the last one it handled passes
        `start_seq=seq + 1` after a restart to miss nothing and see nothing twice.
        """
        js = self.nc.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if start_seq is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            )
        # A short idle heartbeat: a consumer lost with its server is recreated in seconds.
        sub = await js.subscribe(
            f"{CONTRACTS_PREFIX}.{node_id}",
            stream=STREAM,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=1.0,
        )
        try:
            async for msg in sub.messages:
                try:
                    event = ContractEvent.model_validate_json(msg.data)
                except ValueError:
                    continue
                event.seq = msg.metadata.sequence.stream
                yield event
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value
