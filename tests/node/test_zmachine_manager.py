"""network + volume + zmachine managers end to end, on real runc, netns and mounts."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import (
    ctx,
    deployment,
    listen_in,
    machines,
    network_data,
    remove_everything,
    runc_runtime,
    unique_twin,
)

from zos.gridtypes import Deployment
from zos.gridtypes.names import network_id
from zos.node.networks import bridge_name
from zos.node.runtimes.runc import container_id
from zos.node.workloads.base import NodeServices, WorkloadError
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager, volume_path
from zos.node.workloads.zmachine import ZMachineManager
from zos.node.workloads.zmount import ZMountManager, zmount_path
from zos.primitives import blockdev, cgroups, filesystem, links, loop, nat, netns, overlay
from zos.primitives.supervisor import Backoff

pytestmark = [pytest.mark.runc, pytest.mark.netns, pytest.mark.root, pytest.mark.slow]

MiB = 1 << 20
# busybox-static's wget crashes (static NSS); plain HTTP over nc does the job
GET = 'printf "GET /greeting HTTP/1.0\\r\\n\\r\\n"'
SRC = Path(__file__).resolve().parents[2] / "src"


def services(data_dir: Path, rootfs: Path) -> NodeServices:
    return NodeServices(
        data_dir=data_dir,
        local_flists=(rootfs,),
        backoff=Backoff(base=0.2, cap=1.0, stable=30),
    )


@pytest.fixture
async def node(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[NodeServices]:
    svc = services(tmp_path / "node", busybox_rootfs)
    try:
        yield svc
    finally:
        await remove_everything(svc)


def machine(name: str, network: str, ip: str, entrypoint: str, **extra: Any) -> dict[str, Any]:
    data = {
        "flist": "",  # filled by the test with the local rootfs
        "network": {"interfaces": [{"network": network, "ip": ip}]},
        "size": 0,
        "compute_capacity": {"cpu": 1, "memory": 256 * MiB},
        "mounts": [],
        "entrypoint": entrypoint,
        "env": {},
    }
    data.update(extra)
    return {"name": name, "type": "zmachine", "data": data}


def with_rootfs(dep: Deployment, rootfs: Path) -> Deployment:
    raw = dep.to_dict()
    for w in raw["workloads"]:
        if w["type"] == "zmachine":
            w["data"]["flist"] = str(rootfs)
    return Deployment.from_dict(raw)


async def deploy(node: NodeServices, dep: Deployment) -> dict[str, Any]:
    """Install in zos order (zmount, volume, network, zmachine), as the engine does."""
    managers = {
        "zmount": ZMountManager(node),
        "volume": VolumeManager(node),
        "network": NetworkManager(node),
        "zmachine": machines(node),
    }
    results = {}
    for wtype in ("zmount", "volume", "network", "zmachine"):
        for w in dep.workloads:
            if w.type == wtype:
                results[w.name] = await managers[wtype].provision(ctx(node, dep, w.name))
    return results


async def logs_until(zm: ZMachineManager, wid: str, needle: bytes, timeout: float = 20) -> bytes:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        data = b"".join([c async for c in zm.read_logs(wid)])
        if needle in data:
            return data
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{needle!r} not in logs of {wid}: {data[-2000:]!r}")
        await asyncio.sleep(0.2)


def host_ip() -> str:
    return next(
        str(a.ip)
        for a in links.all_addresses()
        if not a.ip.is_loopback and a.ip not in nat.UPLINK_RANGE
    )


async def test_machines_on_networks_end_to_end(node: NodeServices, busybox_rootfs: Path) -> None:
    twin_a, twin_b = unique_twin(), unique_twin()
    bus = listen_in(None, 0)  # stands for the node's bus connection/services on the host
    bus_port = bus.getsockname()[1]
    server = machine(
        "web",
        "net",
        "10.70.1.2",
        "sh -c 'echo $GREETING > /data/greeting; echo PROCS $(ls /proc | grep -c ^[0-9]);"
        " ip -4 addr show eth0; exec httpd -f -p 8080 -h /data'",
        env={"GREETING": "hello from web"},
        mounts=[{"name": "vol", "mountpoint": "/data"}],
    )
    dep_a1 = with_rootfs(
        deployment(
            twin_a,
            101,
            [
                {"name": "net", "type": "network", "data": network_data("10.70.1.0/24")},
                {"name": "vol", "type": "volume", "data": {"size": 64 * MiB}},
                server,
            ],
        ),
        busybox_rootfs,
    )
    results = await deploy(node, dep_a1)
    wid = f"{twin_a}-101-web"
    assert results["web"] == {
        "id": wid,
        "ip": "10.70.1.2",
        "planetary_ip": "",
        "mycelium_ip": "",
        "console_url": "",
    }
    zm = machines(node)
    out = await logs_until(zm, wid, b"inet 10.70.1.2/24")
    # its own processes only (sh, a subshell, ls, grep), not the host's hundreds
    assert int(re.search(rb"PROCS (\d+)", out).group(1)) <= 5
    # the volume, seen from the host
    vol = volume_path(node, f"{twin_a}-101-vol")
    for _ in range(50):
        if (vol / "greeting").exists():
            break
        await asyncio.sleep(0.1)
    assert (vol / "greeting").read_text() == "hello from web\n"
    # limits from its cgroup
    state = await runc_runtime(zm).runc.state(container_id(wid))
    assert state and state["status"] == "running"
    limits = cgroups.limits(state["pid"])
    assert (
        limits.memory == 256 * MiB and limits.cpu_quota == 100_000 and limits.cpu_period == 100_000
    )
    # a second machine of the same twin, in another deployment naming the same network
    client = machine(
        "client",
        "net",
        "10.70.1.3",
        f"sh -c 'while true; do {GET} | nc -w 2 10.70.1.2 8080; sleep 0.3; done'",
    )
    dep_a2 = with_rootfs(
        deployment(
            twin_a,
            102,
            [{"name": "net", "type": "network", "data": network_data("10.70.1.0/24")}, client],
        ),
        busybox_rootfs,
    )
    await deploy(node, dep_a2)
    await logs_until(zm, f"{twin_a}-102-client", b"hello from web")
    # another twin's machine reaches neither twin A's machine nor the host
    probe = (
        "sh -c 'echo PROCS $(ls /proc | grep -c ^[0-9]);"
        f" {GET} | nc -w 2 10.70.1.2 8080 | grep -q hello && echo REACHED-A || echo NO-A;"
        f" nc -w 2 {host_ip()} {bus_port} </dev/null && echo REACHED-HOST || echo NO-HOST;"
        f" nc -w 2 10.71.1.1 {bus_port} </dev/null && echo REACHED-NS || echo NO-NS;"
        " echo PROBED; sleep 1000'"
    )
    dep_b = with_rootfs(
        deployment(
            twin_b,
            201,
            [
                {"name": "net", "type": "network", "data": network_data("10.71.1.0/24")},
                machine("spy", "net", "10.71.1.2", probe),
            ],
        ),
        busybox_rootfs,
    )
    await deploy(node, dep_b)
    out = await logs_until(zm, f"{twin_b}-201-spy", b"PROBED", timeout=30)
    assert b"NO-A" in out and b"NO-HOST" in out and b"NO-NS" in out, out
    assert b"REACHED" not in out
    bus.close()
    # removal: nothing of the machine is left (process, cgroup, veth, netns, mount, files)
    pid = state["pid"]
    cg = cgroups.controller_dir(pid, "memory")
    mgr = zm
    await mgr.deprovision(ctx(node, dep_a1, "web"))
    assert await runc_runtime(mgr).runc.state(container_id(wid)) is None
    assert not cg.exists()
    assert not netns.exists(f"c-{wid}")
    assert not (node.data_dir / "zmachines" / wid).exists()
    assert not any(wid in str(m.target) for m in filesystem.mounts_under(node.data_dir))
    netid_a = network_id(twin_a, "net")
    ns_a = node.networks.namespace(netid_a)
    assert len(links.ports(bridge_name(netid_a), ns_a)) == 1  # only the client is left
    assert (vol / "greeting").exists(), "the volume outlives the machine"


async def test_refusals_leave_nothing(node: NodeServices, busybox_rootfs: Path) -> None:
    twin = unique_twin()
    base = [
        {"name": "net", "type": "network", "data": network_data("10.72.1.0/24")},
        {"name": "vol", "type": "volume", "data": {"size": 32 * MiB}},
        machine("first", "net", "10.72.1.5", "sleep 1000"),
    ]
    dep = with_rootfs(deployment(twin, 300, base), busybox_rootfs)
    await deploy(node, dep)
    zm = machines(node)
    cases = [
        (machine("m", "net", "10.99.0.2", "sleep 1"), "outside the subnet 10.72.1.0/24"),
        (machine("m", "net", "10.72.1.1", "sleep 1"), "reserved"),
        (machine("m", "net", "10.72.1.5", "sleep 1"), "already used by another machine"),
        (machine("m", "nonet", "10.72.1.9", "sleep 1"), "network 'nonet' does not exist"),
        (
            machine(
                "m", "net", "10.72.1.9", "sleep 1", mounts=[{"name": "nope", "mountpoint": "/x"}]
            ),
            "mounts[0].name: no volume named 'nope'",
        ),
        (
            machine(
                "m", "net", "10.72.1.9", "sleep 1", mounts=[{"name": "vol", "mountpoint": "/proc"}]
            ),
            "mounts[0].mountpoint",
        ),
        (machine("m", "net", "10.72.1.9", "sh -c 'unterminated"), "entrypoint"),
    ]
    for i, (bad, message) in enumerate(cases):
        dep_bad = with_rootfs(deployment(twin, 310 + i, [*base[:2], bad]), busybox_rootfs)
        with pytest.raises(WorkloadError, match=re.escape(message)):
            await zm.provision(ctx(node, dep_bad, "m"))
        wid = f"{twin}-{310 + i}-m"
        assert not (node.data_dir / "zmachines" / wid).exists()
        assert not netns.exists(f"c-{wid}")
        assert await runc_runtime(zm).runc.state(container_id(wid)) is None
    # a flist the node cannot prepare (no cache here, not a trusted local tree)
    bad_flist = deployment(
        twin, 330, [*base[:2], machine("m", "net", "10.72.1.9", "sleep 1", flist="/")]
    )
    with pytest.raises(WorkloadError, match=re.escape("flist: '/' is not an http(s) URL")):
        await zm.provision(ctx(node, bad_flist, "m"))
    assert [s.wid for s in zm.states()] == [f"{twin}-300-first"]
    # two machines asking for one free ip at the same time: exactly one gets it
    racers = [
        with_rootfs(
            deployment(twin, 340 + i, [*base[:2], machine("m", "net", "10.72.1.20", "sleep 1000")]),
            busybox_rootfs,
        )
        for i in range(2)
    ]
    results = await asyncio.gather(
        *(zm.provision(ctx(node, d, "m")) for d in racers), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["WorkloadError", "dict"], results
    assert len(zm.states()) == 2


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path
    from zos.gridtypes import Deployment
    from zos.node.workloads.base import NodeServices, WorkloadContext
    from zos.node.workloads.network import NetworkManager
    from zos.node.workloads.zmachine import ZMachineManager

    data_dir, rootfs, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    dep = Deployment.from_dict(json.loads(raw))
    node = NodeServices(data_dir=Path(data_dir), local_flists=(Path(rootfs),))

    async def main():
        for mgr, name in ((NetworkManager(node), "net"), (ZMachineManager(node), "m")):
            w = dep.get(name)
            await mgr.provision(WorkloadContext(dep.twin_id, dep.contract_id, dep, w, node))
        os.kill(os.getpid(), 9)  # the agent dies: no cleanup, no goodbye

    asyncio.run(main())
    """
)


async def test_agent_restart_and_crash_converge(node: NodeServices, busybox_rootfs: Path) -> None:
    twin = unique_twin()
    dep = with_rootfs(
        deployment(
            twin,
            400,
            [
                {"name": "net", "type": "network", "data": network_data("10.73.1.0/24")},
                machine(
                    "m", "net", "10.73.1.2", "sh -c 'while true; do echo tick; sleep 0.2; done'"
                ),
            ],
        ),
        busybox_rootfs,
    )
    wid = f"{twin}-400-m"
    cid = container_id(wid)
    # an agent provisions, then is killed outright
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_SCRIPT,
        str(node.data_dir),
        str(busybox_rootfs),
        dep.to_json(),
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == -9, err.decode()
    first = ZMachineManager(node)
    state = await runc_runtime(first).runc.state(cid)
    assert state and state["status"] == "running", "the container outlived its agent"
    pid = state["pid"]
    # the next agent provisions again: it re-attaches, builds nothing twice
    net, zm = NetworkManager(node), ZMachineManager(node)
    await net.provision(ctx(node, dep, "net"))
    assert (await zm.provision(ctx(node, dep, "m")))["ip"] == "10.73.1.2"
    assert (await runc_runtime(zm).runc.state(cid))["pid"] == pid
    assert [c["id"] for c in await runc_runtime(zm).runc.list()] == [cid]
    stats = await zm.stats(wid)  # what its runtime reports: its init, from its cgroup
    assert stats is not None and stats.running and stats.pid == pid
    assert stats.memory and stats.memory > 0 and stats.cpu_ns is not None
    ns = node.networks.namespace(zm._load(wid).netid)
    assert len(links.ports(bridge_name(zm._load(wid).netid), ns)) == 1
    image = node.storage_dir("zmachines") / f"{wid}.img"
    assert len(loop.devices_for(image)) == 1
    assert len([m for m in filesystem.mounts_under(node.data_dir) if wid in str(m.target)]) == 2
    await logs_until(zm, wid, b"tick")
    # logs by offset (what `zos.zmachine.logs` serves) and followed
    first_part, offset = await zm.logs_since(wid, 0)
    more, after = await zm.logs_since(wid, offset, wait=5)
    assert b"tick" in first_part and more.startswith(b"tick") and after == offset + len(more)
    followed = b""
    stream = zm.read_logs(wid, follow=True)
    async for chunk in stream:
        followed += chunk
        if followed.count(b"tick") > first_part.count(b"tick") + 2:
            break
    await stream.aclose()
    with pytest.raises(WorkloadError, match="no zmachine"):
        await zm.logs_since(f"{twin}-400-other")
    # supervised by the new agent: a crash is restarted
    await runc_runtime(zm).runc.kill(cid)
    for _ in range(100):
        st = await runc_runtime(zm).runc.state(cid)
        if st and st["status"] == "running" and st["pid"] != pid:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("not restarted")
    # a graceful agent restart leaves it running and attached
    await zm.close()
    again = ZMachineManager(node)
    await again.provision(ctx(node, dep, "m"))
    assert (await runc_runtime(again).runc.state(cid))["pid"] == st["pid"]
    # it crashes while no agent watches: the next agent's provision restarts it
    await again.close()
    await runc_runtime(again).runc.kill(cid)
    for _ in range(50):
        if (await runc_runtime(again).runc.state(cid))["status"] == "stopped":
            break
        await asyncio.sleep(0.1)
    again = ZMachineManager(node)
    await again.provision(ctx(node, dep, "m"))
    st = await runc_runtime(again).runc.state(cid)
    assert st["status"] == "running" and [
        c["id"] for c in await runc_runtime(again).runc.list()
    ] == [cid]
    # half built (a crash while building): the overlay is gone and the container too
    await runc_runtime(again).runc.delete(cid)
    runc_runtime(again).supervisor.forget(cid)
    await overlay.unmount(node.data_dir / "zmachines" / wid / "rootfs")
    await again.provision(ctx(node, dep, "m"))
    assert (await runc_runtime(again).runc.state(cid))["status"] == "running"
    # the engine's start-up with nothing wanted removes it all
    await again.cleanup(set())
    await net.cleanup(set())
    assert not runc_runtime(again).runc.root.exists(), "no runc state left"
    assert not netns.exists(ns)
    assert filesystem.mounts_under(node.data_dir) == []


async def test_zmount_disk_in_a_container(node: NodeServices, busybox_rootfs: Path) -> None:
    twin = unique_twin()
    writer = machine(
        "a",
        "net",
        "10.76.1.2",
        "sh -c 'echo kept > /disk/note; echo WROTE; sleep 1000'",
        mounts=[{"name": "disk", "mountpoint": "/disk"}],
    )
    reader = machine(
        "b",
        "net",
        "10.76.1.3",
        "sh -c 'cat /disk/note; sleep 1000'",
        mounts=[{"name": "disk", "mountpoint": "/disk"}],
    )
    base = [
        {"name": "net", "type": "network", "data": network_data("10.76.1.0/24")},
        {"name": "disk", "type": "zmount", "data": {"size": 64 * MiB}},
    ]
    dep = with_rootfs(deployment(twin, 600, [*base, writer, reader]), busybox_rootfs)
    for wtype, name in (("zmount", "disk"), ("network", "net")):
        mgr = ZMountManager(node) if wtype == "zmount" else NetworkManager(node)
        await mgr.provision(ctx(node, dep, name))
    zm = machines(node, fresh=True)
    await zm.provision(ctx(node, dep, "a"))  # a blank disk gets ext4 on first use
    await logs_until(zm, f"{twin}-600-a", b"WROTE")
    image = zmount_path(node, f"{twin}-600-disk")
    assert await blockdev.fs_type(image) == "ext4"
    with pytest.raises(WorkloadError, match=re.escape("mounts[0].name: zmount 'disk' is in use")):
        await zm.provision(ctx(node, dep, "b"))
    await zm.deprovision(ctx(node, dep, "a"))
    assert loop.devices_for(image) == []
    await zm.provision(ctx(node, dep, "b"))  # the data stayed on the disk
    await logs_until(zm, f"{twin}-600-b", b"kept")
    await zm.deprovision(ctx(node, dep, "b"))
    assert loop.devices_for(image) == []


async def test_reboot_rebuilds_from_the_data_dir(node: NodeServices, busybox_rootfs: Path) -> None:
    """After a reboot only the data directory is left: provisioning again rebuilds the
    namespaces, mounts and container, and what the machine wrote on its root survives."""
    twin = unique_twin()
    dep = with_rootfs(
        deployment(
            twin,
            700,
            [
                {"name": "net", "type": "network", "data": network_data("10.77.1.0/24")},
                machine(
                    "m",
                    "net",
                    "10.77.1.2",
                    "sh -c 'echo boot >> /var/boots; echo BOOTS $(wc -l < /var/boots); sleep 1000'",
                ),
            ],
        ),
        busybox_rootfs,
    )
    wid = f"{twin}-700-m"
    await deploy(node, dep)
    zm = machines(node)
    await logs_until(zm, wid, b"BOOTS 1")
    # the reboot: processes, mounts, namespaces and links are gone; the data dir is not
    await zm.close()
    await runc_runtime(zm).runc.delete(container_id(wid))
    for m in reversed(filesystem.mounts_under(node.data_dir)):
        await filesystem.umount(m.target)
    netid = network_id(twin, "net")
    netns.delete(f"c-{wid}")
    links.delete(f"u-{netid}")
    netns.delete(node.networks.namespace(netid))
    machines(node, fresh=True)  # the next agent
    await deploy(node, dep)
    await logs_until(machines(node), wid, b"BOOTS 2")
