"""The Python SDK against a real local grid: nodes, deploy, ps, logs, the page from the
host, rm; a manifest asking too much is refused before anything is sent; a workload
that fails is reported with its node and reason."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from gridhelpers import GRID_MARKS, web_rootfs

from zos.client import GridClient, GridClientError, ManifestError
from zos.grid.state import GridState, load_forwards
from zos.identity import Identity
from zos.primitives import netns

pytestmark = [*GRID_MARKS, pytest.mark.timeout(300)]

PAGE = "<h1>sdk test page</h1>\n"

MANIFEST = """\
name: sdkapp
nodes: {{}}
disks:
  - {{name: data, size: 32M}}
machines:
  - name: web
    image: {image}
    memory: {memory}
    entrypoint: /bin/sh -c "echo booted $GREETING; exec httpd -f -v -p 8080 -h /www"
    env: {{GREETING: hi}}
    mounts: [{{disk: data, mountpoint: /data}}]
    ports: [8080]
"""


def write_app(busybox_rootfs: Path, tmp_path: Path, memory: str) -> Path:
    web_rootfs(busybox_rootfs, tmp_path / "rootfs", PAGE)
    app = tmp_path / "app.yaml"
    app.write_text(MANIFEST.format(image="rootfs", memory=memory))
    return app


def fetch(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


async def test_sdk_deploy_list_logs_remove(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    app = write_app(busybox_rootfs, tmp_path, "256M")
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    try:
        nodes = await grid.nodes(status="up")
        assert sorted(n.id for n in nodes) == sorted(n.node_id for n in local_grid.nodes)
        assert await grid.nodes(free_memory=64 << 30) == []
        assert len(await grid.nodes(farm=local_grid.farm_id, free_memory=256 << 20)) == 2
        url = await grid.push_image(tmp_path / "rootfs", "pushed")
        assert url == f"{local_grid.hub_url}/flists/{grid.twin_id}/pushed.fl"
        flist = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert len(flist) > 100  # the hub serves it

        seen: list[tuple[str, str]] = []
        info = await grid.deploy(app, progress=lambda n, t, s, m: seen.append((n, s)))
        assert info.state == "ok" and info.name == "sdkapp"
        assert ("web", "ok") in seen and ("data", "ok") in seen
        [machine] = info.machines
        assert machine.ip == "10.20.{}.2".format(machine.ip.split(".")[2])
        [url] = machine.urls
        assert await asyncio.to_thread(fetch, url) == PAGE

        [listed] = await grid.ps()
        assert (listed.name, listed.state, listed.contract_id) == ("sdkapp", "ok", info.contract_id)
        assert listed.machines[0].urls == [url]

        deadline = time.monotonic() + 20
        text = ""
        while "booted hi" not in text and time.monotonic() < deadline:
            text = "".join([t async for t in grid.logs("sdkapp")])
            await asyncio.sleep(0.2)
        assert "booted hi" in text
        follow = grid.logs("sdkapp/web", follow=True)
        assert "booted hi" in await anext(follow)
        await asyncio.to_thread(fetch, url)  # httpd -v logs the request: it comes next
        assert "response:200" in await asyncio.wait_for(anext(follow), 30)
        await follow.aclose()

        removed = await grid.rm("sdkapp")
        assert [d.contract_id for d in removed] == [info.contract_id]
        assert await grid.ps() == []
        assert load_forwards(Path(local_grid.state_dir)) == []
        wid = f"{grid.twin_id}-{info.contract_id}-web"
        assert not [ns for ns in netns.names(prefix=local_grid.tag) if wid in ns]
        contracts = await grid.registry.list_contracts(grid.twin_id, state="created")
        assert contracts == []
        with pytest.raises(GridClientError, match="no deployment named 'sdkapp'"):
            await grid.rm("sdkapp")
    finally:
        await grid.close()


async def test_too_much_memory_is_refused_before_anything_is_sent(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    app = write_app(busybox_rootfs, tmp_path, "64G")
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    try:
        with pytest.raises(ManifestError) as info:
            await grid.deploy(app)
        assert info.value.where == f"{app}:8"
        assert "need 64G of memory" in str(info.value) and "no node has that free" in str(
            info.value
        )
        assert await grid.registry.list_contracts(grid.twin_id) == []
        assert await grid.ps() == []
    finally:
        await grid.close()


async def test_a_missing_flist_is_refused_before_anything_is_sent(local_grid: GridState) -> None:
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    url = f"{local_grid.hub_url}/flists/{grid.twin_id}/missing.fl"
    text = MANIFEST.format(image="x", memory="256M").replace("image: x", f"flist: {url}")
    try:
        with pytest.raises(ManifestError) as info:
            await grid.deploy(text)
        assert info.value.where == "manifest:7"
        assert f"machines[0].flist: {url} answered 404: no such flist" in str(info.value)
        assert await grid.registry.list_contracts(grid.twin_id) == []
    finally:
        await grid.close()


async def test_a_failing_workload_names_node_and_reason(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    node = local_grid.nodes[0].node_id
    app = write_app(busybox_rootfs, tmp_path, "256M")
    # The subnet's .1 is the network's gateway: only the node knows to refuse it.
    text = app.read_text().replace("nodes: {}", f"node: {node}\nnetwork: {{subnet: 10.20.9.0/24}}")
    app.write_text(text.replace("    ports: [8080]", "    ports: [8080]\n    ip: 10.20.9.1"))
    try:
        with pytest.raises(GridClientError) as info:
            await grid.deploy(app, timeout=60)
        msg = str(info.value)
        assert f"zmachine 'web' failed on node {node}: network.interfaces[0].ip:" in msg
        assert "10.20.9.1 is reserved" in msg and "zos rm sdkapp" in msg
        [listed] = await grid.ps()
        assert listed.state == "error"
        await grid.rm("sdkapp")
        assert await grid.ps() == []
    finally:
        await grid.close()


async def test_encrypted_deployment_locked_unlocked_shared(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """The client side of encryption at rest: a deployment is encrypted by default; when
    its node has lost the key `ps` shows it locked and `zos ps` / `zos unlock` say so and
    fix it; a teammate unlocks only while it is shared with."""
    import hashlib
    import os
    import subprocess
    import sys

    from zos.identity import new_mnemonic
    from zos.primitives import fscrypt, keyring

    app = write_app(busybox_rootfs, tmp_path, "256M")
    app.write_text(app.read_text().replace("name: sdkapp", "name: secret"))
    mnemonic = new_mnemonic()
    grid = await GridClient.connect(
        state_dir=local_grid.state_dir, identity=Identity.from_mnemonic(mnemonic)
    )
    mate = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    env = {**os.environ, "ZOS_MNEMONIC": mnemonic}
    zos = [sys.executable, "-m", "zos.cli"]
    where = ["--state-dir", str(local_grid.state_dir)]
    try:
        info = await grid.deploy(app)
        [listed] = await grid.ps()
        assert (listed.encrypted, listed.locked, listed.state) == (True, False, "ok")
        entry = next(n for n in local_grid.nodes if n.node_id == info.node_id)
        data_dir = Path(entry.data_dir).resolve()
        volume = data_dir / "storage" / "volumes" / f"{grid.twin_id}-{info.contract_id}-data"
        assert fscrypt.get_policy(volume / "data") is not None
        tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]

        def lose_key() -> None:  # what a reboot does to the key the node holds
            assert keyring.forget(f"zos:{tag}:{info.contract_id}")

        lose_key()
        [listed] = await grid.ps()
        assert (listed.state, listed.locked) == ("locked", True)
        shown = subprocess.run([*zos, "ps", *where], capture_output=True, text=True, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "locked" in shown.stdout and "encrypted" in shown.stdout
        assert "`zos unlock secret`" in shown.stderr  # offered (no terminal: how to)

        with pytest.raises(GridClientError, match="has no such deployment"):
            await mate.unlock(node_id=info.node_id, contract_id=info.contract_id)
        await grid.share("secret", mate.twin_id)
        assert await mate.unlock(node_id=info.node_id, contract_id=info.contract_id) is True
        [listed] = await grid.ps()
        assert (listed.state, listed.locked) == ("ok", False)

        await grid.unshare("secret", mate.twin_id)
        lose_key()
        with pytest.raises(GridClientError, match="has no such deployment"):
            await mate.unlock(node_id=info.node_id, contract_id=info.contract_id)
        done = subprocess.run(
            [*zos, "unlock", "secret", *where], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "secret: unlocked" in done.stdout
        [listed] = await grid.ps()
        assert (listed.state, listed.locked) == ("ok", False)
        await grid.rm("secret")
        assert keyring.descriptions(f"zos:{tag}:") == []
    finally:
        await mate.close()
        await grid.close()
