"""The explorer's parts without a server: the node search (the filters of `zos nodes`),
the history it samples, the pages' escaping of hostile registry values, the charts, the
gateways of a deployment, the read-only bus of `--mine`, and a poll whose answer is
refused as not signed by the registry (the last snapshot stays, the page says why)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from explorer_helpers import GiB, farm, node

from zos.bus import BusError
from zos.client.views import read_deployment
from zos.explorer import charts, pages
from zos.explorer.history import History
from zos.explorer.live import Live
from zos.explorer.mine import ReadOnlyBus
from zos.explorer.query import NodeQuery, QueryError, matches, parse_query, search
from zos.explorer.snapshot import Snapshot
from zos.registry import NameContract, NodeContract


def snap(nodes: list, taken_at: float = 2000.0, contracts: list | None = None) -> Snapshot:
    return Snapshot.build(
        [farm(1, "farm-one"), farm(2, "farm-two")], nodes, contracts or [], taken_at
    )


GRID = [
    node(1, 1, mru=8 * GiB, used_mru=1 * GiB, domain="gw.example.org", city="Ghent"),
    node(2, 1, status="down", mru=8 * GiB),
    node(3, 2, mru=2 * GiB, used_mru=2 * GiB, sru=10 * GiB, used_sru=9 * GiB),
    node(4, 2, mru=16 * GiB, cru=32, city="Cairo"),
]


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({}, [1, 2, 3, 4]),
        ({"farm": "2"}, [3, 4]),
        ({"status": "up"}, [1, 3, 4]),
        ({"status": "down"}, [2]),
        ({"free_memory": "7G"}, [1, 2, 4]),  # node 1: 7 GiB free exactly
        ({"free_memory": "7.5G", "status": "up"}, [4]),
        ({"free_disk": "2G"}, [1, 2, 4]),
        ({"free_cores": "5"}, [4]),
        ({"domain": "any"}, [1]),
        ({"domain": "example"}, [1]),
        ({"domain": "nowhere"}, []),
        ({"q": "cairo"}, [4]),
        ({"q": "farm-two"}, [3, 4]),
        ({"q": "3"}, [3]),
        ({"sort": "free_memory", "order": "desc"}, [4, 2, 1, 3]),
        ({"sort": "status"}, [2, 1, 3, 4]),
    ],
)
def test_search_filters_and_sorts(params: dict[str, str], ids: list[int]) -> None:
    found = search(snap(GRID), parse_query(params))
    assert [n.id for n in found.nodes] == ids
    assert found.total == len(ids)


def test_filters_count_free_capacity_as_the_registry_does() -> None:
    # list_nodes: capacity - used >= asked, per resource (the service's own arithmetic).
    s = snap(GRID)
    for want in (0, 1 * GiB, 6 * GiB, 7 * GiB, 8 * GiB, 9 * GiB):
        expected = [
            n.id
            for n in GRID
            if n.capacity.mru - n.used.mru >= want and n.capacity.sru - n.used.sru >= want
        ]
        q = NodeQuery(free_memory=want, free_disk=want)
        assert [n.id for n in GRID if matches(s, n, q)] == expected


def test_pages_of_results() -> None:
    many = [node(i) for i in range(1, 251)]
    q = parse_query({"per_page": "100", "page": "3"})
    found = search(snap(many), q)
    assert (found.total, found.pages, [n.id for n in found.nodes][:2]) == (250, 3, [201, 202])
    past = search(snap(many), parse_query({"page": "99"}))  # past the end: the last page
    assert past.nodes[0].id == 201


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"free_memory": "1X"}, "free_memory"),
        ({"free_disk": "-1"}, "free_disk"),
        ({"status": "sideways"}, "status"),
        ({"sort": "__class__"}, "sort"),
        ({"order": "up"}, "order"),
        ({"farm": "one"}, "farm"),
        ({"page": "0"}, "page"),
        ({"per_page": "100000"}, "per_page"),
        ({"free_cores": "1e9"}, "free_cores"),
        ({"q": "x" * 101}, "q"),
    ],
)
def test_bad_search_names_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_query(params)
    assert e.value.field == field and str(e.value).startswith(f"{field}: ")


def test_history_samples_and_uptime() -> None:
    h = History(window=100.0)
    h.record(snap([node(1), node(2, status="down")], taken_at=1000.0))
    h.record(snap([node(1), node(2)], taken_at=1010.0))
    h.record(snap([node(1, status="down"), node(2)], taken_at=1020.0))
    h.record(snap([node(1), node(2)], taken_at=1030.0))
    assert [(s.up, s.total) for s in h.samples] == [(1, 2), (2, 2), (1, 2), (2, 2)]
    one, two = h.up_since(1), h.up_since(2)
    assert one is not None and (one.since, one.at_least) == (1030.0, False)
    assert two is not None and (two.since, two.at_least) == (1010.0, False)
    first = History()
    first.record(snap([node(1)], taken_at=5.0))
    assert first.up_since(1).at_least  # type: ignore[union-attr]
    segments = h.timeline(1, 1040.0)
    assert [(s.start, s.end, s.status) for s in segments] == [
        (1000.0, 1020.0, "up"),
        (1020.0, 1030.0, "down"),
        (1030.0, 1040.0, "up"),
    ]
    h.record(snap([node(2)], taken_at=1200.0))  # node 1 removed, samples past the hour gone
    assert [s.at for s in h.samples] == [1200.0]
    assert h.up_since(1) is None and h.timeline(1, 1200.0) == []
    assert [(s.start, s.status) for s in h.timeline(2, 1200.0)] == [(1100.0, "up")]


def view_of(s: Snapshot, error: str = "") -> pages.View:
    h = History()
    h.record(s)
    return pages.View(snapshot=s, history=h, version=3, every=5.0, error=error)


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_hostile_registry_values_are_shown_as_text() -> None:
    s = snap([node(1, city=HOSTILE, domain="a.b")])
    view = view_of(s)
    rendered = [
        pages.page(view, "t", pages.nodes_live(view, NodeQuery()), path="/nodes"),
        pages.page(view, "t", pages.node_live(view, s.nodes[1]), path="/nodes/1"),
        pages.nodes_form(s, {"q": HOSTILE, "free_memory": '"><script>'}),
        pages.logs_live("app", "web", HOSTILE),
    ]
    for html in rendered:
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html
    assert html.count("<script") == 0


def test_pages_carry_the_registry_numbers() -> None:
    contracts: list[Any] = [
        NodeContract(
            id=1,
            node_id=1,
            owner_twin=9,
            deployment_hash="ab" * 16,
            public_ips=2,
            created=1.0,
            updated=1.0,
        ),
        NodeContract(
            id=2,
            node_id=1,
            owner_twin=9,
            deployment_hash="ab" * 16,
            state="deleted",
            created=1.0,
            updated=1.0,
        ),
        NameContract(id=3, name="web", owner_twin=9, created=1.0, updated=1.0),
    ]
    s = snap(GRID, contracts=contracts)
    t = s.totals()
    assert (t.farms, t.nodes, t.up, t.down) == (2, 4, 3, 1)
    assert t.capacity.mru == 34 * GiB and t.free_up.mru == (7 + 0 + 16) * GiB
    assert (t.node_contracts, t.name_contracts, t.contracts_ever, t.public_ips_reserved) == (
        1,
        1,
        3,
        2,
    )
    assert s.contracts_per_node == {1: 1}
    html = pages.overview(view_of(s))
    assert '<dd id="stat-nodes">4</dd>' in html and '<dd id="stat-down">1</dd>' in html
    assert '<dd id="stat-contracts">1</dd>' in html and '<dd id="stat-memory">34G</dd>' in html


def test_charts_are_svg() -> None:
    h = History()
    for i in range(5):
        h.record(snap([node(1), node(2, status="up" if i % 2 else "down")], taken_at=1000.0 + i))
    view = view_of(snap(GRID))
    for svg in (
        charts.up_chart(list(h.samples), 1005.0, h.window, 1.0),
        charts.up_chart([], 1005.0, h.window, 1.0),
        charts.capacity_chart(GRID),
        charts.timeline_chart(h.timeline(2, 1005.0), 1005.0, h.window),
        charts.meter(3, 4),
    ):
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "node 3" in charts.capacity_chart(GRID)  # the fullest first
    assert "4 of 4 up" not in pages.overview(view)


def test_gateways_of_a_deployment() -> None:
    raw = {
        "version": 0,
        "twin_id": 7,
        "contract_id": 12,
        "metadata": '{"name": "site"}',
        "workloads": [
            {
                "version": 0,
                "name": "named",
                "type": "gateway-name-proxy",
                "data": {"name": "shop", "backends": ["http://10.20.1.2:8080"]},
                "result": {"state": "ok", "data": {"fqdn": "shop.gw.example.org"}},
            },
            {
                "version": 0,
                "name": "own",
                "type": "gateway-fqdn-proxy",
                "data": {"fqdn": "www.example.com", "backends": ["http://10.20.1.2:80"]},
                "result": {"state": "error", "message": "not supported on this node"},
            },
        ],
    }
    info = read_deployment(raw, 3, [])
    assert [(g.name, g.url, g.state) for g in info.gateways] == [
        ("named", "https://shop.gw.example.org", "ok"),
        ("own", "https://www.example.com", "error"),
    ]
    html = pages.mine_live(7, [info])
    assert 'href="https://shop.gw.example.org"' in html and "not supported" in html


class RecordingBus:
    """The bus client's place in a ReadOnlyBus: records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def request(self, twin_id: int, command: str, payload: Any = None, **kw: Any) -> Any:
        self.sent.append(command)
        return []


async def test_read_only_bus_sends_reads_and_refuses_the_rest() -> None:
    inner = RecordingBus()
    bus = ReadOnlyBus(inner)  # type: ignore[arg-type]
    await bus.request(5, "zos.deployment.list")
    await bus.request(5, "zos.zmachine.logs", {"contract_id": 1, "name": "web"})
    for command in ("zos.deployment.delete", "zos.deployment.deploy", "zos.deployment.update"):
        with pytest.raises(BusError) as e:
            await bus.request(5, command, {"contract_id": 1})
        assert e.value.code == "forbidden" and command in e.value.message
    assert inner.sent == ["zos.deployment.list", "zos.zmachine.logs"]


async def test_an_answer_not_signed_by_the_registry_keeps_the_last_snapshot() -> None:
    first = snap(GRID)
    answers: list[Snapshot | BusError] = [
        first,
        BusError("bad_signature", "registry answer is signed by another key (1f2e...)"),
    ]

    async def read() -> Snapshot:
        answer = answers.pop(0)
        if isinstance(answer, BusError):
            raise answer
        return answer

    live = Live(read, every=60)
    await live.poll()
    await live.poll()
    assert live.snapshot is first and live.version == 1
    assert live.error.startswith("an answer not signed by the registry's key was refused")
    view = view_of(first, error=live.error)
    html = pages.page(view, "The grid", pages.overview(view), path="/")
    assert '<p class="banner" role="alert">an answer not signed by the registry' in html
    assert '<dd id="stat-nodes">4</dd>' in html  # what was read before
