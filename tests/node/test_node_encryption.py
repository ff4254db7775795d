"""Encryption at rest through a real agent: a deployment's volume, its machine's root
layer and its zdb namespace under a data key only the owner's client made.

A marker goes into all three; a simulated reboot (agent killed, containers, zdb server,
mounts and namespaces gone, every key of the node taken out of the kernel) leaves it in
none of the node's files, raw images included, and the key in no file either; the
deployment comes back `locked` with nothing started and nothing removed. Another twin's
unlock is refused, a teammate's works after `share` and is refused after `unshare`, the
owner's brings the machine back with its data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import test_node_zmachine_e2e as zm
from netzm_helpers import machine, network_data
from nodehelpers import MiB, NodeProcess, User, kill_zdb_server, leftovers

from zos.bus import BusError
from zos.client.datakeys import DataKeys
from zos.grid.natsserver import free_port
from zos.identity.datakey import open_copy
from zos.node.runtimes.runc import RuncRuntime, container_id
from zos.node.workloads import NodeServices
from zos.primitives import filesystem, keyring, netns
from zos.zdb.client import RespClient, RespError

pytestmark = zm.pytestmark  # nats, root, runc, netns, slow
HOST = "127.0.0.1"


def keys_of(user: User) -> DataKeys:
    return DataKeys(user.identity, user.twin_id, user.registry)


def node_tag(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def reboot(node: NodeProcess, prefix: str) -> None:
    """What a reboot does to the node's machine: every process, mount, namespace and
    kernel key gone; the data directory stays."""
    node.kill()
    root = RuncRuntime(NodeServices(data_dir=node.data_dir)).runc.root
    for cid in zm.runc_ids(node.data_dir):
        subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], check=True)
    state = node.data_dir / "zdb-server" / "state.json"
    zdb_pid = json.loads(state.read_text())["pid"] if state.exists() else None
    kill_zdb_server(node.data_dir)
    while zdb_pid is not None and Path(f"/proc/{zdb_pid}").exists():
        if Path(f"/proc/{zdb_pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            break  # dead; its files are closed
        time.sleep(0.01)
    for m in reversed(filesystem.mounts_under(node.data_dir)):
        subprocess.run(["umount", str(m.target)], check=True)
    for name in netns.names(prefix):
        if name.startswith(f"{prefix}c-"):
            netns.delete(name)
    for description in keyring.descriptions(f"zos:{node_tag(node.data_dir)}:"):
        keyring.forget(description)


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every regular file under `root` whose raw bytes hold one of `needles`."""
    hits = []
    for d, _, names in os.walk(root):
        for n in names:
            path = Path(d, n)
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            hits += [f"{path}: {needle[:12]!r}" for needle in needles if needle in data]
    return hits


async def wait_ok(user: User, node: NodeProcess, contract_id: int, names: list[str]) -> None:
    """Until every named workload is ok; a workload in error fails at once, with why."""
    for _ in range(1200):
        dep = await user.get(node, contract_id)
        results = {w["name"]: w["result"] for w in dep["workloads"]}
        errors = {n: r["message"] for n, r in results.items() if r["state"] == "error"}
        assert not errors, f"{errors}\n{node.log()[-2000:]}"
        if all(results[n]["state"] == "ok" for n in names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ok: {results}")


async def wait_running(node: NodeProcess, cid: str) -> None:
    """Until the machine's container runs (after an unlock the results say `ok` already:
    they were `ok` before the reboot, and the node brings back what they describe)."""
    for _ in range(600):
        if cid in zm.runc_ids(node.data_dir):
            with contextlib.suppress(subprocess.CalledProcessError):
                zm._runc_pid(node.data_dir, cid)
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} not running\n{node.log()[-2000:]}")


async def zdb(port: int, ns: str, password: str) -> RespClient:
    """A tenant's connection to its namespace, once the node has brought it (back) up."""
    for _ in range(300):
        c = RespClient(HOST, port, timeout=10)
        try:
            assert await c.command(b"SELECT", ns.encode(), password.encode()) == "OK"
            return c
        except RespError:  # the server not up yet, or the namespace not yet loaded
            await c.close()
            await asyncio.sleep(0.1)
    raise AssertionError(f"namespace {ns} not served")


async def test_data_only_its_owner_can_read(
    make_user, make_node, busybox_flist, prefix: str, sweep: list[NodeProcess]
) -> None:
    url, store = busybox_flist
    owner, other, mate = await make_user(), await make_user(), await make_user()
    port = free_port()
    node = await make_node(
        owner,
        "--disk", "4G", "--hdd", "1G", "--store", store, "--netns-prefix", prefix,
        "--cache-size", "256M", "--zdb-listen", f"{HOST}:{port}",
    )  # fmt: skip
    sweep.append(node)
    # The marker never appears whole in the deployment (the node keeps that in clear):
    # the machine's shell joins its two halves.
    left, right = secrets.token_hex(8), secrets.token_hex(8)
    marker = (left + right).encode()
    password = secrets.token_hex(8)
    write = f"printf %s%s {left} {right}"
    dep = owner.deployment(
        [
            {"name": "net", "type": "network", "data": network_data("10.78.1.0/24")},
            {"name": "vol", "type": "volume", "data": {"size": 32 * MiB}},
            {
                "name": "ns",
                "type": "zdb",
                "data": {"size": 64 * MiB, "mode": "user", "password": password, "public": False},
            },
            machine(
                "vm",
                url,
                "10.78.1.2",
                f"sh -c '[ -e /data/m ] || {write} > /data/m; "
                f"[ -e /root/m ] || {write} > /root/m; sync; exec sleep 100000'",
                [{"name": "vol", "mountpoint": "/data"}],
            ),
        ]
    )
    contract = await owner.registry.create_node_contract(node.node_id, dep.hash_hex())
    dep.contract_id = contract.id
    await keys_of(owner).give_new(owner.node(node), contract.id)
    dep.sign(owner.twin_id, owner.identity)
    await owner.node(node).deploy(dep)
    names = ["net", "vol", "ns", "vm"]
    await wait_ok(owner, node, dep.contract_id, names)
    wid = f"{owner.twin_id}-{dep.contract_id}"
    cid = container_id(f"{wid}-vm")
    storage = node.data_dir / "storage"
    status = await keys_of(owner).status(owner.node(node), contract.id)
    assert status.encrypted is True and status.locked is False
    key = open_copy(owner.identity, contract.id, status.copy_)

    # the marker in all three places, seen from the node while unlocked
    vol_file = storage / "volumes" / f"{wid}-vol" / "data" / "m"
    layer_file = storage / "zmachines" / f"{wid}-vm" / "data" / "upper" / "root" / "m"
    for path in (vol_file, layer_file):
        for _ in range(200):
            if path.exists() and path.read_bytes() == marker:
                break
            await asyncio.sleep(0.05)
        assert path.read_bytes() == marker, path
    client = await zdb(port, f"{wid}-ns", password)
    assert await client.command(b"SET", marker, marker) == marker
    await client.close()

    # an agent restart (kill -9): the kernel still has the key, the machine runs on
    pid = zm._runc_pid(node.data_dir, cid)
    node.kill()
    node.start()
    await node.wait_ready(owner)
    assert (await keys_of(owner).status(owner.node(node), contract.id)).locked is False
    await wait_ok(owner, node, dep.contract_id, names)
    assert zm._runc_pid(node.data_dir, cid) == pid

    # the reboot: nothing readable is left on the disk
    reboot(node, prefix)
    needles = [marker, bytes(key), base64.b64encode(key), key.hex().encode()]
    assert files_holding(node.data_dir, needles) == []
    images = [storage / "volumes" / f"{wid}-vol.img", storage / "zmachines" / f"{wid}-vm.img"]
    images.append(storage / "zdb-volumes" / f"{wid}-ns.img")
    assert all(p.stat().st_size > 0 for p in images)  # raw images, scanned above

    # after restart: locked, not started, nothing removed
    node.start()
    await node.wait_ready(owner)
    status = await keys_of(owner).status(owner.node(node), contract.id)
    assert status.locked is True
    assert zm.runc_ids(node.data_dir) == []
    got = await owner.get(node, dep.contract_id)
    assert {w["name"] for w in got["workloads"]} == set(names)
    assert all(p.exists() for p in images)

    async def back_with_data() -> None:
        await wait_ok(owner, node, dep.contract_id, names)
        await wait_running(node, cid)
        assert zm.runc_ids(node.data_dir) == [cid]
        assert vol_file.read_bytes() == marker and layer_file.read_bytes() == marker
        client = await zdb(port, f"{wid}-ns", password)
        assert await client.command(b"GET", marker) == marker
        await client.close()

    # another twin: refused even with the right key; a teammate not yet shared with too
    for stranger in (other, mate):
        with pytest.raises(BusError) as refused:
            await keys_of(stranger).send(stranger.node(node), contract.id, key)
        assert refused.value.code == "forbidden" and "may not unlock" in refused.value.message
        with pytest.raises(BusError):
            await keys_of(stranger).unlock(stranger.node(node), contract.id)
    assert (await keys_of(owner).status(owner.node(node), contract.id)).locked is True

    # shared: the teammate unlocks with its own copy, the machine comes back with its data
    await keys_of(owner).share(owner.node(node), contract.id, mate.twin_id)
    assert (await keys_of(owner).status(owner.node(node), contract.id)).shared == [mate.twin_id]
    assert await keys_of(mate).unlock(mate.node(node), contract.id) is True
    await back_with_data()

    # unshared, and another reboot: the teammate is refused, the owner unlocks
    await keys_of(owner).unshare(owner.node(node), contract.id, mate.twin_id)
    reboot(node, prefix)
    node.start()
    await node.wait_ready(owner)
    with pytest.raises(BusError) as refused:
        await keys_of(mate).send(mate.node(node), contract.id, key)
    assert refused.value.code == "forbidden"
    assert (await keys_of(owner).status(owner.node(node), contract.id)).locked is True
    assert await keys_of(owner).unlock(owner.node(node), contract.id) is True
    await back_with_data()

    # deleted: its key leaves the kernel, its record the node
    await owner.node(node).delete(dep.contract_id)
    await owner.wait_states(node, dep.contract_id, dict.fromkeys(names, "deleted"))
    assert keyring.descriptions(f"zos:{node_tag(node.data_dir)}:") == []
    assert leftovers(node.data_dir) == {"mounts": [], "loops": [], "files": []}
