"""`GridClient`: the Python SDK the `zos` CLI is built on, a facade over `zos.client`.

    async with await GridClient.connect() as grid:       # finds the grid and your key
        print(await grid.nodes())
        app = await grid.deploy("examples/hello/app.yaml")
        print(app.machines[0].urls)
        print(await grid.network_access("meshnet"))      # a wg-quick file for your laptop
        async for text in grid.logs("hello"):
            print(text, end="")
        await grid.unlock("hello")                       # after its node rebooted
        await grid.share("hello", twin=42)               # twin 42 may unlock it too
        await grid.rm("hello")

Every failure is a `GridClientError` whose message says what failed, on which node,
why, and what to do. The jobs live beside it: `placement` (which node), `building`
(manifest -> deployment), `deploying` (send, wait, take down), `views` (what `ps`
shows); nodes are spoken to through `zos.nodeapi.NodeClient`, a local grid's host
ports through `zos.grid.machineports`. Networks across nodes: `network_service()`
(`zos.client.networks.NetworkService` over `networknodes.GridNetworkNodes`), and the
`network_*` methods that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from zos.bus import BusClient, BusError
from zos.client import building, deploying, gateways, placement, spanning
from zos.client.config import ConfigError, find_grid, find_identity
from zos.client.datakeys import DataKeys, refusals
from zos.client.deploying import Progress
from zos.client.errors import GridClientError, node_answers
from zos.client.manifest import Manifest, ManifestError, load_manifest, parse_manifest
from zos.client.views import (
    DeploymentInfo,
    MachineInfo,
    WorkloadInfo,
    find,
    machine_of,
    mark_encryption,
    read_deployment,
    unknown,
)
from zos.grid import machineports
from zos.grid.state import GridState
from zos.identity import Identity
from zos.nodeapi import NodeClient
from zos.registry import Node, NodeContract, RegistryClient

if TYPE_CHECKING:
    from zos.client.networks import Applied, NetworkPlan, NetworkService
    from zos.client.networks.service import NodeView
    from zos.gridtypes import Deployment

T = TypeVar("T")

__all__ = [
    "DeploymentInfo",
    "GridClient",
    "GridClientError",
    "MachineInfo",
    "Progress",
    "WorkloadInfo",
]


@dataclass(eq=False, repr=False)
class GridClient:
    identity: Identity
    nats_url: str
    registry_key: bytes
    hub_url: str = ""
    local: GridState | None = None
    # set by `open`: your twin, and the connections to the registry and the bus
    twin_id: int = field(default=0, init=False)
    registry: RegistryClient | None = field(default=None, init=False)
    bus: BusClient | None = field(default=None, init=False)
    _nodes: dict[int, Node] = field(default_factory=dict, init=False)

    # ---- connection ----------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        *,
        identity: Identity | None = None,
        nats: str | None = None,
        hub: str | None = None,
        state_dir: str | Path | None = None,
        registry_key: str | None = None,
    ) -> GridClient:
        """Find the grid, its registry key and your key (see `zos.client.config`),
        register the twin if new."""
        try:
            where = find_grid(nats, hub, Path(state_dir) if state_dir else None, registry_key)
            identity = identity or find_identity()
        except ConfigError as e:
            raise GridClientError(str(e)) from None
        client = cls(identity, where.nats_url, where.registry_key, where.hub_url, where.local)
        await client.open()
        return client

    async def open(self) -> None:
        try:
            self.registry = await RegistryClient(
                self.nats_url, self.identity, registry_key=self.registry_key
            ).connect()
            twin = await self.registry.ensure_twin()
        except Exception as e:  # a BusError, or nats' own connection errors
            await self.close()
            if isinstance(e, BusError) and e.code == "bad_signature":
                raise GridClientError(
                    f"the grid at {self.nats_url} does not answer with its registry's key: "
                    f"{e.message}; refusing to use it"
                ) from None
            raise GridClientError(
                f"cannot reach the grid at {self.nats_url}: {e or type(e).__name__} "
                "(is it running? `zos grid up` starts a local one)"
            ) from None
        self.twin_id = twin.id
        self.bus = await BusClient(
            self.registry.conn, self.identity, self.twin_id, await self.registry.key_resolver()
        ).connect()

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        if self.registry is not None:
            await self.registry.close()
            self.registry = None

    async def __aenter__(self) -> GridClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _reg(self) -> RegistryClient:
        if self.registry is None:
            raise GridClientError("the client is closed")
        return self.registry

    # ---- nodes ---------------------------------------------------------------------

    async def nodes(
        self,
        farm: int | None = None,
        status: str | None = None,
        free_memory: int = 0,
        free_disk: int = 0,
        free_cores: int = 0,
        gateway: bool | None = None,
    ) -> list[Node]:
        """Nodes of the grid (by farm, status `up`/`down`, free capacity, and whether they
        serve gateways, an IPv4 and a domain: True only those, False only the others)."""
        found = await self._reg.list_nodes(
            farm=farm,
            status=status,
            free_mru=free_memory,
            free_sru=free_disk,
            free_cru=free_cores,
            gateway=gateway,
        )
        for n in found:
            self._nodes[n.id] = n
        return found

    async def _node(self, node_id: int) -> Node:
        try:
            node = await self._reg.get_node(node_id)
        except BusError as e:
            if e.code == "not_found":
                raise GridClientError(
                    f"node {node_id} does not exist (`zos nodes` lists them)"
                ) from None
            raise GridClientError(f"registry: {e.message}") from None
        self._nodes[node_id] = node
        return node

    def _on(self, node: Node) -> NodeClient:
        """The node's API, over this client's bus."""
        if self.bus is None:
            raise GridClientError("the client is closed")
        return NodeClient(self.bus, node.twin_id)

    # ---- images --------------------------------------------------------------------

    async def push_image(self, path: str | Path, name: str | None = None) -> str:
        """Pack a directory or image archive into an flist, publish it on the hub; its URL."""
        from zos.flist import FlistError, HubSigner, Router, StoreError, pack
        from zos.hub.client import publish_flist

        path = Path(path)
        if not self.hub_url:
            raise GridClientError("no hub: pass --hub or set ZOS_HUB (a local grid has one)")
        if not path.exists():
            raise GridClientError(f"{path}: no such file or directory")
        base = path.name.split(".")[0] or "image"
        name = name or f"{base}.fl"
        if not name.endswith(".fl"):
            name += ".fl"
        signer = HubSigner(self.identity, self.twin_id)
        router = Router.parse([self.hub_url], signer)
        with tempfile.TemporaryDirectory(prefix="zos-push-") as tmp:
            fl = Path(tmp) / name
            try:
                await pack(path, fl, router)
                await publish_flist(self.hub_url, signer, fl, name)
            except (FlistError, StoreError, ValueError, OSError) as e:
                raise GridClientError(f"push {path}: {e}") from None
            finally:
                await router.close()
        return f"{self.hub_url.rstrip('/')}/flists/{self.twin_id}/{name}"

    # ---- deploy --------------------------------------------------------------------

    async def _place(self, m: Manifest) -> Node:
        memory, disk = placement.needs(m)
        if m.node is None:
            up = await self.nodes(farm=m.nodes.farm if m.nodes else None, status="up")
            return placement.choose(m, gateways.prefer_gateway_nodes(m, up), memory, disk)
        try:
            node = await self._node(m.node)
        except GridClientError as e:
            raise ManifestError(f"node: {e}", m.source_line("node")) from None
        return placement.check_named(m, node, memory, disk)

    async def deploy(
        self,
        manifest: Manifest | str | Path,
        progress: Progress | None = None,
        timeout: float = 300.0,
        images: dict[str, str | Path] | None = None,
    ) -> DeploymentInfo:
        """Deploy a manifest (a path, YAML text or a Manifest), replacing one of the same
        name; waits until every workload is ok, or raises naming the one that failed.
        `images`: machine name → an image path given by the user (may be anywhere; a
        manifest's own images stay inside its directory)."""
        m = _manifest(manifest, images)
        if m.spans_nodes:
            raise GridClientError(
                f"'{m.name}' puts machines on several nodes: deploy it with deploy_across"
            )
        node = await self._place(m)
        gw_nodes = [
            n.id for n in await self._place_gateways(m, {x.name: node.id for x in m.machines})
        ]
        if any(n != node.id for n in gw_nodes):
            # a gateway on another node: the network spans both, as deploy_across has it
            gateways.check_spannable(m, node.id, gw_nodes)
            where = {x.name: node.id for x in m.machines}
            done = await self._span(m, where, gw_nodes, progress, timeout)
            return spanning.as_one(done.deployments, node.id)
        await building.check_flists(m)
        # Names before images: a name another twin holds is refused with nothing pushed.
        claimed = await gateways.claim_names(self._reg, self.twin_id, m)
        flists, published = await self._images(m)
        mine = await self.ps()
        taken = building.taken_ips(mine, node.id, m)
        dep = building.build_deployment(self.twin_id, m, flists, taken, published)
        gateways.add_gateways({node.id: dep}, m, gw_nodes)
        replaced = [d for d in mine if d.name == m.name]
        others = await self._replace(m, mine, flists, progress)
        kept = {g.name for g in m.gateways} | gateways.names_of(others)
        await gateways.release_names(self._reg, gateways.names_of(replaced) - kept)
        api = self._on(node)
        # The data key first: the node encrypts what the deployment stores from the start.
        try:
            contract_id = await deploying.submit(
                self._reg, self.identity, node.id, api, dep, m.name, before=self._keys.give_new
            )
        except GridClientError:
            await gateways.release_names(self._reg, claimed)
            raise
        info = await deploying.wait_ok(api, node.id, contract_id, m.name, progress, timeout)
        await self._expose(m, info)
        return info

    async def _replace(
        self,
        m: Manifest,
        mine: list[DeploymentInfo],
        flists: dict[str, str],
        progress: Progress | None,
    ) -> list[DeploymentInfo]:
        """Remove your deployments named like `m` (and the flists only they used, but
        `flists`); your others."""
        replaced = [d for d in mine if d.name == m.name]
        for old in replaced:
            if progress:
                progress(m.name, "deployment", "replacing", f"contract {old.contract_id}")
            await self._remove(old)
        others = [d for d in mine if d.name != m.name]
        await self._unpublish(replaced, others, keep=set(flists.values()))
        return others

    async def _images(self, m: Manifest) -> tuple[dict[str, str], list[str]]:
        """Each machine's flist (its image packed and pushed), and those this pushed.
        Images first: nothing is on the grid for this deployment yet if packing fails."""
        paths = {x.name: m.image_path(x) for x in m.machines if not x.flist}
        flists: dict[str, str] = {}
        for x in m.machines:
            if x.flist:
                flists[x.name] = x.flist
            else:
                flists[x.name] = await self.push_image(paths[x.name], f"{m.name}-{x.name}.fl")
        return flists, [flists[n] for n in paths]

    async def deploy_across(
        self,
        manifest: Manifest | str | Path,
        progress: Progress | None = None,
        timeout: float = 300,
    ) -> spanning.SpanningDeployment:
        """Deploy a manifest whose machines run on several nodes (`node:` or `nodes:` per
        machine): its network planned across them and created or updated on each node
        first (per node in `.network`), then one deployment per node, all at once,
        replacing those of the same name. A node that fails is named; the others stay.
        (Images given on the command line: `load_manifest(path, images)` first.)"""
        m = _manifest(manifest, None)
        up = lambda farm: self.nodes(farm=farm, status="up")  # noqa: E731
        where = await spanning.place_machines(m, self._node, up)
        gw_nodes = [n.id for n in await self._place_gateways(m, where)]
        return await self._span(m, where, gw_nodes, progress, timeout)

    async def _place_gateways(self, m: Manifest, where: dict[str, int]) -> list[Node]:
        """The node of each gateway (`gateways.place_gateways`); `where`: machine -> node."""
        node_of = {x: await self._node(n) for x, n in where.items()}
        up = lambda: self.nodes(status="up")  # noqa: E731
        return await gateways.place_gateways(m, node_of, self._node, up)

    async def _span(
        self,
        m: Manifest,
        where: dict[str, int],
        gw_nodes: list[int],
        progress: Progress | None,
        timeout: float,
    ) -> spanning.SpanningDeployment:
        """`m`'s machines on the nodes `where` says, its gateways on `gw_nodes`: the
        network across all of them first, then one deployment per node, all at once."""
        parts = spanning.parts(m, where)
        for node_id in gw_nodes:
            parts.setdefault(node_id, spanning.only(m, []))  # a node serving only gateways
        await building.check_flists(m)
        # Names before images: a name another twin holds is refused with nothing pushed.
        claimed = await gateways.claim_names(self._reg, self.twin_id, m)
        try:
            flists, published = await self._images(m)
            mine = await self.ps()
            others = await self._replace(m, mine, flists, progress)
            replaced = [d for d in mine if d.name == m.name]
            kept = {g.name for g in m.gateways} | gateways.names_of(others)
            await gateways.release_names(self._reg, gateways.names_of(replaced) - kept)
            applied, deps = await self._span_network(m, parts, others, flists, published, progress)
            gateways.add_gateways(deps, m, gw_nodes)
        except (GridClientError, ManifestError):
            await gateways.release_names(self._reg, claimed)
            raise

        async def one(node_id: int, dep: Deployment) -> DeploymentInfo:
            api = self._on(await self._node(node_id))
            contract_id = await deploying.submit(
                self._reg, self.identity, node_id, api, dep, m.name, before=self._keys.give_new
            )
            info = await deploying.wait_ok(api, node_id, contract_id, m.name, progress, timeout)
            await self._expose(parts[node_id], info)
            return info

        got = await asyncio.gather(*(one(n, d) for n, d in deps.items()), return_exceptions=True)
        errors = [
            f"node {n}: {e}" for n, e in zip(deps, got, strict=True) if isinstance(e, Exception)
        ]
        if errors:
            failed = {n for n, e in zip(deps, got, strict=True) if isinstance(e, Exception)}
            lost = {g.name for g, n in zip(m.gateways, gw_nodes, strict=True) if n in failed}
            await gateways.release_names(self._reg, set(claimed) & lost)
            raise GridClientError(f"deployment '{m.name}': " + "; ".join(errors))
        infos = [i for i in got if isinstance(i, DeploymentInfo)]
        return spanning.SpanningDeployment(applied, sorted(infos, key=lambda d: d.node_id))

    async def _span_network(
        self,
        m: Manifest,
        parts: dict[int, Manifest],
        others: list[DeploymentInfo],
        flists: dict[str, str],
        published: list[str],
        progress: Progress | None,
    ) -> tuple[Applied, dict[int, Deployment]]:
        """The network across `parts`' nodes (and those where others of yours use it),
        created or updated on each; each part's deployment, built on its node's /24."""
        net = m.network_name
        spanned = {*parts, *(d.node_id for d in others if gateways.uses_network(d, net))}
        ensured = self.network_service().ensure(net, m.network.ip_range, sorted(spanned))
        applied = await _planned(ensured)
        for r in applied.results:
            if progress:
                progress(net, "network", "ok" if r.ok else "error", f"node {r.node_id} {r.action}")
        failed = [r for r in applied.results if not r.ok and r.node_id in parts]
        if failed:
            raise GridClientError(
                f"network '{net}' was not built on "
                + "; ".join(f"node {r.node_id}: {r.error}" for r in failed)
                + ". Nothing else was deployed; deploy again once the node is back"
            )
        deps = {}
        for node_id, part in parts.items():
            subnet = IPv4Network(applied.plan.node(node_id).subnet)
            taken = building.taken_ips(others, node_id, part)
            deps[node_id] = building.build_deployment(
                self.twin_id, part, flists, taken, published, subnet=subnet
            )
        return applied, deps

    async def _expose(self, m: Manifest, info: DeploymentInfo) -> None:
        """On a local grid, a host port for each machine port (its URL in `info`)."""
        if self.local is None:
            return
        ips = {x.name: x.ip for x in info.machines}
        machines = [machineports.MachinePorts(x.name, ips[x.name], x.ports) for x in m.machines]
        added = await machineports.expose(
            self.local, info.node_id, self.twin_id, m.name, info.contract_id, machines
        )
        for x in info.machines:
            x.urls += [f.url for f in added if f.machine == x.name]

    # ---- ps / logs / rm ------------------------------------------------------------

    async def ps(self) -> list[DeploymentInfo]:
        """Your deployments on every node, with each workload's state."""
        contracts = [
            c
            for c in await self._reg.list_contracts(self.twin_id, state="created", type="node")
            if isinstance(c, NodeContract)
        ]
        forwards = machineports.forwards(self.local) if self.local else []
        by_node: dict[int, list[NodeContract]] = {}
        for c in contracts:
            by_node.setdefault(c.node_id, []).append(c)
        found: list[DeploymentInfo] = []
        for node_id, cs in sorted(by_node.items()):
            try:
                node = await self._node(node_id)
                with node_answers(node_id):
                    listed = await self._on(node).list(timeout=10)
            except (GridClientError, BusError) as e:
                found += [unknown(c, str(e)) for c in cs]
                continue
            raw_by_id = {d.get("contract_id"): d for d in listed if isinstance(d, dict)}
            for c in cs:
                raw = raw_by_id.get(c.id)
                if raw is None:
                    found.append(unknown(c, f"node {node_id} does not have it"))
                    continue
                try:
                    info = read_deployment(raw, node_id, forwards)
                except GridClientError as e:
                    found.append(unknown(c, str(e)))
                    continue
                await self._encryption(node, info)
                found.append(info)
        return sorted(found, key=lambda d: (d.name, d.contract_id))

    # ---- data keys -----------------------------------------------------------------

    @property
    def _keys(self) -> DataKeys:
        return DataKeys(self.identity, self.twin_id, self._reg)

    async def _encryption(self, node: Node, info: DeploymentInfo) -> None:
        """Whether `info` is encrypted and locked, as its node says (left as is if it
        cannot say: a node of an older version)."""
        with contextlib.suppress(BusError):
            mark_encryption(info, await self._keys.status(self._on(node), info.contract_id))

    async def unlock(
        self, name: str | None = None, *, node_id: int | None = None, contract_id: int | None = None
    ) -> bool:
        """Give a locked deployment its key again (your own, by `name`; a teammate's, by
        `node_id` and `contract_id`); whether it was locked. Its machines then start."""
        if name is not None:
            info, _ = find(await self.ps(), name)
            node_id, contract_id = info.node_id, info.contract_id
        if node_id is None or contract_id is None:
            raise GridClientError("unlock: give a deployment name, or a node and a contract id")
        node = await self._node(node_id)
        with refusals(f"node {node_id} refused to unlock contract {contract_id}"):
            return await self._keys.unlock(self._on(node), contract_id)

    async def share(self, name: str, twin: int) -> None:
        """Let twin `twin` unlock deployment `name` (its key, sealed to that twin)."""
        info, _ = find(await self.ps(), name)
        node = await self._node(info.node_id)
        with refusals(f"cannot share '{name}' with twin {twin}"):
            await self._keys.share(self._on(node), info.contract_id, twin)

    async def unshare(self, name: str, twin: int) -> None:
        """Twin `twin` may no longer unlock `name` (it may still know the key it had)."""
        info, _ = find(await self.ps(), name)
        node = await self._node(info.node_id)
        with refusals(f"cannot unshare '{name}' from twin {twin}"):
            await self._keys.unshare(self._on(node), info.contract_id, twin)

    async def _remove(self, info: DeploymentInfo) -> None:
        node = await self._node(info.node_id)
        await deploying.take_down(self._on(node), node.id, info)
        with contextlib.suppress(BusError):
            await self._reg.cancel_contract(info.contract_id)
        if self.local is not None:
            machineports.unexpose(self.local, info.contract_id)

    async def rm(self, name: str) -> list[DeploymentInfo]:
        """Remove the deployment `name` (every contract of yours with that name), and the
        flists its deploy published on the hub that no other deployment of yours uses."""
        mine = await self.ps()
        info, _ = find(mine, name)
        removed = [d for d in mine if d.name == info.name]
        for d in removed:
            await self._remove(d)
        others = [d for d in mine if d.name != info.name]
        await self._unpublish(removed, others)
        names = gateways.names_of(removed) - gateways.names_of(others)
        await gateways.release_names(self._reg, names)
        await self._drop_gateway_networks(removed, others)
        return removed

    async def _drop_gateway_networks(
        self, removed: list[DeploymentInfo], others: list[DeploymentInfo]
    ) -> None:
        """Take a network off the nodes where `removed` had only gateways on it, when
        nothing of `others` uses it there; the network's other nodes drop it as a peer."""
        service = self.network_service()
        for net, node_id in sorted(spanning.gateway_only_nodes(removed, others)):
            plan = await service.current(net)
            if plan is None or node_id not in {n.node_id for n in plan.nodes}:
                continue
            rest = [n.node_id for n in plan.nodes if n.node_id != node_id]
            if rest:
                await _planned(service.ensure(net, plan.ip_range, rest))
            else:
                await service.nodes.remove(node_id, net)

    async def _unpublish(
        self,
        gone: list[DeploymentInfo],
        others: list[DeploymentInfo],
        keep: set[str] | None = None,
    ) -> None:
        """Take the flists `gone` published off the hub, unless `others` use them (or
        they are in `keep`). Blocks stay: content-addressed, other flists may share them."""
        from zos.flist import HubSigner, StoreError
        from zos.hub.client import unpublish_flist

        used = set(keep or ()) | {x.flist for d in others for x in d.machines}
        mine = f"{self.hub_url.rstrip('/')}/flists/{self.twin_id}/"
        urls = {u for d in gone for u in d.published if u not in used}
        for url in sorted(urls):
            if not self.hub_url or not url.startswith(mine):
                continue  # not ours to remove, or not on this hub
            try:
                await unpublish_flist(
                    self.hub_url, HubSigner(self.identity, self.twin_id), url[len(mine) :]
                )
            except StoreError as e:
                raise GridClientError(f"removed, but its image stays on the hub: {e}") from None

    async def logs(self, name: str, follow: bool = False) -> AsyncIterator[str]:
        """A machine's output (`deployment`, `deployment/machine` or a machine's name); with
        `follow`, new output as it comes until the deployment is removed."""
        info, machine = find(await self.ps(), name)
        machine = machine_of(info, machine)
        node = await self._node(info.node_id)
        api = self._on(node)
        offset = 0
        while True:
            try:
                with node_answers(node.id):
                    got = await api.zmachine_logs(info.contract_id, machine, offset, follow)
            except BusError as e:
                if offset and e.code == "not_found":
                    return  # removed while following
                raise GridClientError(
                    f"logs of {info.name}/{machine} on node {node.id}: {e.message}"
                ) from None
            offset = got.offset
            if got.data:
                yield got.data
            elif not follow:
                return

    # ---- networks across nodes -----------------------------------------------------

    def _public(self, ip: IPv4Address | IPv6Address) -> bool:
        """Whether other nodes reach a node at `ip`: a global address, or on a local
        grid its bridge (every node of it lives on this machine)."""
        from zos.client.networks import is_public

        local = self.local.host_address if self.local is not None else ""
        if local and ip.version == 4 and ip in IPv4Interface(local).network:
            return True
        return is_public(ip)

    def network_service(self) -> NetworkService:
        """Your networks, planned here and sent to each node (`zos.client.networks`)."""
        from zos.client.networknodes import GridNetworkNodes
        from zos.client.networks import NetworkService

        return NetworkService(GridNetworkNodes(self), self.identity, public=self._public)

    async def networks(self) -> list[NetworkPlan]:
        """Your networks, each as its nodes hold it (one that cannot be read is left
        out: `network_show` says why)."""
        plans, _ = await self.network_service().readable()
        return plans

    async def network_show(self, name: str) -> tuple[NetworkPlan, list[NodeView]]:
        """Network `name` node by node, with each peer's handshake age."""
        return await _planned(self.network_service().show(name))

    async def network_access(
        self, name: str, node_id: int = 0, access_name: str = "laptop", key_file: str = ""
    ) -> str:
        """The wg-quick file that puts your laptop on network `name` (the same each time);
        with `key_file`, the file for a teammate's access `access_name`, naming where
        their private key is on their laptop."""
        svc = self.network_service()
        if key_file:
            return await _planned(svc.teammate_file(name, access_name, key_file))
        text, _ = await _planned(svc.access(name, node_id, access_name))
        return text

    async def network_grant(self, name: str, wg_key: str, access_name: str = "") -> Applied:
        """Admit a teammate's laptop by its WireGuard public key."""
        return await _planned(self.network_service().grant(name, wg_key, access_name))

    async def network_revoke(self, name: str, access_name: str = "", wg_key: str = "") -> Applied:
        """Drop one access (by name or key); nobody else's changes."""
        return await _planned(self.network_service().revoke(name, access_name, wg_key))


def _manifest(manifest: Manifest | str | Path, images: dict[str, str | Path] | None) -> Manifest:
    """A manifest from a path, YAML text or a Manifest, with the images given for it."""
    if isinstance(manifest, Path) or (isinstance(manifest, str) and "\n" not in manifest):
        return load_manifest(manifest, images)
    m = parse_manifest(manifest) if isinstance(manifest, str) else manifest
    m.give_images(images or {})
    return m


async def _planned(work: Awaitable[T]) -> T:
    """`work`'s result; a network change the planner refuses as the SDK's one error."""
    from zos.client.networks import NetworkPlanError

    try:
        return await work
    except NetworkPlanError as e:
        raise GridClientError(f"network: {e}") from None
