"""network + volume + zmachine through the node's real engine and bus router, in this
process: signed deployments, install order, results, `zos.zmachine.logs` for the owner
only, an engine restart that finds its machines running, and deletion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import network_data, remove_everything, unique_twin

from zos.bus import BusError, Request
from zos.gridtypes import Deployment, SignatureRequest, SignatureRequirement, Workload
from zos.gridtypes.names import network_id
from zos.identity import Identity
from zos.node.api import node_router
from zos.node.api_zmachine import zmachine_router
from zos.node.capacity import Offer
from zos.node.engine import ContractInfo, Engine
from zos.node.store import Store
from zos.node.workloads.base import NodeServices
from zos.node.workloads.network import NetworkManager, namespace_name
from zos.node.workloads.volume import VolumeManager
from zos.node.workloads.zmachine import ZMachineManager, container_id
from zos.primitives import filesystem, netns
from zos.primitives.supervisor import Backoff

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root]

MiB = 1 << 20
NODE_ID = 7


@dataclass
class LocalGrid:
    """The registry as the engine sees it, held in memory: twins' keys and node contracts."""

    keys: dict[int, bytes] = field(default_factory=dict)
    contracts: dict[int, ContractInfo] = field(default_factory=dict)

    async def twin_key(self, twin_id: int) -> bytes | None:
        return self.keys.get(twin_id)

    async def node_contract(self, contract_id: int) -> ContractInfo | None:
        return self.contracts.get(contract_id)


def make_engine(svc: NodeServices, grid: LocalGrid) -> tuple[Engine, Any]:
    managers = {
        "volume": VolumeManager(svc),
        "network": NetworkManager(svc),
        "zmachine": ZMachineManager(svc),
    }
    svc.extra["zm"] = managers["zmachine"]
    svc.data_dir.mkdir(parents=True, exist_ok=True)
    offer = Offer.measure(svc.data_dir, cores=4, memory=8 << 30, disk=20 << 30)
    engine = Engine(Store(svc.data_dir / "state.db"), managers, svc, offer, grid, NODE_ID)
    router = node_router(engine)
    router.include(zmachine_router(engine))
    return engine, router


@pytest.fixture
async def node(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[NodeServices]:
    svc = NodeServices(
        data_dir=tmp_path / "node",
        extra={"local_flists": [str(busybox_rootfs)], "zmachine_backoff": Backoff(0.2)},
    )
    try:
        yield svc
    finally:
        await remove_everything(svc)


def signed(grid: LocalGrid, who: Identity, twin: int, contract: int, workloads: list) -> dict:
    dep = Deployment(
        version=0,
        twin_id=twin,
        contract_id=contract,
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=twin, required=True, weight=1)], weight_required=1
        ),
        workloads=[Workload.from_raw({"version": 0, **w}) for w in workloads],
    )
    dep.sign(twin, who)
    grid.contracts[contract] = ContractInfo(contract, NODE_ID, twin, dep.hash_hex(), True)
    return dep.to_dict()


async def call(router: Any, twin: int, command: str, payload: Any) -> Any:
    return await router.dispatch(Request(twin, command, payload, None))  # type: ignore[arg-type]


async def test_through_engine_and_router(node: NodeServices, busybox_rootfs: Path) -> None:
    grid = LocalGrid()
    owner, other = Identity.generate(), Identity.generate()
    twin, stranger = unique_twin(), unique_twin()
    grid.keys[twin], grid.keys[stranger] = owner.public_key, other.public_key
    engine, router = make_engine(node, grid)
    await engine.start()
    contract = 9_000 + twin % 1000
    workloads = [
        {"name": "net", "type": "network", "data": network_data("10.75.1.0/24")},
        {"name": "vol", "type": "volume", "data": {"size": 32 * MiB}},
        {
            "name": "vm",
            "type": "zmachine",
            "data": {
                "flist": str(busybox_rootfs),
                "network": {"interfaces": [{"network": "net", "ip": "10.75.1.2"}]},
                "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
                "mounts": [{"name": "vol", "mountpoint": "/data"}],
                "entrypoint": "sh -c 'while true; do echo alive $WHO; sleep 0.2; done'",
                "env": {"WHO": "here"},
            },
        },
    ]
    await call(
        router, twin, "zos.deployment.deploy", signed(grid, owner, twin, contract, workloads)
    )
    await engine.wait_idle()
    dep = await call(router, twin, "zos.deployment.get", {"contract_id": contract})
    results = {w["name"]: w["result"] for w in dep["workloads"]}
    assert {n: r["state"] for n, r in results.items()} == {"net": "ok", "vol": "ok", "vm": "ok"}, (
        results
    )
    assert results["vm"]["data"]["ip"] == "10.75.1.2"
    # logs for the owner, over the router; nothing for another twin
    args = {"contract_id": contract, "name": "vm"}
    deadline = time.monotonic() + 10
    data, offset = "", 0
    while "alive here" not in data:
        assert time.monotonic() < deadline, data
        answer = await call(router, twin, "zos.zmachine.logs", {**args, "offset": offset})
        data += answer["data"]
        offset = answer["offset"]
        await asyncio.sleep(0.1)
    more = await call(router, twin, "zos.zmachine.logs", {**args, "offset": offset, "follow": True})
    assert more["data"].startswith("alive") and more["offset"] > offset
    with pytest.raises(BusError) as refused:
        await call(router, stranger, "zos.zmachine.logs", args)
    assert refused.value.code == "not_found"
    with pytest.raises(BusError, match="no zmachine 'vol'"):
        await call(router, twin, "zos.zmachine.logs", {"contract_id": contract, "name": "vol"})
    with pytest.raises(BusError, match="name"):
        await call(router, twin, "zos.zmachine.logs", {"contract_id": contract, "name": "../x"})
    # the agent restarts: a new engine on the same store finds the machine running
    zm: ZMachineManager = node.extra["zm"]
    cid = container_id(f"{twin}-{contract}-vm")
    pid = (await zm.runc.state(cid))["pid"]
    await engine.close()
    zm.close()
    engine, router = make_engine(node, grid)
    await engine.start()
    await engine.wait_idle()
    assert (await node.extra["zm"].runc.state(cid))["pid"] == pid
    # deletion takes it all down, in reverse order
    await call(router, twin, "zos.deployment.delete", {"contract_id": contract})
    await engine.wait_idle()
    dep = await call(router, twin, "zos.deployment.get", {"contract_id": contract})
    assert {w["result"]["state"] for w in dep["workloads"]} == {"deleted"}
    assert await node.extra["zm"].runc.state(cid) is None
    assert not netns.exists(namespace_name(node, network_id(twin, "net")))
    assert filesystem.mounts_under(node.data_dir) == []
    await engine.close()
