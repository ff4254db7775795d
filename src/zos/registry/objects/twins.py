"""Twins: an identity on the grid, one per ed25519 public key.

- register_twin: one twin per public key, on that key's own registration subject; for a
  key that already is a twin it answers that twin (`created` false).
- rotate_key: the twin's current key signs it, the new key signs the rotation
  (`models.rotation_message`) and is no twin yet; a signed KeyChange event tells every
  node, hub and client cache to forget the old key.

Buckets: `twins` (id -> Twin) and `twin-keys` (public key hex -> twin id).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from zos.bus.errors import BusError
from zos.bus.subjects import KEY_EVENTS
from zos.identity import verify_ed25519
from zos.registry.models import HexKey, KeyChange, Twin, rotation_message
from zos.registry.objects.base import TWIN, Args, Context, IdArgs, ObjectRules, dumped
from zos.registry.store import KEYCHANGES_PREFIX
from zos.registry.tx import Transaction

RULES = ObjectRules("twins")


class RegisterTwinArgs(Args):
    public_key: HexKey


class RotateKeyArgs(Args):
    new_key: HexKey
    proof: str = Field(pattern=r"^[0-9a-f]{128}$")  # the new key's signature of the rotation


class KeyArgs(Args):
    public_key: HexKey


async def get(ctx: Context, twin_id: int) -> Twin | None:
    got = await ctx.store.get("twins", twin_id, TWIN)
    return got[0] if got else None


async def of_key(ctx: Context, key_hex: str) -> Twin | None:
    """The twin whose key this is now (an index left by a crashed rotation is not)."""
    twin_id = await ctx.store.get_int("twin-keys", key_hex)
    twin = await get(ctx, twin_id) if twin_id is not None else None
    return twin if twin is not None and twin.public_key == key_hex else None


@RULES.tx("register_twin", RegisterTwinArgs, route="register")
async def register_twin(ctx: Context, tx: Transaction, args: RegisterTwinArgs) -> Any:
    existing = await of_key(ctx, args.public_key)
    if existing is not None:
        return {"twin": dumped(existing), "created": False}
    twin_id = await ctx.store.next_id("twin")
    if await ctx.store.create("twin-keys", args.public_key, twin_id) is None:
        raise BusError("conflict", "this key was registered at the same moment; ask again")
    twin = Twin(id=twin_id, public_key=args.public_key, created=time.time())
    await ctx.store.create_new("twins", twin_id, twin)
    return {"twin": dumped(twin), "created": True}


@RULES.tx("rotate_key", RotateKeyArgs)
async def rotate_key(ctx: Context, tx: Transaction, args: RotateKeyArgs) -> Any:
    twin = await get(ctx, tx.twin)
    assert twin is not None  # the transaction was signed by its key
    old, new = twin.public_key, args.new_key
    if new == old:
        raise BusError("invalid", "new_key: is the twin's current key")
    if not verify_ed25519(
        bytes.fromhex(new), rotation_message(twin.id, old, new), bytes.fromhex(args.proof)
    ):
        raise BusError("forbidden", "proof: not signed by new_key for this rotation")
    taken = await ctx.store.create("twin-keys", new, twin.id) is None
    if taken and await ctx.store.get_int("twin-keys", new) != twin.id:  # not our retry
        raise BusError("conflict", "new_key: is already another twin's key")

    def change(current: Twin) -> Twin:
        if current.public_key != old:
            raise BusError("conflict", f"twin {twin.id}'s key changed meanwhile")
        return current.model_copy(update={"public_key": new})

    rotated, _ = await ctx.store.update("twins", twin.id, TWIN, change)
    await ctx.store.delete("twin-keys", old)
    change_event = KeyChange(twin_id=twin.id, old_key=old, new_key=new, at=time.time())
    await ctx.event(
        f"{KEYCHANGES_PREFIX}.{twin.id}", KEY_EVENTS, change_event, msg_id=f"{tx.id}.key"
    )
    return dumped(rotated)


@RULES.query("get_twin", IdArgs)
async def get_twin(ctx: Context, args: IdArgs) -> Any:
    twin = await get(ctx, args.id)
    if twin is None:
        raise BusError("not_found", f"twin {args.id} does not exist")
    return dumped(twin)


@RULES.query("twin_by_key", KeyArgs)
async def twin_by_key(ctx: Context, args: KeyArgs) -> Any:
    twin = await of_key(ctx, args.public_key)
    return dumped(twin) if twin else None
