"""`GridClient`: the Python SDK the `zos` CLI is built on.

    async with await GridClient.connect() as grid:       # finds the grid and your key
        print(await grid.nodes())
        app = await grid.deploy("examples/hello/app.yaml")
        print(app.machines[0].urls)
        async for text in grid.logs("hello"):
            print(text, end="")
        await grid.rm("hello")

Every failure is a `GridClientError` whose message says what failed, on which node,
why, and what to do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from zos.bus import BusClient, BusError
from zos.client.config import ConfigError, find_grid, find_identity
from zos.client.manifest import Manifest, ManifestError, load_manifest, parse_manifest
from zos.grid.natsserver import free_port
from zos.grid.state import Forward, GridState, edit_forwards, load_forwards
from zos.gridtypes import (
    Deployment,
    GatewayFQDNProxy,
    GatewayNameProxy,
    GridTypeError,
    SignatureRequest,
    SignatureRequirement,
    Workload,
    ZMachine,
    validate,
)
from zos.gridtypes.names import workload_id
from zos.identity import Identity
from zos.registry import Node, NodeContract, RegistryClient

MiB = 1 << 20
Progress = Callable[[str, str, str, str], None]  # workload name, type, state, message
METADATA_KIND = "zos-manifest"


class GridClientError(Exception):
    """What failed, where, why and what to do, in one message."""


class MachineInfo(BaseModel):
    name: str
    flist: str = ""
    ip: str = ""
    network: str = ""
    state: str = ""
    message: str = ""
    urls: list[str] = Field(default_factory=list)


class WorkloadInfo(BaseModel):
    name: str
    type: str
    state: str
    message: str = ""


class GatewayInfo(BaseModel):
    name: str
    fqdn: str = ""  # a name proxy's comes from the node's result, once it is built
    url: str = ""
    state: str = ""
    backends: list[str] = Field(default_factory=list)


class DeploymentInfo(BaseModel):
    name: str
    contract_id: int
    node_id: int
    state: str  # ok, deploying, error, deleted, unknown
    workloads: list[WorkloadInfo] = Field(default_factory=list)
    machines: list[MachineInfo] = Field(default_factory=list)
    gateways: list[GatewayInfo] = Field(default_factory=list)
    message: str = ""
    published: list[str] = Field(default_factory=list)  # flist URLs its deploy pushed


def _size(n: int) -> str:
    for unit, div in (("T", 1 << 40), ("G", 1 << 30), ("M", MiB)):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return f"{n}B"


def _overall(states: list[str]) -> str:
    if any(s == "error" for s in states):
        return "error"
    if states and all(s == "deleted" for s in states):
        return "deleted"
    if states and all(s == "ok" for s in states):
        return "ok"
    return "deploying"


def _gateway(wl: Workload, state: str) -> GatewayInfo:
    data = wl.data
    fqdn = data.fqdn if isinstance(data, GatewayFQDNProxy) else ""
    result = wl.result.data
    if isinstance(data, GatewayNameProxy) and isinstance(result, dict):
        fqdn = str(result.get("fqdn") or "")
    return GatewayInfo(
        name=wl.name,
        fqdn=fqdn,
        url=f"https://{fqdn}" if fqdn else "",
        state=state,
        backends=list(data.backends),  # type: ignore[union-attr]
    )


def _info(raw: Any, node_id: int, forwards: list[Forward]) -> DeploymentInfo:
    """What a node answered about a deployment, read as zos JSON (GridClientError if not)."""
    try:
        dep = Deployment.from_dict(raw) if isinstance(raw, dict) else None
    except GridTypeError as e:
        raise GridClientError(f"node {node_id} sent an unreadable deployment: {e}") from None
    if dep is None:
        raise GridClientError(f"node {node_id} sent an unreadable deployment")
    try:
        meta = json.loads(dep.metadata or "{}")
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name")
    published = meta.get("published")
    published = [u for u in published if isinstance(u, str)] if isinstance(published, list) else []
    workloads, machines, gateways = [], [], []
    for wl in dep.workloads:
        state = wl.result.state or "init"
        workloads.append(
            WorkloadInfo(name=wl.name, type=wl.type, state=state, message=wl.result.message)
        )
        if isinstance(wl.data, GatewayNameProxy | GatewayFQDNProxy):
            gateways.append(_gateway(wl, state))
        if isinstance(wl.data, ZMachine):
            ifs = wl.data.network.interfaces
            urls = [
                f.url for f in forwards if f.contract_id == dep.contract_id and f.machine == wl.name
            ]
            machines.append(
                MachineInfo(
                    name=wl.name,
                    flist=str(wl.data.flist),
                    ip=str(ifs[0].ip) if ifs else "",
                    network=ifs[0].network if ifs else "",
                    state=state,
                    message=wl.result.message,
                    urls=urls,
                )
            )
    return DeploymentInfo(
        name=str(name) if name else f"contract-{dep.contract_id}",
        contract_id=dep.contract_id,
        node_id=node_id,
        state=_overall([w.state for w in workloads]),
        workloads=workloads,
        machines=machines,
        gateways=gateways,
        published=published,
    )


def _unknown(c: NodeContract, why: str) -> DeploymentInfo:
    """A contract whose deployment could not be read from its node."""
    return DeploymentInfo(
        name=f"contract-{c.id}", contract_id=c.id, node_id=c.node_id, state="unknown", message=why
    )


class GridClient:
    def __init__(
        self,
        identity: Identity,
        nats_url: str,
        registry_key: bytes,
        hub_url: str = "",
        local: GridState | None = None,
    ) -> None:
        self.identity = identity
        self.nats_url = nats_url
        self.registry_key = registry_key
        self.hub_url = hub_url
        self.local = local
        self.twin_id = 0
        self.registry: RegistryClient | None = None
        self.bus: BusClient | None = None
        self._nodes: dict[int, Node] = {}

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
        except BusError as e:
            await self.close()
            if e.code == "bad_signature":
                raise GridClientError(
                    f"the grid at {self.nats_url} does not answer with its registry's key: "
                    f"{e.message}; refusing to use it"
                ) from None
            raise GridClientError(
                f"cannot reach the grid at {self.nats_url}: {e} "
                "(is it running? `zos grid up` starts a local one)"
            ) from None
        except (OSError, TimeoutError) as e:
            await self.close()
            raise GridClientError(
                f"cannot reach the grid at {self.nats_url}: {e or type(e).__name__} "
                "(is it running? `zos grid up` starts a local one)"
            ) from None
        except Exception as e:  # nats' own connection errors
            await self.close()
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
    ) -> list[Node]:
        """Nodes of the grid (by farm, status `up`/`down`, and free capacity)."""
        found = await self._reg.list_nodes(
            farm=farm, status=status, free_mru=free_memory, free_sru=free_disk, free_cru=free_cores
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

    async def _call(
        self, node: Node, command: str, payload: Any = None, timeout: float = 30
    ) -> Any:
        assert self.bus is not None
        try:
            return await self.bus.request(node.twin_id, command, payload, timeout=timeout)
        except BusError as e:
            if e.code in ("unreachable", "timeout"):
                raise GridClientError(
                    f"node {node.id} does not answer ({e.message}); it may be down: "
                    "`zos nodes` shows its status"
                ) from None
            raise

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

    async def _pick_node(self, m: Manifest, memory: int, disk: int) -> Node:
        where = m.source_line("node") if m.node else m.source_line("nodes")
        if m.node is not None:
            try:
                node = await self._node(m.node)
            except GridClientError as e:
                raise ManifestError(f"node: {e}", where) from None
            if node.status != "up":
                raise ManifestError(
                    f"node: node {node.id} is down (`zos nodes` lists up nodes)", where
                )
            free = node.free
            if memory > free.mru:
                raise ManifestError(
                    f"machines: need {_size(memory)} of memory, node {node.id} has "
                    f"{_size(free.mru)} free",
                    m.source_line("machines", m.largest_machine(), "memory"),
                )
            if disk > free.sru:
                raise ManifestError(
                    f"disks: need {_size(disk)} of disk, node {node.id} has {_size(free.sru)} free",
                    m.source_line("disks"),
                )
            return node
        farm = m.nodes.farm if m.nodes else None
        up = await self.nodes(farm=farm, status="up")
        if not up:
            raise ManifestError(
                "no node is up" + (f" in farm {farm}" if farm else "") + " (`zos nodes`)", where
            )
        want_mem = max(memory, m.nodes.free_memory or 0 if m.nodes else 0)
        fits = [n for n in up if n.free.mru >= want_mem and n.free.sru >= disk]
        if not fits:
            best = max(up, key=lambda n: n.free.mru)
            raise ManifestError(
                f"machines: need {_size(memory)} of memory and {_size(disk)} of disk; no node "
                f"has that free (most memory free: {_size(best.free.mru)} on node {best.id})",
                m.source_line("machines", m.largest_machine(), "memory"),
            )
        return max(fits, key=lambda n: (n.free.mru, -n.id))

    async def _check_flists(self, m: Manifest) -> None:
        """Each `flist` URL must answer, so a typo is refused before anything is sent."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i, x in enumerate(m.machines):
                if not x.flist:
                    continue
                where = m.source_line("machines", i, "flist")
                try:
                    async with session.head(x.flist, allow_redirects=True) as resp:
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as e:
                    raise ManifestError(
                        f"machines[{i}].flist: cannot reach {x.flist}: {e or type(e).__name__}",
                        where,
                    ) from None
                if status != 200:
                    raise ManifestError(
                        f"machines[{i}].flist: {x.flist} answered {status}: no such flist "
                        "(`zos image push DIR` publishes one and prints its URL)",
                        where,
                    )

    def _build(
        self,
        m: Manifest,
        flists: dict[str, str],
        taken: set[str] | None = None,
        published: list[str] | None = None,
    ) -> Deployment:
        """The deployment for `m`; machines without an `ip` get the first free ones of the
        subnet, skipping `taken` (your other machines on the same network and node);
        `published`: the flists this deploy pushed to the hub (`rm` removes them)."""
        net = m.network_name
        digest = hashlib.sha256(f"{self.twin_id}:{m.name}".encode()).digest()
        subnet = IPv4Network(m.network.subnet or f"10.20.{digest[0] % 250 + 1}.0/24")
        taken = set(taken or ()) | {x.ip for x in m.machines if x.ip}
        free = [str(a) for a in list(subnet.hosts())[1:]]  # .1 is the network's gateway
        workloads: list[dict[str, Any]] = [
            {
                "name": net,
                "type": "network",
                "data": {
                    "ip_range": m.network.ip_range,
                    "subnet": str(subnet),
                    "wireguard_private_key": base64.b64encode(os.urandom(32)).decode(),
                    "wireguard_listen_port": 20000 + int.from_bytes(digest[1:3]) % 40000,
                    "peers": [],
                },
            }
        ]
        for d in m.disks:
            workloads.append({"name": d.name, "type": "volume", "data": {"size": d.size}})
        for mach in m.machines:
            ip = mach.ip or next(a for a in free if a not in taken)
            taken.add(ip)
            workloads.append(
                {
                    "name": mach.name,
                    "type": "zmachine",
                    "data": {
                        "flist": flists[mach.name],
                        "network": {
                            "public_ip": "",
                            "planetary": False,
                            "interfaces": [{"network": net, "ip": ip}],
                        },
                        "size": mach.disk_size or 0,
                        "compute_capacity": {"cpu": mach.cpu, "memory": mach.memory},
                        "mounts": [
                            {"name": x.disk, "mountpoint": x.mountpoint} for x in mach.mounts
                        ],
                        "entrypoint": mach.entrypoint,
                        "env": mach.env,
                    },
                }
            )
        meta = {
            "type": METADATA_KIND,
            "name": m.name,
            "ports": {x.name: x.ports for x in m.machines},
            "published": sorted(published or []),
        }
        dep = Deployment(
            version=0,
            twin_id=self.twin_id,
            metadata=json.dumps(meta, separators=(",", ":")),
            description=m.description,
            signature_requirement=SignatureRequirement(
                requests=[SignatureRequest(twin_id=self.twin_id, required=True, weight=1)],
                weight_required=1,
            ),
            workloads=[Workload.from_raw({"version": 0, **w}) for w in workloads],
        )
        try:
            validate(dep)
        except GridTypeError as e:
            where = m.source_line("machines", m.index_of(e.workload), e.field) if e.workload else ""
            raise ManifestError(str(e), where) from None
        return dep

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
        if isinstance(manifest, Path) or (isinstance(manifest, str) and "\n" not in manifest):
            m = load_manifest(manifest, images)
        else:
            m = parse_manifest(manifest) if isinstance(manifest, str) else manifest
            m.give_images(images or {})
        memory = sum(x.memory for x in m.machines)
        disk = sum(d.size for d in m.disks) + sum(
            max(x.disk_size or 0, 500 * MiB) for x in m.machines
        )
        node = await self._pick_node(m, memory, disk)
        await self._check_flists(m)
        # Images first: nothing is on the grid for this deployment yet if packing fails.
        paths = {x.name: m.image_path(x) for x in m.machines if not x.flist}
        flists: dict[str, str] = {}
        for x in m.machines:
            if x.flist:
                flists[x.name] = x.flist
            else:
                flists[x.name] = await self.push_image(paths[x.name], f"{m.name}-{x.name}.fl")
        published = [flists[n] for n in paths]
        mine = await self.ps()
        taken = {
            x.ip
            for d in mine
            if d.node_id == node.id and d.name != m.name
            for x in d.machines
            if x.network == m.network_name
        }
        dep = self._build(m, flists, taken, published)
        replaced = [d for d in mine if d.name == m.name]
        for old in replaced:
            if progress:
                progress(m.name, "deployment", "replacing", f"contract {old.contract_id}")
            await self._remove(old)
        others = [d for d in mine if d.name != m.name]
        await self._unpublish(replaced, others, keep=set(flists.values()))
        try:
            contract = await self._reg.create_node_contract(node.id, dep.hash_hex())
        except BusError as e:
            raise GridClientError(
                f"registry refused the contract on node {node.id}: {e.message}"
            ) from None
        dep.contract_id = contract.id
        dep.sign(self.twin_id, self.identity)
        try:
            await self._call(node, "zos.deployment.deploy", dep.to_dict())
        except (BusError, GridClientError) as e:
            with contextlib.suppress(BusError):
                await self._reg.cancel_contract(contract.id)
            why = e.message if isinstance(e, BusError) else str(e)
            raise GridClientError(
                f"node {node.id} refused deployment '{m.name}': {why}. Nothing was deployed; "
                "fix the manifest and run it again"
            ) from None
        info = await self._wait(node, contract.id, m.name, progress, timeout)
        await self._expose(m, node, info)
        return info

    async def _wait(
        self, node: Node, contract_id: int, name: str, progress: Progress | None, timeout: float
    ) -> DeploymentInfo:
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            raw = await self._call(node, "zos.deployment.get", {"contract_id": contract_id})
            info = _info(raw, node.id, [])
            for w in info.workloads:
                if seen.get(w.name) != w.state:
                    seen[w.name] = w.state
                    if progress:
                        progress(w.name, w.type, w.state, w.message)
            failed = [w for w in info.workloads if w.state == "error"]
            if failed:
                w = failed[0]
                raise GridClientError(
                    f"deployment '{name}': {w.type} '{w.name}' failed on node {node.id}: "
                    f"{w.message}. It is left as it is so you can look (`zos ps`, "
                    f"`zos logs {name}`); fix the manifest and deploy again (it replaces it), "
                    f"or `zos rm {name}`"
                )
            if info.state == "ok":
                return info
            if time.monotonic() > deadline:
                pending = ", ".join(
                    f"{w.name}: {w.state}" for w in info.workloads if w.state != "ok"
                )
                raise GridClientError(
                    f"deployment '{name}' on node {node.id} not ready after {timeout:.0f}s "
                    f"({pending}); `zos ps` shows it as it goes on"
                )
            await asyncio.sleep(0.3)

    # ---- host ports on a local grid ------------------------------------------------

    def _forwards_edit(self, change: Callable[[list[Forward]], list[Forward]]) -> None:
        assert self.local is not None
        edit_forwards(Path(self.local.state_dir), change)

    async def _expose(self, m: Manifest, node: Node, info: DeploymentInfo) -> None:
        if self.local is None:
            return
        entry = next((n for n in self.local.nodes if n.node_id == node.id), None)
        if entry is None:
            return
        new = []
        for mach in m.machines:
            mi = next(x for x in info.machines if x.name == mach.name)
            wid = workload_id(self.twin_id, info.contract_id, mach.name)
            for port in mach.ports:
                new.append(
                    Forward(
                        deployment=m.name,
                        machine=mach.name,
                        contract_id=info.contract_id,
                        listen_host="127.0.0.1",
                        listen_port=free_port(),
                        netns=f"{entry.netns_prefix}c-{wid}",
                        ip=mi.ip,
                        port=port,
                    )
                )
                mi.urls.append(new[-1].url)
        if not new:
            return
        self._forwards_edit(lambda fs: [*fs, *new])
        # The forwarder picks the file up within half a second: wait for its listeners.
        deadline = time.monotonic() + 10
        for f in new:
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((f.listen_host, f.listen_port), timeout=0.2),
                ):
                    break
                await asyncio.sleep(0.1)

    # ---- ps / logs / rm ------------------------------------------------------------

    async def ps(self) -> list[DeploymentInfo]:
        """Your deployments on every node, with each workload's state."""
        contracts = [
            c
            for c in await self._reg.list_contracts(self.twin_id, state="created", type="node")
            if isinstance(c, NodeContract)
        ]
        forwards = load_forwards(Path(self.local.state_dir)) if self.local else []
        by_node: dict[int, list[NodeContract]] = {}
        for c in contracts:
            by_node.setdefault(c.node_id, []).append(c)
        found: list[DeploymentInfo] = []
        for node_id, cs in sorted(by_node.items()):
            try:
                node = await self._node(node_id)
                listed = await self._call(node, "zos.deployment.list", timeout=10)
            except (GridClientError, BusError) as e:
                found += [_unknown(c, str(e)) for c in cs]
                continue
            raw_by_id = {d.get("contract_id"): d for d in (listed or []) if isinstance(d, dict)}
            for c in cs:
                raw = raw_by_id.get(c.id)
                if raw is None:
                    found.append(_unknown(c, f"node {node_id} does not have it"))
                    continue
                try:
                    found.append(_info(raw, node_id, forwards))
                except GridClientError as e:
                    found.append(_unknown(c, str(e)))
        return sorted(found, key=lambda d: (d.name, d.contract_id))

    async def _find(self, name: str) -> tuple[DeploymentInfo, str | None]:
        """The deployment `name` (or `name/machine`, or a machine's unique name)."""
        dep_name, _, machine = name.partition("/")
        deps = await self.ps()
        matches = [d for d in deps if d.name == dep_name]
        if not matches and not machine:
            matches = [d for d in deps if any(x.name == dep_name for x in d.machines)]
            if len(matches) == 1:
                return matches[0], dep_name
        if not matches:
            known = ", ".join(sorted({d.name for d in deps})) or "none"
            raise GridClientError(f"no deployment named '{dep_name}' (yours: {known})")
        return matches[0], machine or None

    async def _remove(self, info: DeploymentInfo, timeout: float = 120) -> None:
        node = await self._node(info.node_id)
        try:
            await self._call(node, "zos.deployment.delete", {"contract_id": info.contract_id})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = await self._call(
                    node, "zos.deployment.get", {"contract_id": info.contract_id}
                )
                if _info(raw, node.id, []).state == "deleted":
                    break
                await asyncio.sleep(0.3)
        except BusError as e:
            if e.code != "not_found":
                raise GridClientError(
                    f"node {node.id} refused to remove '{info.name}': {e.message}"
                ) from None
        except GridClientError:
            pass  # a node that is down: cancelling the contract makes it remove it when back
        with contextlib.suppress(BusError):
            await self._reg.cancel_contract(info.contract_id)
        if self.local is not None:
            self._forwards_edit(lambda fs: [f for f in fs if f.contract_id != info.contract_id])

    async def rm(self, name: str) -> list[DeploymentInfo]:
        """Remove the deployment `name` (every contract of yours with that name), and the
        flists its deploy published on the hub that no other deployment of yours uses."""
        info, _ = await self._find(name)
        mine = await self.ps()
        removed = [d for d in mine if d.name == info.name]
        for d in removed:
            await self._remove(d)
        await self._unpublish(removed, [d for d in mine if d.name != info.name])
        return removed

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
        info, machine = await self._find(name)
        if machine is None:
            if len(info.machines) != 1:
                names = ", ".join(x.name for x in info.machines)
                raise GridClientError(
                    f"'{info.name}' has {len(info.machines)} machines ({names}): "
                    f"say which, e.g. `zos logs {info.name}/{info.machines[0].name}`"
                )
            machine = info.machines[0].name
        elif not any(x.name == machine for x in info.machines):
            raise GridClientError(f"'{info.name}' has no machine named '{machine}'")
        node = await self._node(info.node_id)
        offset = 0
        while True:
            try:
                got = await self._call(
                    node,
                    "zos.zmachine.logs",
                    {
                        "contract_id": info.contract_id,
                        "name": machine,
                        "offset": offset,
                        "follow": follow,
                    },
                    timeout=40 if follow else 15,  # a follow request waits for output
                )
            except BusError as e:
                if offset and e.code == "not_found":
                    return  # removed while following
                raise GridClientError(
                    f"logs of {info.name}/{machine} on node {node.id}: {e.message}"
                ) from None
            data = str(got.get("data", ""))
            offset = int(got.get("offset", offset))
            if data:
                yield data
            elif not follow:
                return
