"""The node's bus commands for data keys: unlock, share, unshare, encryption.

- `zos.deployment.unlock` `{"contract_id", "key", "copies"?}`: `key` is a key message
  (`zos.identity.datakey.seal_for_node`) sealed to this node. The first one, from the
  contract's owner before the deployment is sent, makes the deployment encrypted; it
  carries `copies` (`{twin: copy sealed to that twin}`, the owner's own at least), which
  the node keeps and cannot open. Later ones (after a reboot locked the deployment) may
  come from the owner or a twin it is shared with, and must be the same key.
- `zos.deployment.share` `{"contract_id", "twin", "copy"}` (owner only): `twin` may
  unlock from now on, with `copy`, the key sealed to it by the owner's client.
- `zos.deployment.unshare` `{"contract_id", "twin"}` (owner only): it may not any more.
- `zos.deployment.encryption` `{"contract_id"}` (owner or a twin shared with):
  `{"contract_id", "owner", "encrypted", "locked", "copy", "shared"}`; `copy` is the
  sender's sealed copy, `shared` (for the owner) the teammates.

A key message is refused when it is not 32 bytes, sealed to another node, signed by
another twin than the sender, for another node or deployment, older than 5 minutes,
seen before, not the deployment's key, or from a twin that may not unlock; nothing
changes then. The key goes to the kernel (`KeyStore.give`) and nowhere else: it is
never logged, and no answer contains it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, TypeVar

from zos.bus import BusError, Request, Router
from zos.identity import Identity
from zos.identity.datakey import (
    MAX_AGE_MS,
    MAX_SKEW_MS,
    DataKeyError,
    b64decode,
    check_fresh,
    open_for_node,
)
from zos.node.api import check_served
from zos.node.keystore import Entry, KeyStore, KeyStoreError
from zos.node.services import ContractInfo
from zos.node.store import ACTIVE, DELETED, Store
from zos.nodeapi import commands as api
from zos.nodeapi.commands import (
    MAX_COPIES,
    ContractArgs,
    Encryption,
    ShareArgs,
    UnlockArgs,
    Unlocked,
    UnshareArgs,
    parse,
)

log = logging.getLogger(__name__)


class Grid(Protocol):
    async def twin_key(self, twin_id: int) -> bytes | None: ...

    async def node_contract(self, contract_id: int) -> ContractInfo | None: ...


class Engine(Protocol):
    store: Store

    def resume(self, contract_id: int) -> None: ...


Teammate = TypeVar("Teammate", bound=UnshareArgs)


def keys_router(
    engine: Engine, keys: KeyStore, grid: Grid, identity: Identity, node_twin: int, node_id: int
) -> Router:
    """The commands above, for the node with this identity, twin id and node id."""
    router = Router()

    def not_found(sender: int, contract_id: int) -> BusError:
        return BusError(
            "not_found", f"contract_id {contract_id}: twin {sender} has no such deployment"
        )

    async def first_key(sender: int, contract_id: int, copies: dict[int, str]) -> None:
        """The first key of a deployment: only its contract's owner may give it."""
        rec = engine.store.get(contract_id)
        if rec is not None:
            if rec.twin_id != sender:
                raise not_found(sender, contract_id)
            raise BusError(
                "conflict",
                f"contract_id {contract_id}: deployed without a data key, so its data is not "
                "encrypted; a key cannot be added to it afterwards",
            )
        contract = await grid.node_contract(contract_id)
        if contract is None or contract.owner_twin != sender:
            raise BusError(
                "forbidden",
                f"contract_id {contract_id}: not a node contract of twin {sender}: only the "
                "owner gives a deployment its key",
            )
        if contract.node_id != node_id:
            raise BusError("invalid", f"contract_id {contract_id}: is for another node")
        if not contract.active:
            raise BusError("invalid", f"contract_id {contract_id}: the contract is cancelled")
        if sender not in copies:
            raise BusError(
                "invalid",
                "copies: the owner's own sealed copy is required (without it nobody could "
                "unlock the deployment after a reboot)",
            )
        for twin, sealed in copies.items():
            await check_copy(twin, sealed, f"copies.{twin}")

    async def check_copy(twin: int, sealed: str, where: str) -> None:
        if await grid.twin_key(twin) is None:
            raise BusError("invalid", f"{where}: twin {twin} is not registered")
        try:
            b64decode(sealed, where)
        except DataKeyError as e:
            raise BusError("invalid", str(e)) from None

    @router.command(api.UNLOCK)
    async def unlock(req: Request) -> Any:
        args = parse(UnlockArgs, req.payload)
        sender, cid = req.source_twin, args.contract_id
        sender_key = await grid.twin_key(sender)
        if sender_key is None:
            raise BusError("forbidden", f"twin {sender} is not registered")
        try:
            message = open_for_node(identity, args.key, sender_key)
            if message.node != node_twin:
                raise DataKeyError(
                    f"key: node: the key is meant for node twin {message.node}, this is {node_twin}"
                )
            if message.twin != sender:
                raise DataKeyError(f"key: twin: made by twin {message.twin}, sent by {sender}")
            if message.contract_id != cid:
                raise DataKeyError(
                    f"key: contract_id: the key is for deployment {message.contract_id}, not {cid}"
                )
            check_fresh(message)
        except DataKeyError as e:
            log.warning("deployment %s: key from twin %s refused: %s", cid, sender, e)
            raise BusError("invalid", str(e)) from None
        entry = keys.entry(cid)
        rec = engine.store.get(cid)
        if entry is None:
            await first_key(sender, cid, args.copies)
            owner = sender
        else:
            if sender != entry.owner and sender not in entry.copies:
                log.warning("deployment %s: unlock by twin %s refused (not allowed)", cid, sender)
                raise BusError(
                    "forbidden",
                    f"contract_id {cid}: twin {sender} may not unlock this deployment "
                    "(neither its owner nor shared with)",
                )
            if rec is not None and rec.state == DELETED:
                raise not_found(sender, cid)
            owner = entry.owner
        try:
            keys.see_nonce(message.nonce, (MAX_AGE_MS + MAX_SKEW_MS) / 1000)
            was_locked = keys.give(cid, owner, message.key, args.copies if entry is None else None)
        except KeyStoreError as e:
            log.warning("deployment %s: key from twin %s refused: %s", cid, sender, e.message)
            raise BusError(e.code, e.message) from None
        if was_locked and rec is not None and rec.state == ACTIVE:
            log.info("deployment %s: unlocked by twin %s", cid, sender)
            engine.resume(cid)
        return Unlocked(contract_id=cid, encrypted=True, locked=False).model_dump()

    def owned_entry(sender: int, cid: int) -> Entry:
        entry = keys.entry(cid)
        if entry is None or entry.owner != sender:
            raise not_found(sender, cid)
        return entry

    def teammate(req: Request, model: type[Teammate], owner_rule: str) -> tuple[Teammate, Entry]:
        """The owner's request about a teammate (`twin`), and the deployment's entry."""
        args = parse(model, req.payload)
        entry = owned_entry(req.source_twin, args.contract_id)
        if args.twin == entry.owner:
            raise BusError("invalid", f"twin: {owner_rule}")
        return args, entry

    @router.command(api.SHARE)
    async def share(req: Request) -> Any:
        args, entry = teammate(req, ShareArgs, "the owner can always unlock its deployment")
        if args.twin not in entry.copies and len(entry.copies) >= MAX_COPIES:
            raise BusError("capacity", f"twin: shared with {MAX_COPIES} twins already")
        await check_copy(args.twin, args.copy_, "copy")
        keys.share(args.contract_id, args.twin, args.copy_)
        log.info("deployment %s: shared with twin %s", args.contract_id, args.twin)
        return None

    @router.command(api.UNSHARE)
    async def unshare(req: Request) -> Any:
        args, _ = teammate(req, UnshareArgs, "the owner cannot be removed")
        if not keys.unshare(args.contract_id, args.twin):
            raise BusError("not_found", f"twin: the deployment is not shared with {args.twin}")
        log.info("deployment %s: no longer shared with twin %s", args.contract_id, args.twin)
        return None

    @router.command(api.ENCRYPTION)
    async def encryption(req: Request) -> Any:
        args = parse(ContractArgs, req.payload)
        sender, cid = req.source_twin, args.contract_id
        entry = keys.entry(cid)
        if entry is None:
            rec = engine.store.get(cid)
            if rec is None or rec.twin_id != sender:
                raise not_found(sender, cid)
            status = Encryption(contract_id=cid, owner=sender, encrypted=False, locked=False)
            return status.model_dump(by_alias=True)
        if sender != entry.owner and sender not in entry.copies:
            raise not_found(sender, cid)
        shared = [t for t in entry.copies if t != entry.owner] if sender == entry.owner else []
        return Encryption.model_validate(
            {
                "contract_id": cid,
                "owner": entry.owner,
                "encrypted": True,
                "locked": keys.locked(cid),
                "copy": entry.copies.get(sender),
                "shared": sorted(shared),
            }
        ).model_dump(by_alias=True)

    check_served(router, api.KEY_COMMANDS)
    return router
