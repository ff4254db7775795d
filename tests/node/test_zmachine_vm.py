"""A zmachine with `runtime: vm`: the busybox flist booted as a light VM (TCG here) through
the node's managers, shared by the tests below in order: its entrypoint, env, limits and
volume from its console; its address from another machine of the owner (a container on
the same network) and not from another twin's; started by an agent process killed
with -9 and found again by the next (pid, start time, QMP), and by a new manager;
redeployed with its volume's data; removed without a process, tap or file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import vm_agent
from netzm_helpers import ctx, deployment, machines, network_data, remove_everything, unique_twin
from test_zmachine_manager import deploy, logs_until, machine, services, with_rootfs

from zos.gridtypes import Deployment
from zos.gridtypes.names import network_id
from zos.node.networks import bridge_name
from zos.node.runtimes.vm import VmRuntime, cgroup_of
from zos.node.workloads.base import NodeServices
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager
from zos.primitives import cgroups, links, taps
from zos.primitives.hostproc import start_time

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root, pytest.mark.slow]
SHARED = pytest.mark.asyncio(loop_scope="module")
MiB = 1 << 20
BOOT = 900.0  # a TCG boot on a loaded 2-core machine

ENTRY = (
    "sh -c 'echo GREETING=[$GREETING]; echo NPROC=$(nproc); grep MemTotal /proc/meminfo;"
    " echo BEFORE=[$(cat /data/seen 2>/dev/null)]; echo booted >> /data/seen;"
    " echo hello-from-the-vm > /var/www/index.html; echo SERVING;"
    " exec httpd -f -p 8080 -h /var/www'"
)
GET = 'printf "GET / HTTP/1.0\\r\\n\\r\\n"'


@dataclass
class Booted:
    node: NodeServices
    dep: Deployment
    twin: int
    wid: str
    result: dict[str, Any]
    console: bytes
    agent_pid: int  # QEMU's pid as the killed agent reported it


def vm_deployment(twin: int, rootfs: Path) -> Deployment:
    vm = machine(
        "vm",
        "net",
        "10.72.1.2",
        ENTRY,
        env={"GREETING": "hello 'quoted' $(id)"},
        mounts=[{"name": "vol", "mountpoint": "/data"}],
        compute_capacity={"cpu": 2, "memory": 256 * MiB},
        runtime="vm",
    )
    workloads = [
        {"name": "net", "type": "network", "data": network_data("10.72.1.0/24")},
        {"name": "vol", "type": "volume", "data": {"size": 64 * MiB}},
        vm,
    ]
    return with_rootfs(deployment(twin, 301, workloads), rootfs)


def vm_runtime(node: NodeServices) -> VmRuntime:
    runtime = machines(node).runtime(VmRuntime.name)
    assert isinstance(runtime, VmRuntime)
    return runtime


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def booted(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path
) -> AsyncIterator[Booted]:
    node = services(tmp_path_factory.mktemp("vm-node") / "node", busybox_rootfs)
    twin = unique_twin()
    dep = vm_deployment(twin, busybox_rootfs)
    wid = f"{twin}-301-vm"
    try:
        for name, manager in (("vol", VolumeManager(node)), ("net", NetworkManager(node))):
            await manager.provision(ctx(node, dep, name))
        # An agent starts the machine and dies with -9 (no chance to hand anything over).
        agent = vm_agent.start(node, dep, "vm")
        assert agent.stdout is not None
        agent_pid = int(agent.stdout.readline() or 0)
        agent.kill()
        agent.wait(10)
        result = await machines(node).provision(ctx(node, dep, "vm"))  # the next agent
        console = await logs_until(machines(node), wid, b"SERVING", timeout=BOOT)
        yield Booted(node, dep, twin, wid, result, console, agent_pid)
    finally:
        await remove_everything(node)


@SHARED
async def test_the_entrypoint_runs_with_its_env_in_a_vm(booted: Booted) -> None:
    out = booted.console.decode()
    assert "GREETING=[hello 'quoted' $(id)]" in out  # one value, nothing evaluated
    assert "zos-init: starting entrypoint" in out  # the light VM's init, not runc
    assert booted.result["runtime"] == "vm"
    assert booted.result["accelerator"] in ("kvm", "tcg")


@SHARED
async def test_limited_to_its_vcpus_and_memory(booted: Booted) -> None:
    out = booted.console.decode()
    assert "NPROC=2" in out
    total_kib = int(next(x for x in out.splitlines() if "MemTotal" in x).split()[-2])
    assert 150 * 1024 < total_kib <= 256 * 1024
    stats = await machines(booted.node).stats(booted.wid)
    assert stats is not None and stats.running and stats.pid
    limits = cgroups.limits(stats.pid)
    assert limits.cpus == 2
    assert 256 * MiB < limits.memory < 512 * MiB  # RAM plus QEMU's own, nothing more
    assert stats.pid in cgroup_of(booted.wid).pids()


@SHARED
async def test_answers_the_owners_machine_and_not_another_twins(booted: Booted) -> None:
    node, zm = booted.node, machines(booted.node)
    netid = network_id(booted.twin, "net")
    tap = taps.for_interface(booted.wid, "net")
    assert tap.name in links.ports(bridge_name(netid), node.networks.namespace(netid))
    loop = f"while true; do {GET} | nc -w 3 10.72.1.2 8080; sleep 1; done"
    friend = machine("friend", "net", "10.72.1.3", f"sh -c '{loop}'")
    dep = deployment(
        booted.twin,
        302,
        [{"name": "net", "type": "network", "data": network_data("10.72.1.0/24")}, friend],
    )
    await deploy(node, with_rootfs(dep, Path(str(node.local_flists[0]))))
    await logs_until(zm, f"{booted.twin}-302-friend", b"hello-from-the-vm", timeout=120)

    other = unique_twin()
    probe = (
        f"sh -c '{GET} | nc -w 3 10.72.1.2 8080 | grep -q hello && echo REACHED || echo NOPE;"
        " echo PROBED; sleep 100000'"
    )
    spy = deployment(
        other,
        401,
        [
            {"name": "net", "type": "network", "data": network_data("10.73.1.0/24")},
            machine("spy", "net", "10.73.1.2", probe),
        ],
    )
    await deploy(node, with_rootfs(spy, Path(str(node.local_flists[0]))))
    out = await logs_until(zm, f"{other}-401-spy", b"PROBED", timeout=120)
    assert b"NOPE" in out and b"REACHED" not in out


@SHARED
async def test_kill_9_of_the_agent_leaves_the_vm_running_and_found(booted: Booted) -> None:
    stats = await machines(booted.node).stats(booted.wid)
    assert stats is not None and stats.running
    assert booted.agent_pid and stats.pid == booted.agent_pid  # adopted, not started again
    assert stats.restarts == 0
    assert booted.console.count(b"zos-init: starting entrypoint") == 1  # booted once


@SHARED
async def test_a_new_agent_finds_the_vm_running(booted: Booted) -> None:
    before = await machines(booted.node).stats(booted.wid)
    assert before is not None and before.pid
    pid, started = before.pid, start_time(before.pid)
    await machines(booted.node).close()  # the agent goes away; the VM stays
    assert start_time(pid) == started
    zm = machines(booted.node, fresh=True)
    await zm.provision(ctx(booted.node, booted.dep, "vm"))
    after = await zm.stats(booted.wid)
    assert after is not None and after.pid == pid and after.restarts == 0
    assert start_time(pid) == started  # the same QEMU, not a new boot
    log = b"".join([c async for c in zm.read_logs(booted.wid)])
    assert log.count(b"zos-init: starting entrypoint") == 1


@SHARED
async def test_redeploy_keeps_the_volume_and_removal_leaves_nothing(booted: Booted) -> None:
    node, zm = booted.node, machines(booted.node)
    stats = await zm.stats(booted.wid)
    assert stats is not None and stats.pid
    pid, started = stats.pid, start_time(stats.pid)
    netid = network_id(booted.twin, "net")
    net_ns = node.networks.namespace(netid)
    tap = taps.for_interface(booted.wid, "net")

    await zm.deprovision(ctx(node, booted.dep, "vm"))
    assert start_time(pid) != started  # QEMU is gone
    assert not links.exists(tap.name, net_ns)
    assert not cgroup_of(booted.wid).exists()
    assert not (node.data_dir / "zmachines" / booted.wid).exists()
    assert not vm_runtime(node).logs(booted.wid).exists()
    assert booted.wid not in await vm_runtime(node).list()

    await zm.provision(ctx(node, booted.dep, "vm"))
    out = await logs_until(zm, booted.wid, b"SERVING", timeout=BOOT)
    assert b"BEFORE=[booted]" in out  # what the first boot wrote to its volume

    await zm.deprovision(ctx(node, booted.dep, "vm"))
    leftover = [p for p in os.listdir(node.data_dir / "zmachines") if booted.wid in p]
    assert leftover == []
