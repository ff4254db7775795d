"""A `runtime: vm` zmachine on a twin's WireGuard network across two nodes of the local
grid (the mesh test's grid and planner): the light VM on node A answers the owner's
container on node B over the tunnel (ping, an HTTP exchange) and reaches it back (its
console says so); another twin's machines on the same nodes reach neither. The VM's
zmount, dropped by an update while the VM still mounts it, is refused naming the
VM's mount, and nothing changes. One VM boot."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import can_connect
from netzm_helpers import machine as container
from nodehelpers import owned_deployment
from test_network_wireguard_mesh import (
    GRID_MARKS,
    IP_RANGE,
    NAME,
    GridNode,
    Placed,
    apply,
    close,
    grid,
    machine_ip,
    never_reaches,
    nodes_of,
    plan,
    push_busybox,
    reaches,
    tenant,
)
from test_node_vm_e2e import follow_until
from test_zmachine_manager import machine

from zos.bus import BusError
from zos.client.networks.model import NodeNetwork
from zos.grid.state import GridState
from zos.primitives import netns

pytestmark = [*GRID_MARKS, pytest.mark.slow, pytest.mark.timeout(1800)]  # a TCG boot
__all__ = ["grid"]  # the mesh test's module-scoped grid, used here
MiB = 1 << 20
PORT = 8080


def vm_entrypoint(peer: str) -> str:
    """Serve a page, then ping the owner's machine on the other node until it answers."""
    return (
        "sh -c 'echo hello-from-the-vm > /tmp/index.html; httpd -p 8080 -h /tmp; echo SERVING;"
        f" until ping -c 1 -W 2 {peer} >/dev/null; do sleep 1; done; echo REACHED {peer};"
        " exec sleep 1000000'"
    )


def http_get(host: str) -> bytes:
    with socket.create_connection((host, PORT), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return b"".join(iter(lambda: s.recv(4096), b""))


async def place(user: Any, nn: NodeNetwork, node: GridNode, extra: list[dict[str, Any]]) -> Placed:
    """The node's part of the network and the workloads `extra` in one deployment."""
    net = {k: v for k, v in nn.workload(NAME).to_dict().items() if k != "result"}
    dep = user.deployment([{**net, "version": 0}, *({**w, "version": 0} for w in extra)])
    await user.deploy(node, dep)
    return Placed(node, dep.contract_id, machine_ip(nn.subnet))


async def test_a_vm_on_a_two_node_mesh(
    grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    nodes = nodes_of(grid)[:2]  # the two public nodes
    a_node, b_node = nodes
    owner, stranger = await tenant(grid), await tenant(grid)
    try:
        flist = await push_busybox(grid, owner, busybox_rootfs, tmp_path)
        the_plan = await plan(grid, owner, nodes, IP_RANGE)
        a_net, b_net = (the_plan.node(n.node_id) for n in nodes)
        vm_ip, b_ip = machine_ip(a_net.subnet), machine_ip(b_net.subnet)
        disk = {"name": "disk", "type": "zmount", "data": {"size": 64 * MiB}}
        vm = machine(
            "vm", NAME, vm_ip, vm_entrypoint(b_ip), runtime="vm",
            mounts=[{"name": "disk", "mountpoint": "/disk"}],
        )  # fmt: skip
        vm["data"]["flist"] = flist
        a = await place(owner, a_net, a_node, [disk, vm])
        b = await place(owner, b_net, b_node, [container("vm", flist, b_ip)])
        for p in (a, b):
            await owner.wait_states(p.node, p.contract_id, {NAME: "ok", "vm": "ok"})  # type: ignore[arg-type]

        # The VM reaches the owner's machine on node B through the tunnel, and back.
        seen, _ = await follow_until(owner, a_node, a.contract_id, f"REACHED {b_ip}")
        assert "SERVING" in seen
        b_ns = b.namespace(owner.twin_id)
        assert await reaches(b_ns, vm_ip)
        page = await asyncio.to_thread(netns.run_in, b_ns, lambda: http_get(vm_ip))
        assert b"hello-from-the-vm" in page

        # Another twin's network on the same nodes: its machines reach neither.
        theirs: dict[int, Placed] = {}
        t_plan = await plan(grid, stranger, nodes, "10.78.0.0/16")
        t_flist = await push_busybox(grid, stranger, busybox_rootfs, tmp_path / "s")
        await apply(stranger, t_plan, {n.node_id: n for n in nodes}, t_flist, theirs)
        t_a, t_b = (theirs[n.node_id].namespace(stranger.twin_id) for n in nodes)
        assert await reaches(t_b, theirs[a_node.node_id].ip)  # their own mesh works
        for spy in (t_a, t_b):
            for ip in (vm_ip, b_ip):
                assert await never_reaches(spy, ip), ip
            assert not can_connect(spy, vm_ip, PORT)

        # An update dropping only the zmount the VM holds: refused naming the VM's mount,
        # nothing changed (the disk kept, the VM running on). (The zmount manager also
        # refuses to remove a disk a VM's state records: tests/node/test_storage_managers.)
        net = {k: v for k, v in a_net.workload(NAME).to_dict().items() if k != "result"}
        update = owned_deployment(owner.twin_id, [{**net, "version": 0}, {**vm, "version": 0}], 1)
        update.contract_id = a.contract_id
        with pytest.raises(BusError, match=r"'vm' \(zmachine\): data\.mounts\[0\]\.name: no zm"):
            await owner.update(a_node, update)  # type: ignore[arg-type]
        now = await owner.get(a_node, a.contract_id)  # type: ignore[arg-type]
        assert now["version"] == 0
        assert {w["name"]: w["result"]["state"] for w in now["workloads"]}["disk"] == "ok"
        image = Path(a_node.entry.data_dir) / "storage" / "zmounts"
        assert (image / f"{owner.twin_id}-{a.contract_id}-disk.img").exists()
        assert await reaches(b_ns, vm_ip)
    finally:
        await close(owner, stranger)
