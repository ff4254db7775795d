"""What the SDK shows of a deployment: `DeploymentInfo` with its workloads and machines,
read from what a node answers (zos JSON) and the host ports a local grid forwards."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from zos.client.errors import GridClientError
from zos.grid.state import Forward
from zos.gridtypes import (
    Deployment,
    GatewayFQDNProxy,
    GatewayNameProxy,
    GridTypeError,
    Workload,
    ZMachine,
)
from zos.nodeapi.commands import Encryption
from zos.registry import NodeContract


class MachineInfo(BaseModel):
    name: str
    flist: str = ""
    ip: str = ""
    network: str = ""
    state: str = ""
    message: str = ""
    urls: list[str] = Field(default_factory=list)
    runtime: str = "container"  # or "vm"


class WorkloadInfo(BaseModel):
    name: str
    type: str
    state: str
    message: str = ""


class GatewayInfo(BaseModel):
    name: str
    fqdn: str = ""  # a name proxy's comes from the node's result, once it is built
    proxy_name: str = ""  # a name proxy's name (its name contract)
    url: str = ""
    state: str = ""
    backends: list[str] = Field(default_factory=list)
    network: str = ""  # the private network it reaches its backend on


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
    encrypted: bool = False  # its data is under a key only you (and teammates) can give
    locked: bool = False  # its node restarted and lost the key: `unlock` gives it again


def overall(states: list[str]) -> str:
    if any(s == "error" for s in states):
        return "error"
    if states and all(s == "deleted" for s in states):
        return "deleted"
    if states and all(s == "ok" for s in states):
        return "ok"
    return "deploying"


def gateway_of(wl: Workload, state: str) -> GatewayInfo:
    data = wl.data
    fqdn = data.fqdn if isinstance(data, GatewayFQDNProxy) else ""
    result = wl.result.data
    if isinstance(data, GatewayNameProxy) and isinstance(result, dict):
        fqdn = str(result.get("fqdn") or "")
    return GatewayInfo(
        name=wl.name,
        fqdn=fqdn,
        proxy_name=data.name if isinstance(data, GatewayNameProxy) else "",
        url=f"https://{fqdn}" if fqdn else "",
        state=state,
        backends=list(data.backends),  # type: ignore[union-attr]
        network=data.network or "",  # type: ignore[union-attr]
    )


def read_deployment(raw: Any, node_id: int, forwards: list[Forward]) -> DeploymentInfo:
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
            gateways.append(gateway_of(wl, state))
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
                    runtime=wl.data.runtime or "container",
                )
            )
    return DeploymentInfo(
        name=str(name) if name else f"contract-{dep.contract_id}",
        contract_id=dep.contract_id,
        node_id=node_id,
        state=overall([w.state for w in workloads]),
        workloads=workloads,
        machines=machines,
        gateways=gateways,
        published=published,
    )


def unknown(c: NodeContract, why: str) -> DeploymentInfo:
    """A contract whose deployment could not be read from its node."""
    return DeploymentInfo(
        name=f"contract-{c.id}", contract_id=c.id, node_id=c.node_id, state="unknown", message=why
    )


def mark_encryption(info: DeploymentInfo, status: Encryption) -> None:
    """`info` as encrypted and locked as its node's encryption status says."""
    info.encrypted = status.encrypted
    info.locked = status.locked
    if info.locked:
        info.state = "locked"
        info.message = (
            f"locked: node {info.node_id} restarted and holds no key for it; "
            f"`zos unlock {info.name}` gives it back"
        )


def find(deps: list[DeploymentInfo], name: str) -> tuple[DeploymentInfo, str | None]:
    """The deployment `name` (or `name/machine`, or a machine's unique name) among `deps`,
    and the machine named, if one was."""
    dep_name, _, machine = name.partition("/")
    matches = [d for d in deps if d.name == dep_name]
    if not matches and not machine:
        matches = [d for d in deps if any(x.name == dep_name for x in d.machines)]
        if len(matches) == 1:
            return matches[0], dep_name
    if not matches:
        known = ", ".join(sorted({d.name for d in deps})) or "none"
        raise GridClientError(f"no deployment named '{dep_name}' (yours: {known})")
    # a manifest over several nodes is one deployment per node: the machine's own
    holding = [d for d in matches if any(x.name == machine for x in d.machines)]
    return (holding or matches)[0], machine or None


def machine_of(info: DeploymentInfo, machine: str | None) -> str:
    """The machine of `info` that `logs` reads: the one named, or its only one."""
    if machine is None:
        if not info.machines:
            raise GridClientError(f"'{info.name}' has no machines")
        if len(info.machines) != 1:
            names = ", ".join(x.name for x in info.machines)
            raise GridClientError(
                f"'{info.name}' has {len(info.machines)} machines ({names}): "
                f"say which, e.g. `zos logs {info.name}/{info.machines[0].name}`"
            )
        return info.machines[0].name
    if not any(x.name == machine for x in info.machines):
        raise GridClientError(f"'{info.name}' has no machine named '{machine}'")
    return machine
