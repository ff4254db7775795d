"""Farms: a farmer's group of nodes, owned by one twin.

- create_farm: any twin; farm names are unique (case-insensitive); the signer owns it.

Buckets: `farms` (id -> Farm) and `farm-names` (lowercase name -> farm id); listed from
the `farms` mirror.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from zos.bus.errors import BusError
from zos.registry.models import FARM_NAME, Farm
from zos.registry.objects.base import FARM, Args, Context, IdArgs, ObjectRules, dumped
from zos.registry.tx import Transaction

RULES = ObjectRules("farms")


class CreateFarmArgs(Args):
    name: str = Field(pattern=FARM_NAME)


class FarmNameArgs(Args):
    name: str = Field(min_length=1, max_length=64)


class ListFarmsArgs(Args):
    owner_twin: int | None = None


async def get(ctx: Context, farm_id: int) -> Farm:
    got = await ctx.store.get("farms", farm_id, FARM)
    if got is None:
        raise BusError("not_found", f"farm {farm_id} does not exist")
    return got[0]


@RULES.tx("create_farm", CreateFarmArgs)
async def create_farm(ctx: Context, tx: Transaction, args: CreateFarmArgs) -> Any:
    name_key = args.name.lower()
    existing = await ctx.store.get_int("farm-names", name_key)
    if existing is not None:
        raise BusError("conflict", f"farm name {args.name!r} is taken (farm {existing})")
    farm_id = await ctx.store.next_id("farm")
    if await ctx.store.create("farm-names", name_key, farm_id) is None:
        raise BusError("conflict", f"farm name {args.name!r} is taken")
    farm = Farm(id=farm_id, name=args.name, owner_twin=tx.twin, created=time.time())
    rev = await ctx.store.create_new("farms", farm_id, farm)
    ctx.farms.apply(str(farm_id), rev, farm)
    return dumped(farm)


@RULES.query("get_farm", IdArgs)
async def get_farm(ctx: Context, args: IdArgs) -> Any:
    return dumped(await get(ctx, args.id))


@RULES.query("farm_by_name", FarmNameArgs)
async def farm_by_name(ctx: Context, args: FarmNameArgs) -> Any:
    name = args.name.lower()
    farm_id = await ctx.store.get_int("farm-names", name) if _kv_key(name) else None
    if farm_id is None:
        raise BusError("not_found", f"no farm named {args.name!r}")
    return dumped(await get(ctx, farm_id))


@RULES.query("list_farms", ListFarmsArgs)
async def list_farms(ctx: Context, args: ListFarmsArgs) -> Any:
    return [
        ctx.farms.dumped(str(f.id))
        for f in ctx.farms.values()
        if args.owner_twin in (None, f.owner_twin)
    ]


def _kv_key(text: str) -> bool:
    return bool(text) and all(ch.isalnum() or ch in "-_" for ch in text) and text.isascii()
