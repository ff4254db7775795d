"""NetworkService and `zos network ...` over a small in-memory `NetworkNodes`.

The service's collaborator here is `Nodes`: it answers the nodes' `zos.network.*`
commands from fixed NodeInfo and keeps each node's network workload as JSON, refusing
what a node refuses (an invalid deployment, a wrong version, a listen port another
workload holds). That it carries
packets is shown by test_netplan_tunnels.py; the planner's rules by test_netplan.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from netplan_helpers import deployment_of

from zos.cli import build_parser
from zos.cli._io import identity_from_args
from zos.cli.network import add_commands
from zos.client.networks import NetworkPlanError, NodeInfo, SeededRandomness
from zos.client.networks.service import NetworkService
from zos.client.networks.wgkeys import public_key
from zos.gridtypes.workload import Workload
from zos.identity import Identity, write_key_file

OWNER = Identity(bytes(range(32)))
RANGE = "10.40.0.0/16"


def v4(nid: int) -> NodeInfo:
    return NodeInfo(nid, {"ipv4": f"185.206.122.{nid}/24"}, {"zos": [f"10.10.0.{nid}"]}, [6882])


def hidden(nid: int) -> NodeInfo:
    return NodeInfo(nid, None, {"zos": [f"192.168.1.{nid}"]})


class NodeDown(Exception):
    pass


class Nodes:
    """The grid as the service sees it: each node's answers and network workloads."""

    def __init__(self, *infos: NodeInfo) -> None:
        self.infos = {i.node_id: i for i in infos}
        self.stored: dict[int, dict[str, str]] = {}  # node → network name → workload JSON
        self.down: set[int] = set()
        self.seen: dict[int, dict[str, int]] = {}  # node → peer key → handshake time
        self.sent: list[tuple[str, int]] = []

    def _node(self, node_id: int) -> NodeInfo:
        if node_id in self.down:
            raise NodeDown(f"node {node_id} does not answer")
        return self.infos[node_id]

    def _held(self, node_id: int, other_than: str) -> set[int]:
        ports = set(self._node(node_id).taken_ports)
        for name, text in self.stored.get(node_id, {}).items():
            if name != other_than:
                ports.add(json.loads(text)["data"]["wireguard_listen_port"])
        return ports

    async def list_wg_ports(self, node_id: int) -> Sequence[int]:
        return sorted(self._held(node_id, ""))

    async def public_config(self, node_id: int) -> Mapping[str, Any] | None:
        return self._node(node_id).public_config

    async def interfaces(self, node_id: int) -> Mapping[str, Sequence[str]]:
        return self._node(node_id).interfaces

    async def list_private_ips(self, node_id: int, network: str) -> Sequence[str]:
        self._node(node_id)
        return ["10.40.2.2"] if network in self.stored.get(node_id, {}) else []

    async def handshakes(self, node_id: int, network: str) -> Mapping[str, int] | None:
        self._node(node_id)
        return self.seen.get(node_id)

    async def networks(self) -> Mapping[str, Mapping[int, Workload]]:
        out: dict[str, dict[int, Workload]] = {}
        for node_id, held in self.stored.items():
            for name, text in held.items():
                out.setdefault(name, {})[node_id] = Workload.from_raw(json.loads(text))
        return out

    def _store(self, node_id: int, wl: Workload, version: int) -> None:
        self._node(node_id)
        if wl.version != version:
            raise ValueError(f"version {wl.version}, expected {version}")
        deployment_of(wl)  # refused as a node refuses it
        if wl.data.wireguard_listen_port in self._held(node_id, wl.name):
            raise ValueError(f"listen_port: {wl.data.wireguard_listen_port} is already in use")
        self.stored.setdefault(node_id, {})[wl.name] = wl.to_json()

    async def deploy(self, node_id: int, workload: Workload) -> None:
        self.sent.append(("deploy", node_id))
        if workload.name in self.stored.get(node_id, {}):
            raise ValueError(f"network {workload.name} exists on node {node_id}")
        self._store(node_id, workload, 0)

    async def update(self, node_id: int, workload: Workload) -> None:
        self.sent.append(("update", node_id))
        old = json.loads(self.stored[node_id][workload.name])
        self._store(node_id, workload, old["version"] + 1)

    async def remove(self, node_id: int, network: str) -> None:
        self.sent.append(("remove", node_id))
        self._node(node_id)
        del self.stored[node_id][network]

    def keys(self) -> dict[int, tuple[str, int, str]]:
        """node → (private key, port, subnet) of network 'mesh'."""
        out = {}
        for nid, held in self.stored.items():
            if "mesh" in held:
                data = json.loads(held["mesh"])["data"]
                out[nid] = (
                    data["wireguard_private_key"],
                    data["wireguard_listen_port"],
                    data["subnet"],
                )
        return out


def service(nodes: Nodes, **kw: Any) -> NetworkService:
    return NetworkService(nodes, OWNER, rng=SeededRandomness(5), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def teammate(seed: int) -> str:
    return public_key(base64.b64encode(bytes([seed]) * 32).decode())


@pytest.fixture
def grid() -> Nodes:
    nodes = Nodes(v4(11), v4(12), hidden(13), v4(14))
    run(service(nodes).ensure("mesh", RANGE, [11, 12, 13]))
    nodes.sent.clear()
    return nodes


# ---- the service ---------------------------------------------------------------------


def test_ensure_creates_each_node_and_then_changes_nothing():
    nodes = Nodes(v4(11), v4(12), hidden(13))
    applied = run(service(nodes).ensure("mesh", RANGE, [11, 12, 13]))
    assert applied.ok and sorted((r.node_id, r.action) for r in applied.results) == [
        (11, "create"),
        (12, "create"),
        (13, "create"),
    ]
    assert applied.plan.access_node == 11
    again = run(service(nodes).ensure("mesh", RANGE, [11, 12, 13]))
    assert again.results == () and nodes.sent == [("deploy", n) for n in (11, 12, 13)]


def test_adding_a_node_keeps_every_key_and_port(grid: Nodes):
    before = grid.keys()
    applied = run(service(grid).ensure("mesh", RANGE, [11, 12, 13, 14]))
    assert applied.ok
    assert sorted(grid.sent) == [("deploy", 14), ("update", 11), ("update", 12)]
    after = grid.keys()
    assert {n: after[n] for n in before} == before
    assert after[14][1] != 6882  # the node's taken port is avoided


def test_removing_a_node_removes_its_workload(grid: Nodes):
    applied = run(service(grid).ensure("mesh", RANGE, [11, 13]))
    assert applied.ok and ("remove", 12) in grid.sent
    assert "mesh" not in grid.stored[12]


def test_access_writes_the_same_file_each_time_and_keeps_the_key_sealed(grid: Nodes):
    svc = service(grid)
    text, applied = run(svc.access("mesh"))
    assert applied.ok and sorted(r.node_id for r in applied.results) == [11, 12]
    assert "Endpoint = 185.206.122.11:" in text
    assert "AllowedIPs = 10.40.0.0/16, 100.64.0.0/16" in text
    key = next(line.split(" = ")[1] for line in text.splitlines() if line.startswith("Private"))
    for held in grid.stored.values():
        assert all(key not in wl for wl in held.values())
    again, applied = run(svc.access("mesh"))
    assert again == text and applied.results == ()
    # another key cannot open it
    with pytest.raises(NetworkPlanError, match="cannot be opened"):
        run(NetworkService(grid, Identity.generate()).access("mesh"))


def test_access_through_a_node_outside_the_network():
    nodes = Nodes(hidden(1), v4(9))
    run(service(nodes).ensure("mesh", RANGE, [1]))
    text, applied = run(service(nodes).access("mesh", node_id=9))
    assert applied.ok and "Endpoint = 185.206.122.9:" in text
    assert sorted(nodes.stored) == [1, 9]


def test_grant_and_revoke_touch_only_the_access_node(grid: Nodes):
    svc = service(grid)
    mine, _ = run(svc.access("mesh"))
    grid.sent.clear()
    alice = teammate(7)
    applied = run(svc.grant("mesh", alice, "alice"))
    assert applied.ok and sorted(grid.sent) == [("update", 11), ("update", 12)]
    plan = run(svc.current("mesh"))
    assert plan.access("alice").public_key == alice and plan.access("alice").granted
    with pytest.raises(NetworkPlanError, match="already granted as 'alice'"):
        run(svc.grant("mesh", alice, "bob"))
    with pytest.raises(NetworkPlanError, match="your own access"):
        run(svc.grant("mesh", teammate(8), "laptop"))
    with pytest.raises(NetworkPlanError, match="teammate's access"):
        run(svc.access("mesh", access_name="alice"))
    grid.sent.clear()
    applied = run(svc.revoke("mesh", wg_key=alice))
    assert applied.ok and sorted(grid.sent) == [("update", 11), ("update", 12)]
    plan = run(svc.current("mesh"))
    assert [a.name for a in plan.accesses] == ["laptop"]
    assert run(svc.access("mesh"))[0] == mine  # the owner's file still works
    with pytest.raises(NetworkPlanError) as e:
        run(svc.revoke("mesh", "alice"))
    assert e.value.field == "access_name" and "no access 'alice'" in str(e.value)


def test_a_node_down_is_reported_and_stops_no_other(grid: Nodes):
    svc = service(grid)
    grid.down.add(12)
    applied = run(svc.grant("mesh", teammate(7), "alice"))
    assert not applied.ok
    assert {(r.node_id, r.action, r.ok) for r in applied.results} == {
        (11, "update", True),
        (12, "update", False),
    }
    assert "does not answer" in next(r.error for r in applied.results if not r.ok)
    # back up: the next change finishes it (12 gets alice's route, with version + 1)
    grid.down.clear()
    applied = run(svc.grant("mesh", teammate(8), "bob"))
    assert applied.ok
    node12 = json.loads(grid.stored[12]["mesh"])
    assert node12["version"] == 1
    routes = {ip for p in node12["data"]["peers"] for ip in p["allowed_ips"]}
    plan = run(svc.current("mesh"))
    assert {plan.access("alice").subnet, plan.access("bob").subnet} <= routes


def test_a_new_node_that_does_not_answer_cannot_be_planned(grid: Nodes):
    grid.down.add(14)
    before = dict(grid.stored)
    with pytest.raises(NetworkPlanError) as e:
        run(service(grid).ensure("mesh", RANGE, [11, 12, 13, 14]))
    assert e.value.field == "nodes" and "node 14 does not answer" in str(e.value)
    assert grid.stored == before and grid.sent == []


def test_show_lists_peers_with_their_handshake_age(grid: Nodes):
    svc = NetworkService(grid, OWNER, rng=SeededRandomness(5), clock=lambda: 1000.0)
    plan = run(svc.current("mesh"))
    grid.seen[11] = {plan.node(12).public_key: 970, plan.node(13).public_key: 0}
    grid.down.add(13)
    _, views = run(svc.show("mesh"))
    v11, _, v13 = views
    assert (v11.node_id, v11.access_node, v11.endpoint) == (11, True, plan.node(11).endpoint)
    assert v11.private_ips == ("10.40.2.2",)
    ages = {p.what: p.handshake_age for p in v11.peers}
    assert ages == {"node 12": 30.0, "node 13": None}
    assert v13.endpoint == "" and "does not answer" in v13.error
    assert [p.what for p in v13.peers] == ["node 11"]


def test_unknown_network():
    with pytest.raises(NetworkPlanError, match="no network 'nope'"):
        run(service(Nodes(v4(1))).access("nope"))


# ---- the CLI -------------------------------------------------------------------------


def cli(nodes: Nodes, key_file: Path, *argv: str) -> int:
    @asynccontextmanager
    async def connect(args: argparse.Namespace) -> AsyncIterator[NetworkService]:
        identity = identity_from_args(args)
        assert identity is not None
        yield NetworkService(nodes, identity)

    parser = argparse.ArgumentParser(prog="zos")
    add_commands(parser.add_subparsers(), connect)
    args = parser.parse_args(["network", *argv, "--key-file", str(key_file)])
    return args.handler(args)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    write_key_file(path, OWNER)
    return path


def test_zos_network_is_registered_with_the_grid_options():
    args = build_parser("network").parse_args(["network", "show", "mesh", "--nats", "nats://x"])
    assert args.name == "mesh" and args.nats == "nats://x" and args.state_dir is None


def test_cli_access_grant_revoke_show_ls(grid: Nodes, key_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "mesh.conf"
    out.write_text("old")
    out.chmod(0o644)
    assert cli(grid, key_file, "access", "mesh", "-o", str(out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("[Interface]\nPrivateKey = ")
    err = capsys.readouterr().err
    assert "node 11     update  ok" in err and f"wrote {out}" in err
    assert cli(grid, key_file, "access", "mesh") == 0
    assert capsys.readouterr().out == out.read_text()  # the same file, to stdout

    alice = teammate(7)
    assert cli(grid, key_file, "grant", "mesh", "--wg-key", alice, "--name", "alice") == 0
    capsys.readouterr()
    assert cli(grid, key_file, "ls") == 0
    assert "mesh                 10.40.0.0/16     11,12,13             laptop,alice" in (
        capsys.readouterr().out
    )
    assert cli(grid, key_file, "show", "mesh", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [n["node_id"] for n in shown["nodes"]] == [11, 12, 13]
    assert {a["name"]: a["granted"] for a in shown["accesses"]} == {"laptop": False, "alice": True}
    assert cli(grid, key_file, "show", "mesh") == 0
    text = capsys.readouterr().out
    assert "node 13: 10.40.4.0/24 at hidden" in text and "access alice:" in text
    assert "handshake never" in text

    assert cli(grid, key_file, "revoke", "mesh", "--name", "alice") == 0
    capsys.readouterr()
    assert cli(grid, key_file, "ls", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["accesses"] == ["laptop"]


def test_cli_errors_name_the_field_and_nodes_that_failed_set_the_exit_code(
    grid: Nodes, key_file: Path, capsys
):
    from zos.cli import CliError

    with pytest.raises(CliError, match="wg_key: 'nope' is not a base64 WireGuard key"):
        cli(grid, key_file, "grant", "mesh", "--wg-key", "nope")
    grid.down.add(12)
    assert cli(grid, key_file, "grant", "mesh", "--wg-key", teammate(7)) == 1
    assert "node 12     update  error: node 12 does not answer" in capsys.readouterr().err


def test_a_network_that_cannot_be_read_is_named_and_hides_no_other(
    grid: Nodes, key_file: Path, capsys
):
    odd = json.loads(grid.stored[11]["mesh"])
    odd["name"], odd["data"]["subnet"] = "odd", "10.40.2.0/25"  # not a /24: no plan of ours
    grid.stored[11]["odd"] = json.dumps(odd)
    plans, bad = run(service(grid).readable())
    assert [p.name for p in plans] == ["mesh"]
    assert bad == {"odd": "workloads[11].data.subnet: 10.40.2.0/25 is not a /24 inside ip_range "
                   "10.40.0.0/16"}  # fmt: skip
    assert cli(grid, key_file, "ls") == 0
    out = capsys.readouterr().out
    assert (
        "mesh                 10.40.0.0/16" in out and "odd                  cannot be read" in out
    )
