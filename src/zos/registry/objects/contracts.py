"""What node and name contracts share: one id space, one bucket, cancelling, listing.

- cancel_contract: only the contract's owner, and only while the contract is not
  cancelled; then whatever its type's module says a cancel does (`ObjectRules.cancelled`:
  a node contract's node is told, a name is released).

Bucket: `contracts` (id -> NodeContract | NameContract); listed from its mirror.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from zos.bus.errors import BusError
from zos.registry.models import Id, NameContract, NodeContract
from zos.registry.objects.base import (
    CONTRACT,
    MAX_LIST,
    Args,
    Context,
    IdArgs,
    ObjectRules,
    dumped,
)
from zos.registry.tx import Transaction

RULES = ObjectRules("contracts")


class ContractIdArgs(Args):
    contract_id: Id


class ListContractsArgs(Args):
    twin_id: int | None = None
    node_id: int | None = None
    state: Literal["created", "deleted"] | None = None
    type: Literal["node", "name"] | None = None
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=MAX_LIST, ge=1, le=MAX_LIST)


async def get(ctx: Context, contract_id: int) -> NodeContract | NameContract:
    got = await ctx.store.get("contracts", contract_id, CONTRACT)
    if got is None:
        raise BusError("not_found", f"contract {contract_id} does not exist")
    return got[0]


def check_owned_live(contract: NodeContract | NameContract, twin: int) -> None:
    """Only its owner changes a contract, and only while it is not cancelled."""
    if contract.owner_twin != twin:
        raise BusError(
            "forbidden",
            f"contract {contract.id} belongs to twin {contract.owner_twin}, not {twin}",
        )
    if contract.state != "created":
        raise BusError("conflict", f"contract {contract.id} is cancelled")


async def cancel(ctx: Context, tx: Transaction, contract_id: int) -> NodeContract | NameContract:
    def change(contract: NodeContract | NameContract) -> NodeContract | NameContract:
        check_owned_live(contract, tx.twin)
        return contract.model_copy(update={"state": "deleted", "updated": time.time()})

    contract, rev = await ctx.store.update("contracts", contract_id, CONTRACT, change)
    ctx.contracts.apply(str(contract.id), rev, contract)
    hook = ctx.on_cancel.get(contract.type)
    if hook is not None:
        await hook(ctx, tx, contract)
    return contract


@RULES.tx("cancel_contract", ContractIdArgs)
async def cancel_contract(ctx: Context, tx: Transaction, args: ContractIdArgs) -> Any:
    return dumped(await cancel(ctx, tx, args.contract_id))


@RULES.query("get_contract", IdArgs)
async def get_contract(ctx: Context, args: IdArgs) -> Any:
    return dumped(await get(ctx, args.id))


@RULES.query("list_contracts", ListContractsArgs)
async def list_contracts(ctx: Context, args: ListContractsArgs) -> Any:
    skip, found = args.offset, []
    for c in ctx.contracts.values():
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
        found.append(ctx.contracts.dumped(str(c.id)))
        if len(found) == args.limit:
            break
    return found
