"""Findings of an outside probe of a local grid (issue 12) that need the whole grid: two
tenants' view of the host, and what a deployment leaves on the hub."""

from __future__ import annotations

import random
import sys
import urllib.parse
import uuid
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from gridhelpers import GRID_MARKS, web_rootfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from netzm_helpers import can_connect, listen_in

from zos.client import GridClient, ManifestError
from zos.grid.state import GridState
from zos.hub.client import list_flists
from zos.identity import Identity
from zos.primitives import links

pytestmark = [*GRID_MARKS, pytest.mark.timeout(300)]

APP = """\
name: {name}
node: {node}
machines:
  - name: web
    image: rootfs
    entrypoint: /bin/httpd -f -p 8080 -h /www
"""


def write_app(busybox_rootfs: Path, tmp_path: Path, name: str, node: int) -> Path:
    web_rootfs(busybox_rootfs, tmp_path / "rootfs", "hi\n")
    app = tmp_path / f"{name}.yaml"
    app.write_text(APP.format(name=name, node=node))
    return app


async def test_a_tenant_reaches_nothing_of_the_host(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    # Finding 2: a container reached an address of the host on another bridge
    # (203.0.113.77 in the probe): the walls only knew the node namespace's addresses.
    entry = local_grid.nodes[0]
    host_ip = local_grid.host_address.split("/")[0]
    hub_port = urllib.parse.urlsplit(local_grid.hub_url).port or 0
    nats_port = urllib.parse.urlsplit(local_grid.nats_url).port or 0
    public = f"203.0.113.{random.randrange(10, 250)}"
    bridge = f"zh{uuid.uuid4().hex[:8]}"
    links.ensure_bridge(bridge)
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    try:
        links.set_addresses(bridge, [IPv4Interface(f"{public}/32")])
        links.set_up(bridge)
        service = listen_in(None, 0)  # on every address of the host
        port = service.getsockname()[1]
        info = await grid.deploy(write_app(busybox_rootfs, tmp_path, "probe", entry.node_id))
        machine_ns = f"{entry.netns_prefix}c-{grid.twin_id}-{info.contract_id}-web"
        targets = [(public, port), (host_ip, port), (host_ip, hub_port), (host_ip, nats_port)]
        from_machine = [can_connect(machine_ns, ip, p) for ip, p in targets]
        assert from_machine == [False, False, False, False]
        # The node itself reaches the host only where the grid lives: the hub and NATS.
        from_node = [can_connect(entry.netns, ip, p) for ip, p in targets]
        assert from_node == [False, False, True, True]
        service.close()
        await grid.rm("probe")
    finally:
        links.delete(bridge)
        await grid.close()


async def test_rm_takes_the_images_it_published_off_the_hub(
    local_grid: GridState, busybox_rootfs: Path, tmp_path: Path
) -> None:
    # Finding 6: a manifest published files from outside its directory, and `zos rm`
    # left what its deploy published on the public hub.
    node = local_grid.nodes[1].node_id
    grid = await GridClient.connect(state_dir=local_grid.state_dir, identity=Identity.generate())
    try:
        app = write_app(busybox_rootfs, tmp_path, "pub", node)
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "key.json").write_text('{"seed": "secret"}')
        outside = app.read_text().replace("image: rootfs", "image: ../keys")
        sub = tmp_path / "sub"
        sub.mkdir()
        (sub / "app.yaml").write_text(outside)
        with pytest.raises(ManifestError, match=r"'\.\./keys' leaves the manifest's directory"):
            await grid.deploy(sub / "app.yaml")
        assert await list_flists(local_grid.hub_url, grid.twin_id) == []

        pub = await grid.deploy(app)
        [url] = pub.published
        assert url == f"{local_grid.hub_url}/flists/{grid.twin_id}/pub-web.fl"
        user = APP.format(name="user", node=node).replace("image: rootfs", f"flist: {url}")
        await grid.deploy(user)
        await grid.rm("pub")
        names = [f["name"] for f in await list_flists(local_grid.hub_url, grid.twin_id)]
        assert names == ["pub-web.fl"], "still used by deployment 'user'"
        await grid.rm("user")

        await grid.deploy(app)
        await grid.rm("pub")
        assert await list_flists(local_grid.hub_url, grid.twin_id) == []
    finally:
        await grid.close()


def test_no_secret_in_a_node_agents_argv(local_grid: GridState) -> None:
    # Finding 11: the farm join token was in the node agents' argv, world-readable in
    # /proc/<pid>/cmdline. They read it from a file of the state dir (0600) now.
    token_file = Path(local_grid.state_dir) / "farm-token"
    token = token_file.read_text()
    assert token and token_file.stat().st_mode & 0o777 == 0o600
    nodes = [p for p in local_grid.procs if p.name.startswith("node")]
    assert nodes
    for proc in nodes:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--join-token" not in argv and token.encode() not in b" ".join(argv)
