"""Node contracts: a twin's deployment on one node, by the deployment's hash.

- create_node_contract: any twin, for a node that exists and is up; the signer owns it.
- update_node_contract: only the contract's owner, while it is not cancelled.

Each change (created, updated, cancelled) is a ContractEvent stored in the stream at
`zos.registry.contracts.<node id>` and pushed, signed, with its stream sequence to
`zos.registry.events.<node id>`; a node that was away asks `contract_events` from the
last sequence it handled.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from zos.bus.errors import BusError
from zos.bus.subjects import node_events_subject
from zos.registry.models import (
    DEPLOYMENT_HASH,
    MAX_PUBLIC_IPS,
    ContractEvent,
    Id,
    NameContract,
    NodeContract,
)
from zos.registry.objects import contracts, nodes
from zos.registry.objects.base import CONTRACT, MAX_LIST, Args, Context, ObjectRules, dumped
from zos.registry.store import CONTRACTS_PREFIX
from zos.registry.tx import Transaction

RULES = ObjectRules("node contracts")


class CreateNodeContractArgs(Args):
    node_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)
    public_ips: int = Field(default=0, ge=0, le=MAX_PUBLIC_IPS)


class UpdateNodeContractArgs(Args):
    contract_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)


class ContractEventsArgs(Args):
    node_id: Id
    after_seq: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_LIST)


async def _announce(ctx: Context, tx: Transaction, kind: str, contract: NodeContract) -> None:
    event = ContractEvent(kind=kind, contract=contract, at=time.time())  # type: ignore[arg-type]
    await ctx.event(
        f"{CONTRACTS_PREFIX}.{contract.node_id}",
        node_events_subject(contract.node_id),
        event,
        msg_id=f"{tx.id}.contract",
    )


@RULES.cancelled("node")
async def _cancelled(ctx: Context, tx: Transaction, contract: NodeContract) -> None:
    await _announce(ctx, tx, "cancelled", contract)


@RULES.tx("create_node_contract", CreateNodeContractArgs)
async def create_node_contract(ctx: Context, tx: Transaction, args: CreateNodeContractArgs) -> Any:
    node = await nodes.get(ctx, args.node_id)
    if node.status != "up":
        ago = time.time() - node.last_heartbeat
        raise BusError("unavailable", f"node {node.id} is down (last heartbeat {ago:.0f}s ago)")
    now = time.time()
    contract_id = await ctx.store.next_id("contract")
    contract = NodeContract(
        id=contract_id,
        node_id=node.id,
        owner_twin=tx.twin,
        deployment_hash=args.deployment_hash,
        public_ips=args.public_ips,
        created=now,
        updated=now,
    )
    rev = await ctx.store.create_new("contracts", contract_id, contract)
    ctx.contracts.apply(str(contract_id), rev, contract)
    await _announce(ctx, tx, "created", contract)
    return dumped(contract)


@RULES.tx("update_node_contract", UpdateNodeContractArgs)
async def update_node_contract(ctx: Context, tx: Transaction, args: UpdateNodeContractArgs) -> Any:
    def change(contract: NodeContract | NameContract) -> NodeContract:
        if not isinstance(contract, NodeContract):
            raise BusError("invalid", f"contract {contract.id} is a name contract")
        contracts.check_owned_live(contract, tx.twin)
        return contract.model_copy(
            update={"deployment_hash": args.deployment_hash, "updated": time.time()}
        )

    contract, rev = await ctx.store.update("contracts", args.contract_id, CONTRACT, change)
    ctx.contracts.apply(str(contract.id), rev, contract)
    assert isinstance(contract, NodeContract)
    await _announce(ctx, tx, "updated", contract)
    return dumped(contract)


@RULES.query("contract_events", ContractEventsArgs)
async def contract_events(ctx: Context, args: ContractEventsArgs) -> Any:
    found = await ctx.store.read_stream(
        f"{CONTRACTS_PREFIX}.{args.node_id}", args.after_seq, args.limit
    )
    events = []
    for seq, body in found:
        event = ContractEvent.model_validate_json(body)
        events.append({**dumped(event), "seq": seq})
    return events
