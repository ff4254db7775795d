"""A manifest's `gateways:` without a grid: the checks (each error names its field), the
node a gateway needs, and the workload it becomes in the deployment (the grid tests in
tests/grid/test_gateway_grid.py deploy one for real)."""

from __future__ import annotations

import pytest

from zos.client import building, gateways
from zos.client.errors import GridClientError
from zos.client.manifest import Manifest, ManifestError, parse_manifest
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
    # None serves gateways: any node (place_gateways then says why none serves one).
    assert (
        gateways.prefer_gateway_nodes(manifest("{name: a, machine: web, port: 80}"), up[:1])
        == up[:1]
    )


async def place(m: Manifest, machine_node: Node, up: list[Node]) -> list[int]:
    """`place_gateways` over `up` (the nodes the registry knows, all up)."""

    async def by_id(node_id: int) -> Node:
        found = [n for n in up if n.id == node_id]
        if not found:
            raise GridClientError(f"node {node_id} does not exist")
        return found[0]

    async def up_nodes() -> list[Node]:
        return up

    placed = await gateways.place_gateways(m, {"web": machine_node}, by_id, up_nodes)
    return [n.id for n in placed]


async def test_a_gateway_goes_to_its_machines_node_when_that_serves_gateways() -> None:
    up = [node(1), node(2, GATEWAY), node(3, GATEWAY)]
    assert await place(manifest("{name: a, machine: web, port: 80}"), up[2], up) == [3]
    # An fqdn proxy needs only the IPv4.
    fqdn = manifest("{fqdn: a.example, machine: web, port: 80}")
    assert await place(fqdn, node(4, IPV4_ONLY), [*up, node(4, IPV4_ONLY)]) == [4]


async def test_a_machine_on_a_node_without_gateways_gets_one_of_another_node() -> None:
    up = [node(1), node(3, GATEWAY), node(2, GATEWAY)]
    two = manifest("{name: a, machine: web, port: 80}", "{name: b, machine: web, port: 81}")
    assert await place(two, up[0], up) == [2, 2]  # the lowest id, then the one picked
    named = manifest(
        "{name: a, machine: web, port: 80, node: 3}", "{name: b, machine: web, port: 81}"
    )
    assert await place(named, up[0], up) == [3, 3]
    # A name needs a domain: an IPv4 alone is no gateway for it.
    with pytest.raises(ManifestError, match="no up node does") as e:
        await place(
            manifest("{name: a, machine: web, port: 80}"), up[0], [up[0], node(4, IPV4_ONLY)]
        )
    assert e.value.where == "app.yaml:7" and "gateways[0]: node 1, where machine 'web'" in str(
        e.value
    )


async def test_a_named_gateway_node_must_exist_and_serve_gateways() -> None:
    up = [node(1), node(2, GATEWAY), node(3, IPV4_ONLY)]
    for yaml_, why in (
        ("{name: a, machine: web, port: 80, node: 1}", "node 1 has no public IPv4 and domain"),
        ("{name: a, machine: web, port: 80, node: 3}", "node 3 has no domain"),
        ("{name: a, machine: web, port: 80, node: 9}", "node 9 does not exist"),
    ):
        with pytest.raises(ManifestError, match=rf"gateways\[0\].node: {why}") as e:
            await place(manifest(yaml_), up[1], up)
        assert e.value.where == "app.yaml:7" and e.value.field == "gateways[0].node"
    assert await place(manifest("{name: a, machine: web, port: 80, node: 2}"), up[0], up) == [2]


def test_a_gateway_off_its_machines_node_needs_a_network_that_can_span() -> None:
    m = manifest("{name: a, machine: web, port: 80, node: 3}")  # APP fixes network.subnet
    with pytest.raises(ManifestError, match=r"gateways\[0\]: served by node 3, its machine") as e:
        gateways.check_spannable(m, 1, [3])
    assert "network.subnet" in str(e.value) and e.value.where == "app.yaml:7"
    spannable = parse_manifest(
        APP.replace("{name: hellonet, subnet: 10.20.1.0/24}", "{name: hellonet}")
        + "  - {name: a, machine: web, port: 80, node: 3}\n",
        "app.yaml",
    )
    gateways.check_spannable(spannable, 1, [3])


def test_the_gateway_workloads_point_at_the_machine_over_its_network() -> None:
    m = manifest(
        "{name: hello, machine: web, port: 8080}",
        "{fqdn: tls.example.com, machine: web, port: 8443, tls_passthrough: true}",
    )
    dep = building.build_deployment(7, m, {"web": "http://hub.example/flists/7/web.fl"})
    gateways.add_gateways({1: dep}, m, [1, 1])
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
