"""`NodeClient`: one node's bus API, typed, over a twin's `BusClient`.

A user talks to many nodes over one bus connection, so a NodeClient is light: the bus
client and the node's twin id. Every refusal is the node's `BusError` (its code says
why: invalid, forbidden, not_found, conflict, capacity, ...; `unreachable` or `timeout`
when the node does not answer). An answer that does not read as the contract says is
`malformed`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from zos.bus.client import BusClient
from zos.bus.errors import BusError
from zos.gridtypes import Deployment
from zos.nodeapi import commands as api

DEFAULT_TIMEOUT = 30.0
A = TypeVar("A", bound=BaseModel)


class NodeClient:
    def __init__(self, bus: BusClient, twin_id: int, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bus = bus
        self.twin_id = twin_id  # the node's twin
        self.timeout = timeout

    async def call(self, command: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """`command` with `payload` as given, its raw answer (for callers that test the
        node's refusals of bad payloads; the typed methods below are for the rest)."""
        return await self.bus.request(
            self.twin_id, command, payload, timeout=self.timeout if timeout is None else timeout
        )

    async def _typed(self, model: type[A], command: str, payload: Any = None, **kw: Any) -> A:
        return api.parse(model, await self.call(command, payload, **kw), code="malformed")

    async def deploy(self, deployment: Deployment) -> None:
        await self.call(api.DEPLOY, deployment.to_dict())

    async def update(self, deployment: Deployment) -> None:
        await self.call(api.UPDATE, deployment.to_dict())

    async def get(self, contract_id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """The deployment in zos JSON, each workload with its result."""
        return await self.call(api.GET, _contract(contract_id), timeout=timeout)

    async def list(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """This twin's deployments on the node, in zos JSON."""
        return await self.call(api.LIST, timeout=timeout) or []

    async def changes(self, contract_id: int) -> list[dict[str, Any]]:
        return await self.call(api.CHANGES, _contract(contract_id))

    async def delete(self, contract_id: int) -> None:
        await self.call(api.DELETE, _contract(contract_id))

    async def statistics(self) -> api.Statistics:
        return await self._typed(api.Statistics, api.STATISTICS)

    async def version(self, *, timeout: float | None = None) -> api.Version:
        return await self._typed(api.Version, api.VERSION, timeout=timeout)

    async def zmachine_logs(
        self, contract_id: int, name: str, offset: int = 0, follow: bool = False
    ) -> api.LogsChunk:
        """A zmachine's output from `offset`; with `follow`, the node waits for some
        (up to FOLLOW_WAIT) when there is none yet."""
        args = api.LogsArgs(contract_id=contract_id, name=name, offset=offset, follow=follow)
        timeout = api.FOLLOW_WAIT + 20.0 if follow else 15.0  # a followed one waits there
        return await self._typed(
            api.LogsChunk, api.ZMACHINE_LOGS, args.model_dump(), timeout=timeout
        )

    async def unlock(
        self, contract_id: int, key: str, copies: dict[int, str] | None = None
    ) -> api.Unlocked:
        """Give the deployment its data key (`key` sealed to this node); the first one
        also carries `copies`, the key sealed to the twins that may unlock it later."""
        args = api.UnlockArgs(contract_id=contract_id, key=key, copies=copies or {})
        payload = args.model_dump(exclude_defaults=True)
        return await self._typed(api.Unlocked, api.UNLOCK, payload)

    async def share(self, contract_id: int, twin: int, copy: str) -> None:
        payload = {"contract_id": contract_id, "twin": twin, "copy": copy}
        await self.call(api.SHARE, api.ShareArgs.model_validate(payload).model_dump(by_alias=True))

    async def unshare(self, contract_id: int, twin: int) -> None:
        args = api.UnshareArgs(contract_id=contract_id, twin=twin)
        await self.call(api.UNSHARE, args.model_dump())

    async def encryption(self, contract_id: int) -> api.Encryption:
        """Whether the deployment is encrypted and locked, and the asker's sealed copy."""
        return await self._typed(api.Encryption, api.ENCRYPTION, _contract(contract_id))

    async def list_wg_ports(self) -> list[int]:
        """The WireGuard listen ports taken on the node."""
        return (await self._typed(api.Ports, api.LIST_WG_PORTS)).root

    async def public_config(self) -> api.PublicConfig | None:
        """The node's public config; None when it has none."""
        try:
            return await self._typed(api.PublicConfig, api.PUBLIC_CONFIG)
        except BusError as e:
            if e.code == "not_found":
                return None
            raise

    async def interfaces(self) -> api.Interfaces:
        return await self._typed(api.Interfaces, api.INTERFACES)

    async def list_private_ips(self, network: str) -> list[str]:
        """The addresses of this twin's machines on its network `network` there."""
        payload = api.NetworkArgs(network_name=network).model_dump()
        return (await self._typed(api.PrivateIps, api.LIST_PRIVATE_IPS, payload)).root

    async def wg_peers(self, network: str) -> dict[str, int]:
        """Per peer of this twin's network `network` there, its latest handshake (unix
        seconds, 0: never)."""
        payload = api.NetworkArgs(network_name=network).model_dump()
        return (await self._typed(api.Handshakes, api.WG_PEERS, payload)).root


def _contract(contract_id: int) -> dict[str, Any]:
    return api.ContractArgs(contract_id=contract_id).model_dump()
