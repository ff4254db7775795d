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

from zos.client import GridClient
from zos.grid.state import GridState
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
