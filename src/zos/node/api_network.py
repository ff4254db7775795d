"""The node's bus commands about its networking (reference/network.md), for clients
that plan a twin's network across nodes:

- `zos.network.list_wg_ports` -> the UDP ports this node's WireGuard interfaces hold or
  its network workloads reserve (a new network must pick another);
- `zos.network.public_config_get` -> `{type, ipv4, ipv6, gw4, gw6, domain}` as the
  farmer set it in the registry; `not_found` when the node has none;
- `zos.network.interfaces` -> `{"zos": [ips], "ygg": [ips]}`: the node's public side
  (where other nodes reach its WireGuard ports), and its Yggdrasil addresses (none);
- `zos.network.list_private_ips {network_name}` -> the addresses of the sender's
  machines on the sender's network of that name;
- `zos.network.wg_peers {network_name}` -> `{public key: latest handshake}` (unix
  seconds, 0: never) of that network's interface here.

The last two are the sender's only: a network is found by the id its owner's twin and
its name make (`network_id`), so another twin's request names another network, which
is not here (`not_found`), and learns nothing of the owner's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zos.bus import BusError, Request, Router
from zos.node.api import check_served
from zos.node.errors import WorkloadError
from zos.node.networks import Networks
from zos.node.services import RegistryView
from zos.nodeapi import commands as api
from zos.nodeapi.commands import Interfaces, NetworkArgs, PublicConfig, parse
from zos.primitives.hostaddr import primary_ipv4


def network_router(networks: Networks, grid: RegistryView | None) -> Router:
    router = Router()

    def lookup(req: Request) -> Any:
        name = parse(NetworkArgs, req.payload).network_name
        try:
            return networks.lookup(req.source_twin, name)
        except WorkloadError as e:
            raise BusError("not_found", str(e)) from None

    @router.command(api.LIST_WG_PORTS)
    async def list_wg_ports(req: Request) -> Any:
        return await networks.taken_ports()

    @router.command(api.PUBLIC_CONFIG)
    async def public_config_get(req: Request) -> Any:
        config = await grid.public_config() if grid is not None else None
        if config is None or not config.ipv4:
            raise BusError("not_found", "this node has no public config")
        return PublicConfig.model_validate(config.model_dump()).model_dump()

    @router.command(api.INTERFACES)
    async def interfaces(req: Request) -> Any:
        ip = await asyncio.to_thread(primary_ipv4)
        return Interfaces(zos=[ip] if ip else []).model_dump()

    @router.command(api.LIST_PRIVATE_IPS)
    async def list_private_ips(req: Request) -> Any:
        info = lookup(req)
        return [str(a.address.ip) for a in networks.attachments(info.netid)]

    @router.command(api.WG_PEERS)
    async def wg_peers(req: Request) -> Any:
        info = lookup(req)
        status = await networks.wireguard.status(info.netid)
        return {p.public_key: p.latest_handshake for p in status.peers} if status else {}

    check_served(router, api.NETWORK_COMMANDS)
    return router
