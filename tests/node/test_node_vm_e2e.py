"""A `runtime: vm` zmachine through `zos node run` (a real agent on nats-server, the busybox
flist served over HTTP): its serial console is its log, which the owner follows with
long polls and no one else can read; the agent stopped and started again finds the same
QEMU; `zos node wipe` with the VM running leaves no process, tap, cgroup or file. One
boot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from netzm_helpers import network_data
from nodehelpers import NodeProcess, leftovers, wipe
from test_zmachine_manager import machine

from zos.bus import BusError
from zos.node.runtimes.vm import VmRuntime, cgroup_of
from zos.node.workloads import NodeServices
from zos.primitives import filesystem, netns
from zos.primitives.hostproc import start_time

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
BOOT = 900.0  # a TCG boot on a loaded 2-core machine
TICKS = "echo started $WHO; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"


def qemu_of(data_dir: Path, wid: str) -> tuple[int, int]:
    """(pid, start time) of the machine's QEMU, from its runtime's record."""
    run_dir = VmRuntime(NodeServices(data_dir=data_dir)).run_root / wid
    raw = json.loads((run_dir / "process.json").read_text())
    return int(raw["pid"]), int(raw["start_time"])


async def follow_until(user, node: NodeProcess, cid: int, want: str, offset: int = 0):  # type: ignore[no-untyped-def]
    """Follow the machine's log (long polls from each offset on) until `want` shows:
    (what came, the next offset)."""
    seen = ""
    async with asyncio.timeout(BOOT):
        while want not in seen:
            chunk = await user.node(node).zmachine_logs(cid, "vm", offset=offset, follow=True)
            seen, offset = seen + chunk.data, chunk.offset
    return seen, offset


@pytest.mark.timeout(1800)  # a TCG boot on a loaded machine
async def test_a_vm_through_the_agent(
    make_user, make_node, busybox_flist, prefix: str, sweep: list[NodeProcess]
) -> None:
    url, store = busybox_flist
    owner, stranger = await make_user(), await make_user()
    args = ["--disk", "4G", "--store", store, "--netns-prefix", prefix, "--cache-size", "256M"]
    node = await make_node(owner, *args)
    sweep.append(node)
    vm = machine("vm", "net", "10.78.1.2", f"sh -c '{TICKS}'", env={"WHO": "here"}, runtime="vm")
    vm["data"]["flist"] = url
    net = {"name": "net", "type": "network", "data": network_data("10.78.1.0/24")}
    dep = owner.deployment([net, vm])
    await owner.deploy(node, dep)
    got = await owner.wait_states(node, dep.contract_id, {"net": "ok", "vm": "ok"})
    result = next(w for w in got["workloads"] if w["name"] == "vm")["result"]["data"]
    assert result["runtime"] == "vm" and result["accelerator"] in ("kvm", "tcg")
    wid = f"{owner.twin_id}-{dep.contract_id}-vm"

    # The serial console is the log: the owner follows it; anyone else learns nothing.
    seen, offset = await follow_until(owner, node, dep.contract_id, "tick 2")
    assert "zos-init: starting entrypoint" in seen and "started here" in seen
    with pytest.raises(BusError) as refused:
        await stranger.node(node).zmachine_logs(dep.contract_id, "vm", follow=True)
    assert refused.value.code == "not_found"

    # The agent goes and comes back: the same QEMU, its log followed on from the offset.
    pid, started = qemu_of(node.data_dir, wid)
    assert node.stop() == 0
    assert start_time(pid) == started
    node.start()
    await node.wait_ready(owner)
    await owner.wait_states(node, dep.contract_id, {"vm": "ok"})
    assert qemu_of(node.data_dir, wid) == (pid, started)
    more, _ = await follow_until(owner, node, dep.contract_id, "tick", offset)
    assert "zos-init: starting entrypoint" not in more  # not booted again

    # Wiped with the VM running: its process, tap (with the namespaces), cgroup and files go.
    assert node.stop() == 0
    wiped = wipe(node.data_dir, prefix)
    assert wiped.returncode == 0, wiped.stderr
    assert start_time(pid) != started
    assert netns.names(prefix) == []
    assert not cgroup_of(wid).exists()
    assert not VmRuntime(NodeServices(data_dir=node.data_dir)).run_root.exists()
    assert not any((node.data_dir / "zmachines").glob("*"))
    assert filesystem.mounts_under(node.data_dir) == []
    assert leftovers(node.data_dir) == {"mounts": [], "loops": [], "files": []}
