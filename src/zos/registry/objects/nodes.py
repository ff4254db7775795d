"""Nodes: a machine of a farm, with its own twin, and its heartbeats.

- register_node: the signer twin becomes (or updates) a node of the farm, only with a
  join token signed by the farm's owner, for that farm, not expired, naming the signer
  or any twin (0). A twin already a node of another farm is refused.
- remove_node: only the owner of the node's farm.
- set_node_public_config: only the owner of the node's farm sets (or, with an empty
  config, clears) the node's public config: an IPv4 with its gateway, optionally an
  IPv6 with its own, optionally a domain (`PublicConfig.check_complete`). A node with
  an IPv4 and a domain serves gateways (`list_nodes` with `gateway`). A registration
  that names no public config keeps the one the node has.

Heartbeats are no transaction: a node appends its signed status to its own subject in
the heartbeat stream (`zos.registry.heartbeats`, where a status's rules are), and
nats-server lets only that node publish there (`roles`).

Buckets: `nodes` (id -> Node) and `node-twins` (twin id -> node id). A node's status
(up/down, used capacity, last heartbeat) is what it last signed, as the service's node
index (`zos.registry.index`) read it from the stream; `get_node` and `list_nodes` (by
farm, status, free capacity, gateway; pages from `after_id`, then `offset`) answer
from that index.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field, field_validator

from zos.bus.errors import BusError
from zos.registry.models import Capacity, Id, JoinToken, Location, Node, PublicConfig
from zos.registry.objects import farms, twins
from zos.registry.objects.base import MAX_LIST, NODE, Args, Context, IdArgs, ObjectRules, dumped
from zos.registry.tx import Transaction

RULES = ObjectRules("nodes")


class RegisterNodeArgs(Args):
    farm_id: Id
    token: JoinToken
    capacity: Capacity
    location: Location = Field(default_factory=Location)
    public_config: PublicConfig = Field(default_factory=PublicConfig)


class NodeIdArgs(Args):
    node_id: Id


class SetPublicConfigArgs(Args):
    node_id: Id
    public_config: PublicConfig  # every field empty: the node has none

    @field_validator("public_config")
    @classmethod
    def _complete(cls, config: PublicConfig) -> PublicConfig:
        config.check_complete()
        return config


class TwinIdArgs(Args):
    twin_id: Id


class ListNodesArgs(Args):
    farm_id: int | None = None
    status: Literal["up", "down"] | None = None
    free_cru: int = Field(default=0, ge=0)
    free_mru: int = Field(default=0, ge=0)
    free_sru: int = Field(default=0, ge=0)
    free_hru: int = Field(default=0, ge=0)
    gateway: bool | None = None  # only nodes that serve gateways (True) or do not (False)
    after_id: int = Field(default=0, ge=0)  # a page starts after this node id
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_LIST)


async def get(ctx: Context, node_id: int) -> Node:
    """The node with its status now (from its last signed heartbeat); not_found if
    there is none."""
    got = await ctx.store.get("nodes", node_id, NODE)
    if got is None:
        raise BusError("not_found", f"node {node_id} does not exist")
    return await ctx.index.node(got[0])


async def of_twin(ctx: Context, twin_id: int) -> Node | None:
    """The node that is this twin (an index to a removed node is not)."""
    node_id = await ctx.store.get_int("node-twins", str(twin_id))
    got = await ctx.store.get("nodes", node_id, NODE) if node_id is not None else None
    return got[0] if got is not None and got[0].twin_id == twin_id else None


@RULES.tx("register_node", RegisterNodeArgs)
async def register_node(ctx: Context, tx: Transaction, args: RegisterNodeArgs) -> Any:
    farm = await farms.get(ctx, args.farm_id)
    token = args.token
    if token.farm_id != farm.id:
        raise BusError("forbidden", f"join token is for farm {token.farm_id}, not {farm.id}")
    registry_key = ctx.signer.public_key.hex()
    if token.registry_key != registry_key:
        raise BusError(
            "forbidden",
            f"join token names registry key {token.registry_key[:16]}..., "
            f"this registry's is {registry_key[:16]}...",
        )
    if token.node_twin not in (0, tx.twin):
        raise BusError("forbidden", f"join token is for twin {token.node_twin}, not {tx.twin}")
    now = time.time()
    if token.expires < now:
        raise BusError("forbidden", "join token has expired")
    owner = await twins.get(ctx, farm.owner_twin)
    if owner is None or not token.verify(owner.public_key_bytes):
        raise BusError("forbidden", f"join token is not signed by farm {farm.id}'s owner")

    # What a registration sets, on a new node or one registered before (which keeps its
    # public config unless the registration names one).
    told: dict[str, Any] = {
        "capacity": args.capacity,
        "location": args.location,
        "last_heartbeat": now,
    }
    if "public_config" in args.model_fields_set:
        told["public_config"] = args.public_config

    def refresh(node: Node) -> Node:
        if node.farm_id != farm.id:
            raise BusError(
                "conflict", f"twin {tx.twin} is already node {node.id} of farm {node.farm_id}"
            )
        return node.model_copy(update=told)

    node_id = await ctx.store.get_int("node-twins", str(tx.twin))
    if node_id is None:
        node_id = await ctx.store.next_id("node")
        if await ctx.store.create("node-twins", tx.twin, node_id) is None:
            raise BusError("conflict", f"twin {tx.twin} registered as a node at the same time")
        node = Node(id=node_id, farm_id=farm.id, twin_id=tx.twin, created=now, **told)
        rev = await ctx.store.create_new("nodes", node_id, node)
    else:
        node, rev = await ctx.store.update("nodes", node_id, NODE, refresh)
    ctx.nodes.apply(str(node_id), rev, node)
    return dumped(node.with_status(time.time(), ctx.down_after))


@RULES.tx("remove_node", NodeIdArgs)
async def remove_node(ctx: Context, tx: Transaction, args: NodeIdArgs) -> Any:
    node = await _farmers_node(ctx, tx, args.node_id, "removes nodes")
    rev = await ctx.store.delete("nodes", node.id)
    ctx.nodes.apply(str(node.id), rev, None)
    await ctx.store.delete("node-twins", node.twin_id)
    return {"node_id": node.id, "removed": True}


@RULES.tx("set_node_public_config", SetPublicConfigArgs)
async def set_node_public_config(ctx: Context, tx: Transaction, args: SetPublicConfigArgs) -> Any:
    node = await _farmers_node(ctx, tx, args.node_id, "sets a node's public config")

    def configure(current: Node) -> Node:
        return current.model_copy(update={"public_config": args.public_config})

    changed, rev = await ctx.store.update("nodes", node.id, NODE, configure)
    ctx.nodes.apply(str(node.id), rev, changed)
    return dumped(await ctx.index.node(changed))


async def _farmers_node(ctx: Context, tx: Transaction, node_id: int, what: str) -> Node:
    """The node, when the transaction's twin owns its farm (only its owner `what`)."""
    node = await get(ctx, node_id)
    farm = await farms.get(ctx, node.farm_id)
    if farm.owner_twin != tx.twin:
        raise BusError("forbidden", f"only farm {farm.id}'s owner (twin {farm.owner_twin}) {what}")
    return node


@RULES.query("get_node", IdArgs)
async def get_node(ctx: Context, args: IdArgs) -> Any:
    return dumped(await get(ctx, args.id))


@RULES.query("node_by_twin", TwinIdArgs)
async def node_by_twin(ctx: Context, args: TwinIdArgs) -> Any:
    node_id = await ctx.store.get_int("node-twins", str(args.twin_id))
    if node_id is None:
        return None
    try:
        return dumped(await get(ctx, node_id))
    except BusError:
        return None


@RULES.query("list_nodes", ListNodesArgs)
async def list_nodes(ctx: Context, args: ListNodesArgs) -> Any:
    return await ctx.index.search(args)
