"""Placement and building without a grid: which node a manifest goes to, and the
deployment built from it (pure functions; the SDK tests deploy for real)."""

from __future__ import annotations

import json

import pytest

from zos.client import building, placement
from zos.client.manifest import ManifestError, parse_manifest
from zos.client.views import DeploymentInfo, MachineInfo, read_deployment
from zos.registry import Capacity, Node

MiB, GiB = 1 << 20, 1 << 30
MANIFEST = """\
name: hello
nodes: {farm: 1}
disks:
  - {name: data, size: 64M}
machines:
  - name: web
    flist: http://hub.example/flists/7/web.fl
    memory: 256M
    mounts:
      - {disk: data, mountpoint: /data}
  - name: api
    flist: http://hub.example/flists/7/api.fl
    memory: 512M
"""


def node(node_id: int, free_memory: int, status: str = "up") -> Node:
    return Node(
        id=node_id,
        farm_id=1,
        twin_id=100 + node_id,
        capacity=Capacity(cru=4, mru=free_memory, sru=100 * GiB),
        created=0,
        last_heartbeat=0,
        status=status,  # type: ignore[arg-type]
    )


def test_needs_counts_memory_disks_and_a_root_for_each_machine() -> None:
    m = parse_manifest(MANIFEST, "app.yaml")
    assert placement.needs(m) == (768 * MiB, 64 * MiB + 2 * placement.MIN_ROOT_DISK)


def test_choose_takes_the_node_with_most_free_memory_that_fits() -> None:
    m = parse_manifest(MANIFEST, "app.yaml")
    memory, disk = placement.needs(m)
    up = [node(1, 512 * MiB), node(2, 2 * GiB), node(3, 4 * GiB)]
    assert placement.choose(m, up, memory, disk).id == 3
    with pytest.raises(ManifestError, match="most memory free: 512M on node 1") as e:
        placement.choose(m, up[:1], memory, disk)
    assert e.value.where == "app.yaml:13"  # the largest machine's memory
    with pytest.raises(ManifestError, match="no node is up in farm 1"):
        placement.choose(m, [], memory, disk)


def test_a_named_node_must_be_up_and_have_room() -> None:
    m = parse_manifest(MANIFEST.replace("nodes: {farm: 1}", "node: 2"), "app.yaml")
    memory, disk = placement.needs(m)
    assert placement.check_named(m, node(2, GiB), memory, disk).id == 2
    with pytest.raises(ManifestError, match="node 2 is down"):
        placement.check_named(m, node(2, GiB, "down"), memory, disk)
    with pytest.raises(ManifestError, match="need 768M of memory, node 2 has 512M free"):
        placement.check_named(m, node(2, 512 * MiB), memory, disk)


def test_build_gives_free_addresses_and_metadata_that_ps_reads_back() -> None:
    m = parse_manifest(MANIFEST, "app.yaml")
    flists = {x.name: x.flist for x in m.machines}
    other = DeploymentInfo(
        name="other",
        contract_id=1,
        node_id=3,
        state="ok",
        machines=[MachineInfo(name="db", ip="10.20.9.2", network=m.network_name)],
    )
    m.network.subnet = "10.20.9.0/24"
    taken = building.taken_ips([other], 3, m)
    assert taken == {"10.20.9.2"} and building.taken_ips([other], 4, m) == set()
    dep = building.build_deployment(7, m, flists, taken, published=[flists["web"]])
    assert [w.type for w in dep.workloads] == ["network", "volume", "zmachine", "zmachine"]
    assert json.loads(dep.metadata)["published"] == [flists["web"]]
    dep.contract_id = 5
    info = read_deployment(dep.to_dict(), 3, [])
    assert info.name == "hello" and info.published == [flists["web"]]
    assert [(x.name, x.ip) for x in info.machines] == [("web", "10.20.9.3"), ("api", "10.20.9.4")]
