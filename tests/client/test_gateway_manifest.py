"""A manifest's `gateways:` without a grid: the checks (each error names its field), the
node a gateway needs, and the workload it becomes in the deployment (the grid tests in
tests/grid/test_gateway_grid.py deploy one for real)."""

from __future__ import annotations

import pytest

from zos.client import building, gateways
from zos.client.manifest import ManifestError, parse_manifest
from zos.registry import Capacity, Node, PublicConfig

GiB = 1 << 30
APP = """\
name: hello
network: {name: hellonet, subnet: 10.20.1.0/24}
machines:
  - name: web
    flist: http://hub.example/flists/7/web.fl
gateways:
"""


def manifest(*gateways_yaml: str):  # type: ignore[no-untyped-def]
    return parse_manifest(APP + "".join(f"  - {g}\n" for g in gateways_yaml), "app.yaml")


def refused(*gateways_yaml: str) -> ManifestError:
    with pytest.raises(ManifestError) as e:
        manifest(*gateways_yaml)
    return e.value


def node(node_id: int, config: PublicConfig | None = None) -> Node:
    return Node(
        id=node_id,
        farm_id=1,
        twin_id=100 + node_id,
        capacity=Capacity(cru=4, mru=8 * GiB, sru=100 * GiB),
        created=0,
        last_heartbeat=0,
        status="up",
        public_config=config or PublicConfig(),
    )


GATEWAY = PublicConfig(ipv4="10.1.0.2/24", gw4="10.1.0.1", domain="gw1.example")
IPV4_ONLY = PublicConfig(ipv4="10.1.0.3/24", gw4="10.1.0.1")


def test_a_gateway_is_parsed() -> None:
    m = manifest(
        "{name: hello, machine: web, port: 8080}",
        "{fqdn: WWW.Example.com, machine: web, port: 8443, tls_passthrough: true}",
    )
    name, fqdn = m.gateways
    assert (name.name, name.machine, name.port, name.tls_passthrough) == (
        "hello",
        "web",
        8080,
        False,
    )
    assert (fqdn.fqdn, fqdn.tls_passthrough) == ("www.example.com", True)
    assert (name.workload_name, fqdn.workload_name) == ("gw_hello", "gw_www_example_com")


@pytest.mark.parametrize(
    ("gateway", "where", "says"),
    [
        ("{name: Hello!, machine: web, port: 80}", "app.yaml:7", "gateways[0].name: 'Hello!'"),
        (
            "{name: a, fqdn: a.example, machine: web, port: 80}",
            "app.yaml:7",
            "gateways[0]: needs exactly one of `name`",
        ),
        ("{machine: web, port: 80}", "app.yaml:7", "gateways[0]: needs exactly one"),
        (
            "{name: a, machine: db, port: 80}",
            "app.yaml:7",
            "gateways[0].machine: no machine named 'db' (machines: web)",
        ),
        ("{name: a, machine: web, port: 0}", "app.yaml:7", "gateways[0].port:"),
        ("{name: a, machine: web}", "app.yaml:7", "gateways[0].port: is missing"),
        (
            "{name: a, machine: web, port: 80, tls: true}",
            "app.yaml:7",
            "gateways[0].tls: unknown key 'tls' (known: name, fqdn",
        ),
        (
            "{fqdn: 'not a domain', machine: web, port: 80}",
            "app.yaml:7",
            "gateways[0].fqdn: 'not a domain' is not a domain name",
        ),
        ("{name: a, machine: web, port: 80, node: 0}", "app.yaml:7", "gateways[0].node:"),
    ],
)
def test_a_bad_gateway_is_refused_naming_its_field(gateway: str, where: str, says: str) -> None:
    e = refused(gateway)
    assert e.where == where and says in str(e), str(e)


def test_a_name_twice_or_a_clashing_workload_name_is_refused() -> None:
    e = refused("{name: a, machine: web, port: 80}", "{name: a, machine: web, port: 81}")
    assert "gateways[1].name: 'a' is published twice" in str(e) and e.where == "app.yaml:8"
    clash = APP.replace("name: web", "name: gw_a").replace("hello\n", "hello\n", 1)
    with pytest.raises(ManifestError, match=r"gateways\[0\].name: its workload name 'gw_a'"):
        parse_manifest(clash + "  - {name: a, machine: gw_a, port: 80}\n", "app.yaml")


def test_the_nodes_that_serve_gateways_are_preferred() -> None:
    up = [node(1), node(2, GATEWAY), node(3, IPV4_ONLY)]
    assert [
        n.id
        for n in gateways.prefer_gateway_nodes(manifest("{name: a, machine: web, port: 80}"), up)
    ] == [2]
    named = manifest("{name: a, machine: web, port: 80, node: 3}")
    assert [n.id for n in gateways.prefer_gateway_nodes(named, up)] == [3]
    plain = parse_manifest(APP.removesuffix("gateways:\n"), "app.yaml")
    assert gateways.prefer_gateway_nodes(plain, up) == up
    # None serves gateways: any node (check_nodes then says why it cannot serve one).
    assert (
        gateways.prefer_gateway_nodes(manifest("{name: a, machine: web, port: 80}"), up[:1])
        == up[:1]
    )


def test_a_gateway_needs_its_machines_node_to_serve_it() -> None:
    m = manifest("{name: a, machine: web, port: 80}")
    gateways.check_nodes(m, {"web": node(2, GATEWAY)})
    for config, why in ((None, "has no public IPv4 and domain"), (IPV4_ONLY, "has no domain")):
        with pytest.raises(ManifestError, match=why) as e:
            gateways.check_nodes(m, {"web": node(1, config)})
        assert e.value.where == "app.yaml:7" and "gateways[0]: node 1" in str(e.value)
    # An fqdn proxy needs only the IPv4.
    gateways.check_nodes(
        manifest("{fqdn: a.example, machine: web, port: 80}"), {"web": node(3, IPV4_ONLY)}
    )
    # Another node than the machine's: the network would need its mesh there.
    other = manifest("{name: a, machine: web, port: 80, node: 3}")
    with pytest.raises(ManifestError, match=r"gateways\[0\].node: machine 'web' runs on node 2"):
        gateways.check_nodes(other, {"web": node(2, GATEWAY)})


def test_the_gateway_workloads_point_at_the_machine_over_its_network() -> None:
    m = manifest(
        "{name: hello, machine: web, port: 8080}",
        "{fqdn: tls.example.com, machine: web, port: 8443, tls_passthrough: true}",
    )
    dep = building.build_deployment(7, m, {"web": "http://hub.example/flists/7/web.fl"})
    gateways.add_gateways(dep, m)
    raw = {w["name"]: w for w in dep.to_dict()["workloads"]}
    assert raw["gw_hello"]["type"] == "gateway-name-proxy"
    assert raw["gw_hello"]["data"] == {
        "name": "hello",
        "tls_passthrough": False,
        "backends": ["http://10.20.1.2:8080"],
        "network": "hellonet",
    }
    tls = raw["gw_tls_example_com"]
    assert tls["type"] == "gateway-fqdn-proxy"
    assert (
        tls["data"]["backends"] == ["10.20.1.2:8443"] and tls["data"]["fqdn"] == "tls.example.com"
    )
