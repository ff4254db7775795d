"""Deploying a manifest's `gateways:` (`zos.client.gatewayspec`): which node serves
each, its name contract, and its workload in the deployment.

A gateway is a workload of the machines' own deployment (`gateway-name-proxy` or
`gateway-fqdn-proxy`, after the machines in the node's install order), on the machine's
node, which must serve gateways (a public config its farmer set: an IPv4, and a domain
for names). Its backend is the machine's address on the manifest's private network,
so the workload names that network (`network`: the node reaches it from inside the
network's namespace). A gateway on another node than its machine needs the network
deployed there too and joined to the machine's node by the network's WireGuard mesh
(multi-node networks); until the client plans those, such a gateway is refused before
anything is sent.

Names are global: `claim_names` takes a name contract for each `name` (keeping one you
own already) before the deployment is sent; `release_names` gives them back when the
deployment goes and no other deployment of yours serves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from zos.bus import BusError
from zos.client.errors import GridClientError
from zos.client.gatewayspec import GatewaySpec
from zos.client.manifest import Manifest, ManifestError
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


def check_nodes(m: Manifest, node_of: Mapping[str, Node]) -> None:
    """Each gateway's node (its machine's) serves what it needs; ManifestError naming
    the gateway's field if not. `node_of`: machine name -> the node it is placed on."""
    for i, g in enumerate(m.gateways):
        node = node_of[g.machine]
        if g.node is not None and g.node != node.id:
            raise ManifestError(
                f"gateways[{i}].node: machine '{g.machine}' runs on node {node.id}; a gateway "
                f"on node {g.node} would reach it only over the network's WireGuard mesh "
                "between the two nodes, which deployments do not plan yet (leave `node` out, "
                "or put the machine on that node)",
                m.source_line("gateways", i, "node"),
                f"gateways[{i}].node",
            )
        config = node.public_config
        if g.name is not None and not config.gateway:
            why = "has no public IPv4 and domain" if not config.ipv4 else "has no domain"
        elif not config.ipv4:
            why = "has no public IPv4"
        else:
            continue
        raise ManifestError(
            f"gateways[{i}]: node {node.id}, where machine '{g.machine}' runs, {why}: it "
            "serves no gateways (`zos nodes --gateway` lists those that do; put the machine "
            "on one with `node:`)",
            m.source_line("gateways", i),
            f"gateways[{i}]",
        )


def _backend(g: GatewaySpec, ip: str) -> str:
    return f"{ip}:{g.port}" if g.tls_passthrough else f"http://{ip}:{g.port}"


def gateway_workload(g: GatewaySpec, ip: str, network: str) -> Workload:
    data = {"tls_passthrough": g.tls_passthrough, "backends": [_backend(g, ip)], "network": network}
    if g.name is not None:
        kind, data["name"] = "gateway-name-proxy", g.name
    else:
        kind, data["fqdn"] = "gateway-fqdn-proxy", g.fqdn
    return Workload.from_raw({"version": 0, "name": g.workload_name, "type": kind, "data": data})


def add_gateways(dep: Deployment, m: Manifest) -> None:
    """Append the manifest's gateways to its deployment (built by `building`), each to its
    machine's address on the manifest's network."""
    if not m.gateways:
        return
    ips = {}
    for wl in dep.workloads:
        if isinstance(wl.data, ZMachine):
            for inf in wl.data.network.interfaces:
                if inf.network == m.network_name:
                    ips[wl.name] = str(inf.ip)
    for g in m.gateways:
        dep.workloads.append(gateway_workload(g, ips[g.machine], m.network_name))
    try:
        validate(dep)
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


def names_of(deployments: Iterable[DeploymentInfo]) -> set[str]:
    """The names the deployments' name proxies serve (their name contracts)."""
    return {g.proxy_name for d in deployments for g in d.gateways if g.proxy_name}
