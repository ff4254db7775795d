"""`GridNetworkNodes`: the `NetworkNodes` a `NetworkService` needs, over the grid's real
nodes, for the SDK's twin.

A node's part of a network lives in a deployment of its own (metadata type
`zos-network`, `zos ps` shows it as `network:NAME`): machines in other deployments of the same
twin join it by name, so replacing or removing an app never drops a tunnel. A network
workload some other deployment holds (a one-node manifest's, or a ThreeFold client's,
beside its machines) is read and updated where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zos.bus import BusError
from zos.client import deploying
from zos.client.errors import GridClientError, node_answers
from zos.client.views import read_deployment
from zos.gridtypes import Deployment, SignatureRequest, SignatureRequirement, Workload
from zos.nodeapi import NodeClient
from zos.registry import NodeContract

if TYPE_CHECKING:
    from zos.client.sdk import GridClient

NETWORK_KIND = "zos-network"  # the metadata type of a deployment holding only a network
DELETED = "deleted"
WAIT = 120.0  # seconds a node may take to build its part of a network


def network_deployment(twin_id: int, workload: Workload) -> Deployment:
    """A new deployment holding one network workload (version 0, signed by its owner)."""
    # named so that no app deployment shares the name (those cannot have a ':')
    meta = {"type": NETWORK_KIND, "name": f"network:{workload.name}"}
    return Deployment(
        version=0,
        twin_id=twin_id,
        metadata=json.dumps(meta, separators=(",", ":")),
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=twin_id, required=True, weight=1)],
            weight_required=1,
        ),
        workloads=[Workload.from_raw({**workload.to_dict(), "version": 0})],
    )


def _is_network_deployment(dep: Deployment) -> bool:
    try:
        meta = json.loads(dep.metadata or "{}")
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get("type") == NETWORK_KIND


class GridNetworkNodes:
    """The grid's nodes as `NetworkService` sees them (see `NetworkNodes`)."""

    def __init__(self, grid: GridClient) -> None:
        self._grid = grid
        # (node, network) → contract of the deployment holding it, from `networks()`
        self._where: dict[tuple[int, str], int] = {}

    async def _api(self, node_id: int) -> NodeClient:
        return self._grid._on(await self._grid._node(node_id))

    async def _ask(self, node_id: int, method: str, *args: Any) -> Any:
        """NodeClient's `method` on the node; one that does not answer says so."""
        api = await self._api(node_id)
        with node_answers(node_id):
            return await getattr(api, method)(*args)

    # ---- what a node says about itself -------------------------------------------------

    async def list_wg_ports(self, node_id: int) -> Sequence[int]:
        return await self._ask(node_id, "list_wg_ports")

    async def public_config(self, node_id: int) -> Mapping[str, Any] | None:
        config = await self._ask(node_id, "public_config")
        return None if config is None else config.model_dump()

    async def interfaces(self, node_id: int) -> Mapping[str, Sequence[str]]:
        return (await self._ask(node_id, "interfaces")).model_dump()

    async def list_private_ips(self, node_id: int, network: str) -> Sequence[str]:
        return await self._ask(node_id, "list_private_ips", network)

    async def handshakes(self, node_id: int, network: str) -> Mapping[str, int] | None:
        return await self._ask(node_id, "wg_peers", network)

    # ---- the owner's network workloads -------------------------------------------------

    async def _deployments(self, node_id: int) -> list[Deployment]:
        raw = await self._ask(node_id, "list")
        return [Deployment.from_dict(d) for d in raw if isinstance(d, dict)]

    async def networks(self) -> Mapping[str, Mapping[int, Workload]]:
        """Every network workload of the owner that is not deleted; where two deployments
        on one node name the same network, the network's own deployment counts."""
        reg = self._grid._reg
        contracts = await reg.list_contracts(self._grid.twin_id, state="created", type="node")
        node_ids = sorted({c.node_id for c in contracts if isinstance(c, NodeContract)})
        found: dict[str, dict[int, Workload]] = {}
        self._where.clear()
        for node_id in node_ids:
            deps = await self._deployments(node_id)
            # a network's own deployment last, so that it wins
            for dep in sorted(deps, key=_is_network_deployment):
                for wl in dep.by_type("network"):
                    if wl.result.state != DELETED:
                        found.setdefault(wl.name, {})[node_id] = wl
                        self._where[(node_id, wl.name)] = dep.contract_id
        return found

    async def _holder(self, node_id: int, network: str) -> Deployment:
        if (node_id, network) not in self._where:
            await self.networks()
        contract_id = self._where.get((node_id, network))
        if contract_id is None:
            raise GridClientError(f"node {node_id} holds no network '{network}' of yours")
        return Deployment.from_dict(await self._ask(node_id, "get", contract_id))

    async def deploy(self, node_id: int, workload: Workload) -> None:
        grid = self._grid
        api = await self._api(node_id)
        dep = network_deployment(grid.twin_id, workload)
        contract_id = await deploying.submit(
            grid._reg, grid.identity, node_id, api, dep, workload.name
        )
        self._where[(node_id, workload.name)] = contract_id
        await deploying.wait_ok(api, node_id, contract_id, workload.name, None, WAIT)

    async def update(self, node_id: int, workload: Workload) -> None:
        """The holding deployment at version + 1 with the new workload (at that version,
        as the node wants a changed workload); its contract follows the new hash."""
        dep = await self._holder(node_id, workload.name)
        dep.version += 1
        new = Workload.from_raw({**workload.to_dict(), "version": dep.version})
        dep.workloads = [new if w.name == workload.name else w for w in dep.workloads]
        dep.signature_requirement.signatures = []
        await self._send_update(node_id, dep)

    async def _send_update(self, node_id: int, dep: Deployment) -> None:
        grid = self._grid
        try:
            await grid._reg.update_node_contract(dep.contract_id, dep.hash_hex())
        except BusError as e:
            raise GridClientError(f"registry refused the update: {e.message}") from None
        dep.sign(grid.twin_id, grid.identity)
        api = await self._api(node_id)
        try:
            with node_answers(node_id):
                await api.update(dep)
        except BusError as e:
            raise GridClientError(f"node {node_id} refused the update: {e.message}") from None
        await deploying.wait_ok(api, node_id, dep.contract_id, dep.workloads[0].name, None, WAIT)

    async def remove(self, node_id: int, network: str) -> None:
        """The network's own deployment goes; from another deployment only the workload."""
        dep = await self._holder(node_id, network)
        if _is_network_deployment(dep):
            grid = self._grid
            info = read_deployment(dep.to_dict(), node_id, [])
            await deploying.take_down(await self._api(node_id), node_id, info)
            await grid._reg.cancel_contract(dep.contract_id)
        else:
            dep.version += 1
            dep.workloads = [w for w in dep.workloads if w.name != network]
            dep.signature_requirement.signatures = []
            await self._send_update(node_id, dep)
        self._where.pop((node_id, network), None)
