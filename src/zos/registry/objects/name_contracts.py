"""Name contracts: a name on the grid (a gateway's `<name>.<domain>`), one owner twin.

- create_name_contract: the name must be free.
- cancel_name_contract (or cancel_contract with its id): only the owner, while the
  contract is not cancelled; the name is then free again.

Bucket: `names` (name -> contract id, live name contracts only); the contract itself is
in `contracts`.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from zos.bus.errors import BusError
from zos.registry.models import CONTRACT_NAME, NameContract
from zos.registry.objects import contracts
from zos.registry.objects.base import CONTRACT, Args, Context, ObjectRules, dumped
from zos.registry.tx import Transaction

RULES = ObjectRules("name contracts")


class NameArgs(Args):
    name: str = Field(pattern=CONTRACT_NAME)


async def _contract_id(ctx: Context, name: str) -> int:
    contract_id = await ctx.store.get_int("names", name)
    if contract_id is None:
        raise BusError("not_found", f"no name contract for {name!r}")
    return contract_id


async def _taken(ctx: Context, name: str, contract_id: int | None) -> BusError:
    """The refusal of a name already taken, naming its owner twin where known."""
    got = await ctx.store.get("contracts", contract_id, CONTRACT) if contract_id else None
    if got is None:  # its contract is not written yet (or was lost in a crash)
        return BusError("conflict", f"name {name!r} is taken")
    return BusError(
        "conflict", f"name {name!r} is taken by twin {got[0].owner_twin} (contract {contract_id})"
    )


@RULES.cancelled("name")
async def _release(ctx: Context, tx: Transaction, contract: NameContract) -> None:
    await ctx.store.delete("names", contract.name)


@RULES.tx("create_name_contract", NameArgs)
async def create_name_contract(ctx: Context, tx: Transaction, args: NameArgs) -> Any:
    existing = await ctx.store.get_int("names", args.name)
    if existing is not None:
        raise await _taken(ctx, args.name, existing)
    contract_id = await ctx.store.next_id("contract")
    if await ctx.store.create("names", args.name, contract_id) is None:
        # Taken at the same moment: by whom, once its contract is written.
        raced = await ctx.store.get_int("names", args.name)
        raise await _taken(ctx, args.name, raced)
    now = time.time()
    contract = NameContract(
        id=contract_id, name=args.name, owner_twin=tx.twin, created=now, updated=now
    )
    rev = await ctx.store.create_new("contracts", contract_id, contract)
    ctx.contracts.apply(str(contract_id), rev, contract)
    return dumped(contract)


@RULES.tx("cancel_name_contract", NameArgs)
async def cancel_name_contract(ctx: Context, tx: Transaction, args: NameArgs) -> Any:
    return dumped(await contracts.cancel(ctx, tx, await _contract_id(ctx, args.name)))


@RULES.query("get_name_contract", NameArgs)
async def get_name_contract(ctx: Context, args: NameArgs) -> Any:
    return dumped(await contracts.get(ctx, await _contract_id(ctx, args.name)))
