"""`zos node run` (a real subprocess, real registry on nats-server) serving a network,
a volume and a zmachine whose root file system is a busybox flist packed here, its `.fl`
and blocks served over HTTP by the store the node is given with `--store`. Signed
deployments over the bus, logs for the owner only, an agent restart that finds the
machine still running, and deletion that leaves no namespace, container or mount."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import network_data
from nodehelpers import ZOS, MiB, NodeProcess, leftovers, wipe

from zos.bus import BusError
from zos.node.runtimes.runc import RuncRuntime, container_id
from zos.node.workloads import NodeServices
from zos.nodeapi import commands as api
from zos.primitives import filesystem, netns

pytestmark = [
    pytest.mark.nats,
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.netns,
    pytest.mark.slow,
]


def runc_ids(data_dir: Path) -> list[str]:
    """Container ids `runc list` shows in the node's runc root (as its manager sets it)."""
    root = RuncRuntime(NodeServices(data_dir=data_dir)).runc.root
    if not root.exists():
        return []
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


async def read_logs_until(user: Any, node: NodeProcess, args: dict, want: str) -> int:
    """Ask for the logs again and again until `want` shows; the next offset."""
    deadline = time.monotonic() + 15
    data, offset = "", 0
    while want not in data:
        assert time.monotonic() < deadline, f"{data!r}\n{node.log()[-3000:]}"
        answer = await user.node(node).zmachine_logs(**args, offset=offset)
        data += answer.data
        offset = answer.offset
        await asyncio.sleep(0.1)
    return offset


async def test_zmachine_through_the_agent(
    make_user, make_node, busybox_flist, prefix: str, sweep: list[NodeProcess]
) -> None:
    url, store = busybox_flist
    owner, stranger = await make_user(), await make_user()
    node = await make_node(
        owner,
        "--disk",
        "4G",
        "--store",
        store,
        "--netns-prefix",
        prefix,
        "--cache-size",
        "256M",
    )
    sweep.append(node)
    dep = owner.deployment(
        [
            {"name": "net", "type": "network", "data": network_data("10.76.1.0/24")},
            {"name": "vol", "type": "volume", "data": {"size": 32 * MiB}},
            {
                "name": "vm",
                "type": "zmachine",
                "data": {
                    "flist": url,
                    "network": {"interfaces": [{"network": "net", "ip": "10.76.1.2"}]},
                    "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
                    "mounts": [{"name": "vol", "mountpoint": "/data"}],
                    "entrypoint": "sh -c 'while true; do echo alive $WHO; sleep 0.2; done'",
                    "env": {"WHO": "here"},
                },
            },
        ]
    )
    await owner.deploy(node, dep)
    got = await owner.wait_states(node, dep.contract_id, {"net": "ok", "vol": "ok", "vm": "ok"})
    vm = next(w for w in got["workloads"] if w["name"] == "vm")
    assert vm["result"]["data"]["ip"] == "10.76.1.2"
    wid = f"{owner.twin_id}-{dep.contract_id}-vm"
    cid = container_id(wid)
    assert runc_ids(node.data_dir) == [cid]
    assert netns.exists(f"{prefix}c-{wid}")
    # the node's flist cache (under its data dir) prepared the tree from the given store
    assert any((node.data_dir / "flist-cache" / "trees").iterdir())

    # logs: the owner reads them (long poll with follow), anyone else learns nothing
    args = {"contract_id": dep.contract_id, "name": "vm"}
    offset = await read_logs_until(owner, node, args, "alive here")
    more = await owner.node(node).zmachine_logs(**args, offset=offset, follow=True)
    assert more.data.startswith("alive") and more.offset > offset
    with pytest.raises(BusError) as refused:
        await stranger.node(node).zmachine_logs(**args)
    assert refused.value.code == "not_found"
    with pytest.raises(BusError, match="no zmachine 'vol'"):
        await owner.node(node).zmachine_logs(dep.contract_id, "vol")
    with pytest.raises(BusError, match="name"):
        await owner.call(node, api.ZMACHINE_LOGS, {**args, "name": "../x"})  # hostile: raw

    # the agent stops (its managers let go) and starts again: the machine kept running
    pid = _runc_pid(node.data_dir, cid)
    assert node.stop() == 0
    assert _runc_pid(node.data_dir, cid) == pid
    node.start()
    await node.wait_ready(owner)
    await owner.wait_states(node, dep.contract_id, {"vm": "ok"})
    assert _runc_pid(node.data_dir, cid) == pid
    await read_logs_until(owner, node, args, "alive here")

    # deletion takes down all of it
    await owner.node(node).delete(dep.contract_id)
    await owner.wait_states(
        node, dep.contract_id, {"net": "deleted", "vol": "deleted", "vm": "deleted"}
    )
    assert runc_ids(node.data_dir) == []
    assert netns.names(prefix) == []
    assert filesystem.mounts_under(node.data_dir) == []
    assert leftovers(node.data_dir) == {"mounts": [], "loops": [], "files": []}
    stats = await owner.node(node).statistics()
    assert stats.used == stats.system


def _runc_pid(data_dir: Path, cid: str) -> int:
    root = RuncRuntime(NodeServices(data_dir=data_dir)).runc.root
    out = subprocess.run(
        ["runc", "--root", str(root), "state", cid], capture_output=True, text=True, check=True
    ).stdout
    return int(json.loads(out)["pid"])


async def test_wipe_removes_what_the_node_made(
    make_user, make_node, busybox_flist, prefix: str, sweep: list[NodeProcess]
) -> None:
    url, store = busybox_flist
    owner = await make_user()
    node = await make_node(owner, "--disk", "4G", "--store", store, "--netns-prefix", prefix)
    sweep.append(node)
    dep = owner.deployment(
        [
            {"name": "net", "type": "network", "data": network_data("10.77.1.0/24")},
            {"name": "vol", "type": "volume", "data": {"size": 32 * MiB}},
            {"name": "disk", "type": "zmount", "data": {"size": 32 * MiB}},
            {
                "name": "vm",
                "type": "zmachine",
                "data": {
                    "flist": url,
                    "network": {"interfaces": [{"network": "net", "ip": "10.77.1.2"}]},
                    "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
                    "mounts": [{"name": "vol", "mountpoint": "/data"}],
                    "entrypoint": "sleep 1000",
                },
            },
        ]
    )
    await owner.deploy(node, dep)
    await owner.wait_states(
        node, dep.contract_id, {"net": "ok", "vol": "ok", "disk": "ok", "vm": "ok"}
    )
    assert node.stop() == 0
    assert runc_ids(node.data_dir)  # the agent stopped; its machine runs on
    wiped = wipe(node.data_dir, prefix)
    assert wiped.returncode == 0, wiped.stderr
    assert runc_ids(node.data_dir) == []
    assert netns.names(prefix) == []
    assert filesystem.mounts_under(node.data_dir) == []
    assert leftovers(node.data_dir) == {"mounts": [], "loops": [], "files": []}
    refused = subprocess.run(
        [*ZOS, "node", "wipe", "--data-dir", str(node.data_dir.parent / "www")],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "not a node's data directory" in refused.stderr
