"""The registry service: checks signed transactions and answers queries over NATS.

It is stateless: everything is in JetStream (see `store`), so any number of copies may
run at once; they share the subjects `zos.registry.tx` and `zos.registry.query` as the
queue group `zos-registry`, and NATS gives each request to one of them.

A transaction is checked in this order, and the first failure is the answer: its size
and shape (too_large, malformed), its timestamp (expired), its signer (unknown_twin:
the twin must exist, except for `register_twin` which is signed by the key it
registers), its signature (bad_signature), its body (invalid, naming the field), its id
(replayed: ids are recorded in a KV bucket with a TTL), then the rules of its kind
(not_found, forbidden, conflict, unavailable). Only then is it written.

Needs nats-server 2.10 or newer when replicated: older servers may accept two
compare-and-set writes on a clustered stream at once (nats-server#4320).

Rules:
- register_twin: one twin per public key.
- create_farm: any twin; farm names are unique (case-insensitive); the signer owns it.
- register_node: the signer twin becomes (or updates) a node of the farm, only with a
  join token signed by the farm's owner, for that farm, not expired, naming the signer
  or any twin (0). A twin already a node of another farm is refused.
- heartbeat: only the node's own twin; sets last_heartbeat and used capacity.
- remove_node: only the owner of the node's farm.
- create_node_contract: any twin, for a node that exists and is up; the signer owns it.
- update_node_contract / cancel_contract / cancel_name_contract: only the contract's
  owner, and only while the contract is not cancelled.
- create_name_contract: the name must be free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from zos.bus.connection import NatsHolder
from zos.bus.errors import BusError, describe_error
from zos.registry.models import (
    CONTRACT_NAME,
    DEPLOYMENT_HASH,
    DOWN_AFTER,
    FARM_NAME,
    MAX_PUBLIC_IPS,
    Capacity,
    Contract,
    ContractEvent,
    Farm,
    HexKey,
    Id,
    JoinToken,
    Location,
    NameContract,
    Node,
    NodeContract,
    PublicConfig,
    Twin,
)
from zos.registry.store import AUDIT_PREFIX, CONTRACTS_PREFIX, TRANSIENT, Mirror, Store
from zos.registry.tx import (
    QUERY_SUBJECT,
    QUEUE_GROUP,
    TX_SUBJECT,
    Transaction,
    fail,
    ok,
)

log = logging.getLogger(__name__)

TWIN = TypeAdapter(Twin)
FARM = TypeAdapter(Farm)
NODE = TypeAdapter(Node)
CONTRACT: TypeAdapter[NodeContract | NameContract] = TypeAdapter(Contract)
INT = TypeAdapter(int)

MAX_LIST = 1000


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterTwinArgs(Args):
    public_key: HexKey


class CreateFarmArgs(Args):
    name: str = Field(pattern=FARM_NAME)


class RegisterNodeArgs(Args):
    farm_id: Id
    token: JoinToken
    capacity: Capacity
    location: Location = Field(default_factory=Location)
    public_config: PublicConfig = Field(default_factory=PublicConfig)


class HeartbeatArgs(Args):
    node_id: Id
    used: Capacity = Field(default_factory=Capacity)


class NodeIdArgs(Args):
    node_id: Id


class CreateNodeContractArgs(Args):
    node_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)
    public_ips: int = Field(default=0, ge=0, le=MAX_PUBLIC_IPS)


class UpdateNodeContractArgs(Args):
    contract_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)


class ContractIdArgs(Args):
    contract_id: Id


class NameArgs(Args):
    name: str = Field(pattern=CONTRACT_NAME)


class IdArgs(Args):
    id: Id


class KeyArgs(Args):
    public_key: HexKey


class FarmNameArgs(Args):
    name: str = Field(min_length=1, max_length=64)


class ListFarmsArgs(Args):
    owner_twin: int | None = None


class TwinIdArgs(Args):
    twin_id: Id


class ListNodesArgs(Args):
    farm_id: int | None = None
    status: Literal["up", "down"] | None = None
    free_cru: int = Field(default=0, ge=0)
    free_mru: int = Field(default=0, ge=0)
    free_sru: int = Field(default=0, ge=0)
    free_hru: int = Field(default=0, ge=0)
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_LIST)


class ListContractsArgs(Args):
    twin_id: int | None = None
    node_id: int | None = None
    state: Literal["created", "deleted"] | None = None
    type: Literal["node", "name"] | None = None
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=MAX_LIST, ge=1, le=MAX_LIST)


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


TxHandler = Callable[[Transaction, Any], Awaitable[Any]]
QueryHandler = Callable[[Any], Awaitable[Any]]


class RegistryService(NatsHolder):
    _nats_name = "zos-registry"

    def __init__(
        self,
        nats_conn: str | list[str] | NATS,
        *,
        replicas: int = 1,
        down_after: float = DOWN_AFTER,
        max_concurrency: int = 256,
        setup_timeout: float = 60.0,
    ) -> None:
        self.setup_timeout = setup_timeout
        self._init_nats(nats_conn)
        self.replicas = replicas
        self.down_after = down_after
        self.max_concurrency = max_concurrency
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._tx: dict[str, tuple[type[Args], TxHandler]] = {
            "register_twin": (RegisterTwinArgs, self._register_twin),
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
        }

    # -- life ------------------------------------------------------------------------

    async def start(self) -> RegistryService:
        nc = await self._open_nats()
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
        self.store = Store(nc.jetstream(timeout=2.0), replicas=self.replicas)
        await self._setup_store()
        self.farms = Mirror(self.store, "farms", FARM)
        self.nodes = Mirror(self.store, "nodes", NODE)
        self.contracts = Mirror(self.store, "contracts", CONTRACT)
        for mirror in (self.farms, self.nodes, self.contracts):
            await mirror.start()
        self._subs = [
            await nc.subscribe(TX_SUBJECT, queue=QUEUE_GROUP, cb=self._on_tx),
            await nc.subscribe(QUERY_SUBJECT, queue=QUEUE_GROUP, cb=self._on_query),
        ]
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

    def _spawn(self, msg: Msg, handle: Callable[[bytes], Awaitable[Any]]) -> None:
        async def run() -> None:
            try:
                answer = ok(await handle(msg.data))
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
                    await msg.respond(answer)

        if len(self._tasks) >= self.max_concurrency:
            if msg.reply:
                busy = fail(BusError("busy", "registry is busy; try again"))
                task = asyncio.create_task(msg.respond(busy))  # type: ignore[arg-type]
            else:
                return
        else:
            task = asyncio.create_task(run())
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    async def _on_tx(self, msg: Msg) -> None:
        self._spawn(msg, self.handle_tx)

    async def _on_query(self, msg: Msg) -> None:
        self._spawn(msg, self.handle_query)

    async def handle_tx(self, data: bytes) -> Any:
        tx = Transaction.parse(data)
        tx.check_time()
        entry = self._tx.get(tx.kind)
        if entry is None:
            raise BusError("malformed", f"unknown transaction kind {tx.kind!r}")
        args_model, handler = entry
        if tx.kind == "register_twin":
            if tx.twin != 0:
                raise BusError("malformed", "register_twin is sent with twin 0")
            key_hex = tx.body.get("public_key")
            if not isinstance(key_hex, str) or len(key_hex) != 64:
                raise BusError("invalid", "public_key: 64 hex characters expected")
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                raise BusError("invalid", "public_key: not hex") from None
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

    async def handle_query(self, data: bytes) -> Any:
        try:
            request = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BusError("malformed", "query is not JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            raise BusError("malformed", "query must be {'query': name, 'args': {...}}")
        entry = self._queries.get(request["query"])
        if entry is None:
            raise BusError("not_found", f"unknown query {request['query']!r}")
        args_model, handler = entry
        try:
            args = args_model.model_validate(request.get("args") or {})
        except ValidationError as e:
            raise BusError("invalid", f"{request['query']}: {describe_error(e)}") from None
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

    async def _contract_event(self, tx: Transaction, kind: str, contract: NodeContract) -> None:
        event = ContractEvent(kind=kind, contract=contract, at=time.time())  # type: ignore[arg-type]
        await self.store.publish(
            f"{CONTRACTS_PREFIX}.{contract.node_id}", _json(event), msg_id=f"{tx.id}.contract"
        )

    # -- transactions ----------------------------------------------------------------

    async def _register_twin(self, tx: Transaction, args: RegisterTwinArgs) -> Any:
        existing = await self.store.get_int("twin-keys", args.public_key)
        if existing is not None:
            raise BusError("conflict", f"this key is already twin {existing}")
        twin_id = await self.store.next_id("twin")
        if await self.store.create("twin-keys", args.public_key, twin_id) is None:
            raise BusError("conflict", "this key was registered at the same moment")
        twin = Twin(id=twin_id, public_key=args.public_key, created=time.time())
        await self.store.create_new("twins", twin_id, twin)
        return _json(twin)

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
        twin_id = await self.store.get_int("twin-keys", args.public_key)
        twin = await self._twin(twin_id) if twin_id is not None else None
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


def key_hex_of(key: bytes) -> str:
    return f"key {key.hex()[:16]}..."


def _kv_key(text: str) -> bool:
    return bool(text) and all(ch.isalnum() or ch in "-_" for ch in text) and text.isascii()
