"""A zmachine from a real flist: packed into a block store, prepared by the node's flist
cache, run with the image's own entrypoint and env from the flist's tags."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from netzm_helpers import ctx, deployment, machines, network_data, node_with_flist, unique_twin

from zos.node.workloads.base import NodeServices, WorkloadError
from zos.node.workloads.network import NetworkManager

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root]

MiB = 1 << 20


@pytest.fixture
async def node(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[NodeServices]:
    tags = {
        "entrypoint": json.dumps(["sh", "-c"]),
        "cmd": json.dumps(["echo image says $IMG; exec sleep 1000"]),
        "env": json.dumps(["IMG=tagged", "PATH=/bin"]),
    }
    async with node_with_flist(tmp_path, busybox_rootfs, "busybox.fl", tags) as svc:
        yield svc


async def test_zmachine_from_flist_with_image_entrypoint(
    node: NodeServices, tmp_path: Path
) -> None:
    twin = unique_twin()
    fl = tmp_path / "busybox.fl"
    m = {
        "name": "m",
        "type": "zmachine",
        "data": {
            "flist": str(fl),
            "network": {"interfaces": [{"network": "net", "ip": "10.74.1.2"}]},
            "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
            "entrypoint": "",
        },
    }
    dep = deployment(
        twin, 500, [{"name": "net", "type": "network", "data": network_data("10.74.1.0/24")}, m]
    )
    await NetworkManager(node).provision(ctx(node, dep, "net"))
    zm = machines(node, fresh=True)
    await zm.provision(ctx(node, dep, "m"))
    await zm.provision(ctx(node, dep, "m"))  # again: still one hold on the tree
    cache = node.flist_cache
    assert cache is not None
    tree = next((cache.trees_dir).iterdir())
    assert cache.in_use(tree) == 1
    wid = f"{twin}-500-m"
    for _ in range(100):
        out = b"".join([c async for c in zm.read_logs(wid)])
        if b"image says tagged" in out:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(out)
    # a flist the cache cannot get is refused with the cache's reason, nothing built
    bad = deployment(
        twin,
        501,
        [
            {
                **m,
                "data": {
                    **m["data"],
                    "flist": str(tmp_path / "missing.fl"),
                    "network": {"interfaces": [{"network": "net", "ip": "10.74.1.3"}]},
                },
            }
        ],
    )
    with pytest.raises(WorkloadError, match=r"flist: .*missing\.fl"):
        await zm.provision(ctx(node, bad, "m"))
    assert not (node.data_dir / "zmachines" / f"{twin}-501-m").exists()
    await zm.deprovision(ctx(node, dep, "m"))
    assert cache.in_use(tree) == 0
