"""Helpers shared by the network and zmachine manager tests: contexts and probes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from zos.flist import Router, pack
from zos.flist.cache import FlistCache
from zos.gridtypes import Deployment
from zos.node.runtimes.runc import RuncRuntime
from zos.node.workloads.base import NodeServices, WorkloadContext
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.primitives import filesystem, logd, netns
from zos.primitives.supervisor import Backoff

WG_KEY = base64.b64encode(bytes(range(32))).decode()


def unique_twin() -> int:
    return random.randint(10_000, 4_000_000_000)


def free_udp_port() -> int:
    """A UDP port nothing holds now (each network of a node needs its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def network_data(subnet: str, ip_range: str = "10.0.0.0/8") -> dict[str, Any]:
    return {
        "ip_range": ip_range,
        "subnet": subnet,
        "wireguard_private_key": WG_KEY,
        "wireguard_listen_port": free_udp_port(),
        "peers": [],
    }


def machine(
    name: str,
    flist: str,
    ip: str,
    entrypoint: str = "sleep 1000",
    mounts: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A zmachine workload on network `net`, 1 core and 256 MiB."""
    return {
        "name": name,
        "type": "zmachine",
        "data": {
            "flist": flist,
            "network": {"interfaces": [{"network": "net", "ip": ip}]},
            "compute_capacity": {"cpu": 1, "memory": 256 << 20},
            "mounts": mounts or [],
            "entrypoint": entrypoint,
        },
    }


def deployment(twin: int, contract: int, workloads: list[dict[str, Any]]) -> Deployment:
    return Deployment.from_dict(
        {
            "version": 0,
            "twin_id": twin,
            "contract_id": contract,
            "workloads": [{"version": 0, **w} for w in workloads],
        }
    )


def ctx(node: NodeServices, dep: Deployment, name: str) -> WorkloadContext:
    return WorkloadContext(
        twin_id=dep.twin_id,
        contract_id=dep.contract_id,
        deployment=dep,
        workload=dep.get(name),
        node=node,
    )


def listen_in(ns: str | None, port: int = 0, host: str = "0.0.0.0") -> socket.socket:
    """A TCP listener inside namespace `ns` (a socket keeps the namespace it was made in)."""

    def make() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(16)
        return s

    return netns.run_in(ns, make) if ns else make()


def can_connect(ns: str, host: str, port: int, timeout: float = 1.0) -> bool:
    def attempt() -> bool:
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    return netns.run_in(ns, attempt)


def ns_inode(path: Path | str) -> int:
    return os.stat(path).st_ino


_machines: dict[int, ZMachineManager] = {}


def runc_runtime(zm: ZMachineManager) -> RuncRuntime:
    """The manager's runc runtime (the runc state and supervisor a test looks into)."""
    runtime = zm.runtime(RuncRuntime.name)
    assert isinstance(runtime, RuncRuntime)
    return runtime


def machines(svc: NodeServices, fresh: bool = False) -> ZMachineManager:
    """The test's zmachine manager on `svc`, one per node as an agent has; `fresh`: a new
    one (as after an agent restart)."""
    if fresh or id(svc) not in _machines:
        _machines[id(svc)] = ZMachineManager(svc)
    return _machines[id(svc)]


async def remove_everything(svc: NodeServices) -> None:
    """What a test left on a node: containers, mounts, namespaces, uplinks, log daemon."""
    if id(svc) in _machines:
        await _machines.pop(id(svc)).close()  # the test's manager stops supervising first
    zm = ZMachineManager(svc)
    await zm.cleanup(set())
    await NetworkManager(svc).cleanup(set())
    await VolumeManager(svc).cleanup(set())
    await asyncio.to_thread(logd.stop_daemon, runc_runtime(zm).logs_root)
    assert filesystem.mounts_under(svc.data_dir) == []


@contextlib.asynccontextmanager
async def node_with_flist(
    tmp_path: Path, tree: Path, name: str, tags: dict[str, str] | None = None
) -> AsyncIterator[NodeServices]:
    """A node whose flist cache prepares `tree`, packed here as `<tmp_path>/<name>` with
    its blocks in a dir:// store; everything the test left on it removed afterwards."""
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    await pack(tree, tmp_path / name, router, tags=tags or {})
    cache = FlistCache(tmp_path / "cache", 1 << 30, router)
    svc = NodeServices(
        data_dir=tmp_path / "node",
        flist_cache=cache,
        local_flists=(tmp_path,),
        backoff=Backoff(base=0.2),
    )
    try:
        yield svc
    finally:
        await remove_everything(svc)
        cache.close()
        await router.close()
