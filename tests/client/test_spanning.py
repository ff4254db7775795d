"""A manifest over several nodes, without a grid: its checks, where each machine goes,
each node's part and the deployment built for it (the grid test deploys one for real:
tests/grid/test_network_mesh.py)."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Network

import pytest
from test_placement_building import GiB, MiB, node

from zos.client import building, gateways, spanning
from zos.client.manifest import ManifestError, parse_manifest
from zos.client.views import DeploymentInfo, GatewayInfo, MachineInfo, find
from zos.registry import Node

MESH = """\
name: mesh
network: {name: meshnet, ip_range: 10.40.0.0/16}
disks: [{name: data, size: 64M}]
machines:
  - name: a
    node: 1
    mounts: [{disk: data, mountpoint: /data}]
    flist: http://hub.example/flists/7/a.fl
  - name: b
    node: 2
    flist: http://hub.example/flists/7/b.fl
  - name: c
    nodes: {farm: 1}
    flist: http://hub.example/flists/7/c.fl
  - name: d
    nodes: {farm: 1}
    flist: http://hub.example/flists/7/d.fl
"""


def place(text: str, nodes: list[Node]) -> dict[str, int]:
    by_id = {n.id: n for n in nodes}

    async def node_by_id(node_id: int) -> Node:
        if node_id not in by_id:
            raise LookupError(f"node {node_id} does not exist")
        return by_id[node_id]

    async def up(farm: int | None) -> list[Node]:
        return [n for n in nodes if n.status == "up"]

    return asyncio.run(spanning.place_machines(parse_manifest(text, "app.yaml"), node_by_id, up))


def test_machines_that_name_nodes_make_a_spanning_manifest() -> None:
    m = parse_manifest(MESH, "app.yaml")
    assert m.spans_nodes and [x.node for x in m.machines] == [1, 2, None, None]
    assert not parse_manifest(
        MESH.replace("    node: 1\n", "")
        .replace("    node: 2\n", "")
        .replace("    nodes: {farm: 1}\n", ""),
        "x",
    ).spans_nodes


@pytest.mark.parametrize(
    ("change", "field", "line"),
    [
        (("ip_range: 10.40.0.0/16", "ip_range: 10.40.0.0/16, subnet: 10.40.3.0/24"), "subnet", 2),
        (("ip_range: 10.40.0.0/16", "ip_range: 10.40.0.0/24"), "must be a private /16", 2),
        (("ip_range: 10.40.0.0/16", "ip_range: 8.8.0.0/16"), "must be a private /16", 2),
        (("    node: 2\n", "    node: 2\n    ip: 10.40.3.9\n"), "machines[1].ip", 1),
        (("    node: 2\n", "    node: 2\n    nodes: {farm: 1}\n"), "not both", 9),
        (("    node: 2\n", "    node: 0\n"), "machines[1].node", 12),
    ],
)
def test_a_spanning_manifest_is_checked(change: tuple[str, str], field: str, line: int) -> None:
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")) as e:
        parse_manifest(MESH.replace(*change), "app.yaml")
    assert e.value.where.startswith("app.yaml:")


def test_each_machine_goes_to_its_node_and_filtered_ones_spread() -> None:
    nodes = [node(1, 4 * GiB), node(2, 4 * GiB), node(3, 2 * GiB)]
    where = place(MESH, nodes)
    assert where["a"] == 1 and where["b"] == 2
    # c: the roomiest once a and b are counted (1 and 2 have a machine each): 1 (lower id)
    # d: then 2 has most left
    assert (where["c"], where["d"]) == (1, 2)


def test_a_machine_that_does_not_fit_is_named() -> None:
    with pytest.raises(ManifestError, match="node 2 is down"):
        place(MESH, [node(1, 4 * GiB), node(2, 4 * GiB, "down")])
    with pytest.raises(ManifestError, match=r"machines\[1\].node: node 2 does not exist"):
        place(MESH, [node(1, 4 * GiB)])
    small = [node(1, 600 * MiB), node(2, 300 * MiB)]
    with pytest.raises(ManifestError, match=r"machines\[3\]: needs 256M of memory") as e:
        place(MESH, small)
    assert e.value.where == "app.yaml:15"


def test_each_node_gets_its_machines_and_their_disks() -> None:
    m = parse_manifest(MESH, "app.yaml")
    parts = spanning.parts(m, {"a": 1, "b": 2, "c": 3, "d": 3})
    assert {n: [x.name for x in p.machines] for n, p in parts.items()} == {
        1: ["a"],
        2: ["b"],
        3: ["c", "d"],
    }
    assert [d.name for d in parts[1].disks] == ["data"] and not parts[3].disks
    shared = MESH.replace(
        "    node: 2\n", "    node: 2\n    mounts: [{disk: data, mountpoint: /d}]\n"
    )
    with pytest.raises(ManifestError, match="'data' is mounted by machines on nodes 1, 2"):
        spanning.parts(parse_manifest(shared, "app.yaml"), {"a": 1, "b": 2, "c": 3, "d": 3})


def test_a_part_joins_the_network_of_its_node() -> None:
    m = parse_manifest(MESH, "app.yaml")
    part = spanning.parts(m, {"a": 1, "b": 2, "c": 3, "d": 3})[3]
    flists = {x.name: x.flist or "" for x in m.machines}
    dep = building.build_deployment(
        7, part, flists, {"10.40.4.2"}, subnet=IPv4Network("10.40.4.0/24")
    )
    assert [w.type for w in dep.workloads] == ["zmachine", "zmachine"]  # no network of its own
    ips = [w.data.network.interfaces[0].ip for w in dep.workloads]
    nets = {w.data.network.interfaces[0].network for w in dep.workloads}
    assert [str(i) for i in ips] == ["10.40.4.3", "10.40.4.4"] and nets == {"meshnet"}


def test_a_machine_is_found_in_its_own_nodes_deployment() -> None:
    def dep(node_id: int, machine: str) -> DeploymentInfo:
        return DeploymentInfo(
            name="mesh", contract_id=node_id, node_id=node_id, state="ok",
            machines=[MachineInfo(name=machine)],
        )  # fmt: skip

    deps = [dep(1, "a"), dep(2, "b")]
    assert find(deps, "mesh/b") == (deps[1], "b")
    assert find(deps, "b") == (deps[1], "b")
    assert find(deps, "mesh") == (deps[0], None)


def test_a_gateway_on_a_node_without_machines_gets_a_part_of_its_own() -> None:
    m = parse_manifest(
        MESH + "gateways: [{name: web, machine: b, port: 80, node: 3}]\n", "app.yaml"
    )
    where = {"a": 1, "b": 2, "c": 1, "d": 2}
    parts = spanning.parts(m, where)
    parts.setdefault(3, spanning.only(m, []))
    flists = {x.name: x.flist or "" for x in m.machines}
    deps = {
        n: building.build_deployment(7, p, flists, subnet=IPv4Network(f"10.40.{n}.0/24"))
        for n, p in parts.items()
    }
    gateways.add_gateways(deps, m, [3])
    assert [w.type for w in deps[3].workloads] == ["gateway-name-proxy"]  # no machine, no disk
    gw = deps[3].to_dict()["workloads"][0]["data"]
    # the backend: machine b's address in node 2's /24, over the network's mesh
    assert gw["backends"] == ["http://10.40.2.2:80"] and gw["network"] == "meshnet"
    assert json.loads(deps[3].metadata)["name"] == "mesh"  # `rm mesh` takes it too
    assert all(w.type != "gateway-name-proxy" for n in (1, 2) for w in deps[n].workloads)


def test_rm_drops_the_network_only_where_gateways_alone_used_it() -> None:
    def dep(
        node_id: int, machines: list[str], gws: list[str], name: str = "mesh"
    ) -> DeploymentInfo:
        return DeploymentInfo(
            name=name, contract_id=node_id, node_id=node_id, state="ok",
            machines=[MachineInfo(name=x, network="meshnet") for x in machines],
            gateways=[GatewayInfo(name=g, network="meshnet") for g in gws],
        )  # fmt: skip

    removed = [dep(1, ["a"], []), dep(2, ["b"], ["gw_b"]), dep(3, [], ["gw_web"])]
    assert spanning.gateway_only_nodes(removed, []) == {("meshnet", 3)}
    # another deployment of yours with a gateway on that network there keeps it
    assert spanning.gateway_only_nodes(removed, [dep(3, [], ["gw_x"], "other")]) == set()
    # a one-node manifest served from another node: shown as one deployment
    one = spanning.as_one([removed[0], removed[2]], 1)
    assert one.contract_id == 1 and [g.name for g in one.gateways] == ["gw_web"]
