"""From a manifest to the deployment a node is sent: its network, disks and machines as
zos workloads, the metadata `ps` reads back, checked by `gridtypes.validate`.

A one-node deployment carries its network (`network_workload`). The part of a manifest
over several nodes joins the network planned across them (`zos.client.networks`), which
its node holds in a deployment of its own: `subnet=` that node's /24, no network workload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from ipaddress import IPv4Network
from typing import Any

from zos.client.manifest import Manifest, ManifestError
from zos.client.views import DeploymentInfo
from zos.gridtypes import (
    Deployment,
    GridTypeError,
    SignatureRequest,
    SignatureRequirement,
    Workload,
    validate,
)

METADATA_KIND = "zos-manifest"


def _digest(twin_id: int, m: Manifest) -> bytes:
    """Stable per twin and deployment name: the default subnet and WireGuard port."""
    return hashlib.sha256(f"{twin_id}:{m.name}".encode()).digest()


def subnet_of(twin_id: int, m: Manifest) -> IPv4Network:
    return IPv4Network(m.network.subnet or f"10.20.{_digest(twin_id, m)[0] % 250 + 1}.0/24")


def network_workload(twin_id: int, m: Manifest) -> dict[str, Any]:
    """The manifest's network on its one node: a fresh WireGuard key, no peers."""
    return {
        "name": m.network_name,
        "type": "network",
        "data": {
            "ip_range": m.network.ip_range,
            "subnet": str(subnet_of(twin_id, m)),
            "wireguard_private_key": base64.b64encode(os.urandom(32)).decode(),
            "wireguard_listen_port": 20000 + int.from_bytes(_digest(twin_id, m)[1:3]) % 40000,
            "peers": [],
        },
    }


def taken_ips(mine: list[DeploymentInfo], node_id: int, m: Manifest) -> set[str]:
    """Addresses your other deployments' machines hold on the same node and network."""
    return {
        x.ip
        for d in mine
        if d.node_id == node_id and d.name != m.name
        for x in d.machines
        if x.network == m.network_name
    }


def build_deployment(
    twin_id: int,
    m: Manifest,
    flists: dict[str, str],
    taken: set[str] | None = None,
    published: list[str] | None = None,
    subnet: IPv4Network | None = None,
) -> Deployment:
    """The deployment for `m`; machines without an `ip` get the first free ones of the
    subnet, skipping `taken` (your other machines on the same network and node);
    `published`: the flists this deploy pushed to the hub (`rm` removes them);
    `subnet`: the node's /24 of a network that is there already (not one of its own)."""
    taken = set(taken or ()) | {x.ip for x in m.machines if x.ip}
    hosts = (subnet or subnet_of(twin_id, m)).hosts()
    free = [str(a) for a in list(hosts)[1:]]  # .1: the gateway
    workloads = [] if subnet else [network_workload(twin_id, m)]
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
                        "interfaces": [{"network": m.network_name, "ip": ip}],
                    },
                    "size": mach.disk_size or 0,
                    "compute_capacity": {"cpu": mach.cpu, "memory": mach.memory},
                    "mounts": [{"name": x.disk, "mountpoint": x.mountpoint} for x in mach.mounts],
                    "entrypoint": mach.entrypoint,
                    "env": mach.env,
                    # the default is left out: such a deployment is signed as zos signs it
                    **({"runtime": mach.runtime} if mach.runtime != "container" else {}),
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
        twin_id=twin_id,
        metadata=json.dumps(meta, separators=(",", ":")),
        description=m.description,
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=twin_id, required=True, weight=1)],
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


async def check_flists(m: Manifest) -> None:
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
