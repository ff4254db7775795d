"""One node agent (a real subprocess) with a real registry and nats-server: volumes and
zmounts deployed, read, grown, listed, deleted; refusals leave everything as it was."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nodehelpers import GiB, MiB, leftovers

from zos.identity import Identity
from zos.primitives import capacity, filesystem, loop
from zos.registry import RegistryClient

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]


def _fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


async def test_volume_and_zmount_lifecycle(make_user, make_node) -> None:
    user = await make_user()
    node = await make_node(user, "--disk", "4G")
    dep = user.deployment(
        [
            {"name": "data", "type": "volume", "data": {"size": 64 * MiB}},
            {"name": "disk", "type": "zmount", "data": {"size": 128 * MiB}},
        ]
    )
    await user.deploy(node, dep)
    got = await user.wait_states(node, dep.contract_id, {"data": "ok", "disk": "ok"})
    wid = f"{user.twin_id}-{dep.contract_id}"
    results = {wl["name"]: wl["result"] for wl in got["workloads"]}
    assert results["data"]["data"] == {"id": f"{wid}-data"}
    assert results["disk"]["data"] == {"volume_id": f"{wid}-disk"}
    assert got["contract_id"] == dep.contract_id and got["version"] == 0

    storage = node.data_dir / "storage"
    mountpoint = storage / "volumes" / f"{wid}-data"
    mount = filesystem.mount_of(mountpoint)
    assert mount is not None and mount.fstype == "ext4"
    assert (storage / "volumes" / f"{wid}-data.img").stat().st_size == 64 * MiB
    disk = storage / "zmounts" / f"{wid}-disk.img"
    assert disk.stat().st_size == 128 * MiB and filesystem.allocated_bytes(disk) < MiB
    (mountpoint / "hello").write_text("kept across growth")
    small = _fs_bytes(mountpoint)

    # Update: the volume grows (its version goes up), the zmount stays as it is.
    dep.version = 1
    dep.workloads[0].version = 1
    dep.workloads[0].data.size = 256 * MiB
    await user.update(node, dep)
    got = await user.wait_states(node, dep.contract_id, {"data": "ok", "disk": "ok"})
    assert got["version"] == 1
    assert _fs_bytes(mountpoint) > small + 150 * MiB
    assert (mountpoint / "hello").read_text() == "kept across growth"

    history = await user.node(node).changes(dep.contract_id)
    seen = [(c["name"], c["version"], c["result"]["state"]) for c in history]
    assert seen == [
        ("data", 0, "init"),
        ("disk", 0, "init"),
        ("disk", 0, "ok"),
        ("data", 0, "ok"),
        ("data", 1, "init"),
        ("data", 1, "ok"),
    ]
    listed = await user.node(node).list()
    assert [d["contract_id"] for d in listed] == [dep.contract_id]
    stats = await user.node(node).statistics()
    assert stats.used.sru - stats.system.sru == 256 * MiB + 128 * MiB
    assert stats.users.deployments == 1 and stats.users.workloads == 2
    assert (await user.node(node).version()).zos
    # Registered with what it offers; the heartbeat (every second here) reports what is used.
    registered = await user.registry.get_node(node.node_id)
    assert registered.capacity.sru == 4 * GiB and registered.capacity.mru > 0
    for _ in range(50):
        registered = await user.registry.get_node(node.node_id)
        if registered.used.sru == stats.used.sru:
            break
        await asyncio.sleep(0.1)
    assert registered.used.sru == stats.used.sru and registered.status == "up"

    assert capacity.listening_sockets(node.pid) == []

    await user.node(node).delete(dep.contract_id)
    await user.wait_states(node, dep.contract_id, {"data": "deleted", "disk": "deleted"})
    assert leftovers(node.data_dir) == {"mounts": [], "loops": [], "files": []}
    assert not mountpoint.exists()
    assert await user.node(node).list() == []
    stats = await user.node(node).statistics()
    assert stats.used == stats.system
    assert loop.devices_under(node.data_dir) == {}


async def test_agent_refuses_bad_settings_with_one_line(farm, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "zos.cli", "node", "run"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOS_")}

    async def run(*args: str, token: str = "") -> tuple[int, str]:
        # Asynchronously: the registry the agent talks to runs in this event loop.
        proc = await asyncio.create_subprocess_exec(
            *base,
            *args,
            env={**env, "ZOS_JOIN_TOKEN": token} if token else env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:  # it hung: do not leave it running
                proc.kill()
                await proc.wait()
        return proc.returncode or 0, err.decode()

    code, err = await run("--nats", farm.nats)
    assert code == 1 and "missing --farm-id, --data-dir" in err
    common = ["--farm-id", str(farm.farm_id), "--nats", farm.nats]
    data = tmp_path / "n"
    code, err = await run(*common, "--data-dir", str(data), "--memory", "lots")
    assert code == 1 and "--memory: not a size: 'lots'" in err
    # A well-formed token signed by someone else than the farm's owner: refused by the
    # registry, and the agent says so in one line.
    stranger = RegistryClient(farm.nats, Identity.generate(), registry_key=farm.registry_key)
    await stranger.connect()
    try:
        await stranger.register_twin()
        other_farm = await stranger.create_farm(f"other-{os.getpid()}")
        token = await stranger.farm_join_token(other_farm.id)
    finally:
        await stranger.close()
    code, err = await run(*common, "--data-dir", str(data), token=token)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: registration refused: "), err
    assert f"farm {other_farm.id}" in err
    assert oct((data / "node-key.json").stat().st_mode & 0o777) == "0o600"
