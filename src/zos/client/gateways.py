"""Deploying a manifest's `gateways:` (`zos.client.gatewayspec`): which node serves
each, its name contract, and its workload in the deployment.

A gateway is a workload (`gateway-name-proxy` or `gateway-fqdn-proxy`) of the
manifest's deployment on the node that serves it (a public config its farmer set: an
IPv4, and a domain for names): its `node:`, else its machine's node when that serves
gateways, else an up node that does (`place_gateways`). Its backend is the machine's
address on the manifest's private network, and the workload names that network
(`network`: the node reaches it from inside the network's namespace). A gateway on
another node than its machine's has the network there too, joined to the machine's
node by the network's WireGuard mesh: the manifest is then deployed as one spanning
nodes (`GridClient.deploy_across`), the gateway in a deployment of the manifest's name
on its node (beside the machines there, or alone); `rm` takes the gateway node's part of
the network away again when nothing else of yours uses it there.

Names are global: `claim_names` takes a name contract for each `name` (keeping one you
own already) before the deployment is sent; `release_names` gives them back when the
deployment goes and no other deployment of yours serves them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from zos.bus import BusError
from zos.client.errors import GridClientError
from zos.client.gatewayspec import GatewaySpec
from zos.client.manifest import Manifest, ManifestError, check_spanning
from zos.client.views import DeploymentInfo
from zos.gridtypes import Deployment, GridTypeError, Workload, ZMachine, validate
from zos.registry import Node, RegistryClient


def prefer_gateway_nodes(m: Manifest, up: list[Node]) -> list[Node]:
    """The nodes a manifest with gateways would rather run on: those it names as
    gateways, else those that serve gateways (all of `up` if none does)."""
    if not m.gateways:
        return up
    named = {g.node for g in m.gateways if g.node is not None}
    if named:
        wanted = [n for n in up if n.id in named]
    else:
        wanted = [n for n in up if n.public_config.gateway]
    return wanted or up


def _refusal(g: GatewaySpec, node: Node) -> str | None:
    """Why `node` cannot serve `g` (None: it can)."""
    config = node.public_config
    if g.name is not None and not config.gateway:
        return "has no public IPv4 and domain" if not config.ipv4 else "has no domain"
    return None if config.ipv4 else "has no public IPv4"


async def place_gateways(
    m: Manifest,
    node_of: Mapping[str, Node],
    node_by_id: Callable[[int], Awaitable[Node]],
    up_nodes: Callable[[], Awaitable[list[Node]]],
) -> list[Node]:
    """The node serving each gateway: its `node:`, else its machine's node if that serves
    gateways, else an up node that does (one already picked first, then the lowest id).
    ManifestError naming the field. `node_of`: machine name -> the node it is placed on."""
    picked: list[Node] = []
    up: list[Node] | None = None
    for i, g in enumerate(m.gateways):
        if g.node is not None:
            try:
                node = await node_by_id(g.node)
            except GridClientError as e:
                raise ManifestError(
                    f"gateways[{i}].node: {e}",
                    m.source_line("gateways", i, "node"),
                    f"gateways[{i}].node",
                ) from None
            why = _refusal(g, node)
            if why:
                raise ManifestError(
                    f"gateways[{i}].node: node {node.id} {why}: it serves no gateways "
                    "(`zos nodes --gateway` lists those that do)",
                    m.source_line("gateways", i, "node"),
                    f"gateways[{i}].node",
                )
        elif _refusal(g, node_of[g.machine]) is None:
            node = node_of[g.machine]
        else:
            up = await up_nodes() if up is None else up
            serving = [n for n in up if _refusal(g, n) is None]
            chosen = {n.id for n in picked}
            serving.sort(key=lambda n: (n.id not in chosen, n.id))
            if not serving:
                raise ManifestError(
                    f"gateways[{i}]: node {node_of[g.machine].id}, where machine "
                    f"'{g.machine}' runs, serves no gateways, and no up node does "
                    "(`zos nodes --gateway` lists them)",
                    m.source_line("gateways", i),
                    f"gateways[{i}]",
                )
            node = serving[0]
        picked.append(node)
    return picked


def check_spannable(m: Manifest, machine_node: int, gateway_nodes: Sequence[int]) -> None:
    """A one-node manifest whose gateway runs on another node: its network then spans
    both, so it must be one that can (a private /16, addresses left to the planner)."""
    i = next(i for i, n in enumerate(gateway_nodes) if n != machine_node)
    try:
        check_spanning(m, ipaddress.IPv4Network(m.network.ip_range))
    except ValueError as e:
        raise ManifestError(
            f"gateways[{i}]: served by node {gateway_nodes[i]}, its machine runs on node "
            f"{machine_node}: the network spans both nodes, and {e}",
            m.source_line("gateways", i),
            f"gateways[{i}]",
        ) from None


def _backend(g: GatewaySpec, ip: str) -> str:
    return f"{ip}:{g.port}" if g.tls_passthrough else f"http://{ip}:{g.port}"


def gateway_workload(g: GatewaySpec, ip: str, network: str) -> Workload:
    data = {"tls_passthrough": g.tls_passthrough, "backends": [_backend(g, ip)], "network": network}
    if g.name is not None:
        kind, data["name"] = "gateway-name-proxy", g.name
    else:
        kind, data["fqdn"] = "gateway-fqdn-proxy", g.fqdn
    return Workload.from_raw({"version": 0, "name": g.workload_name, "type": kind, "data": data})


def add_gateways(deps: Mapping[int, Deployment], m: Manifest, nodes: Sequence[int]) -> None:
    """Append each gateway of the manifest to the deployment on its node (`nodes`, by
    gateway), to its machine's address on the manifest's network (in any of `deps`)."""
    if not m.gateways:
        return
    ips = {}
    for dep in deps.values():
        for wl in dep.workloads:
            if isinstance(wl.data, ZMachine):
                for inf in wl.data.network.interfaces:
                    if inf.network == m.network_name:
                        ips[wl.name] = str(inf.ip)
    for g, node_id in zip(m.gateways, nodes, strict=True):
        deps[node_id].workloads.append(gateway_workload(g, ips[g.machine], m.network_name))
    for node_id in set(nodes):
        try:
            validate(deps[node_id])
        except GridTypeError as e:
            i = next((i for i, g in enumerate(m.gateways) if g.workload_name == e.workload), None)
            raise ManifestError(str(e), m.source_line("gateways", i)) from None


async def claim_names(registry: RegistryClient, twin_id: int, m: Manifest) -> list[str]:
    """A name contract of yours for each gateway `name`; the names newly taken (the
    caller gives those back if the deployment is refused). ManifestError naming the
    gateway whose name another twin holds; what this call took is given back first."""
    taken: list[str] = []
    for i, g in enumerate(m.gateways):
        if g.name is None:
            continue
        try:
            try:
                contract = await registry.get_name_contract(g.name)
            except BusError as e:
                if e.code != "not_found":
                    raise
                await registry.create_name_contract(g.name)
                taken.append(g.name)
                continue
            if contract.owner_twin != twin_id:
                raise BusError(
                    "conflict", f"name {g.name!r} is taken by twin {contract.owner_twin}"
                )
        except BusError as e:
            await release_names(registry, taken)
            raise ManifestError(
                f"gateways[{i}].name: {e.message} (pick another name)",
                m.source_line("gateways", i, "name"),
                f"gateways[{i}].name",
            ) from None
    return taken


async def release_names(registry: RegistryClient, names: Iterable[str]) -> None:
    """Cancel the name contracts of `names` (those already gone are left)."""
    for name in sorted(set(names)):
        try:
            await registry.cancel_name_contract(name)
        except BusError as e:
            if e.code != "not_found":
                raise GridClientError(
                    f"the name contract of {name!r} stays yours: {e.message} "
                    f"(cancel it with the SDK: `RegistryClient.cancel_name_contract`)"
                ) from None


def uses_network(d: DeploymentInfo, network: str) -> bool:
    """Whether a machine or gateway of `d` is on `network`."""
    return any(x.network == network for x in d.machines) or any(
        g.network == network for g in d.gateways
    )


def names_of(deployments: Iterable[DeploymentInfo]) -> set[str]:
    """The names the deployments' name proxies serve (their name contracts)."""
    return {g.proxy_name for d in deployments for g in d.gateways if g.proxy_name}
