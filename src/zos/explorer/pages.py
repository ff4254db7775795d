"""The explorer's pages, rendered on the server.

Each page is a frame (header, the parts that do not refresh such as the search form) and
a live region, `<div id="live">`, which the page's script fetches again, alone, when the
server says the grid changed. Without JavaScript every page is complete as it is served.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from zos.client import DeploymentInfo
from zos.client.placement import size
from zos.explorer import charts
from zos.explorer.history import History
from zos.explorer.markup import Markup, duration, esc, join, link, table, tag, url, when
from zos.explorer.query import SORTS, Found, NodeQuery, search
from zos.explorer.snapshot import Snapshot
from zos.registry import Capacity, Farm, Node


@dataclass(frozen=True)
class View:
    """What every page is rendered from."""

    snapshot: Snapshot
    history: History
    version: int
    every: float
    error: str = ""

    @property
    def now(self) -> float:
        return time.time()


NAV = [("/", "Overview"), ("/nodes", "Nodes"), ("/farms", "Farms"), ("/mine", "My deployments")]


def page(
    view: View,
    title: str,
    live: Markup,
    *,
    path: str,
    before: Markup | None = None,
    refresh: str = "update",
) -> Markup:
    nav = join(
        link(href, text, aria_current="page" if href == path else None) for href, text in NAV
    )
    banner = tag("p", view.error, class_="banner", role="alert") if view.error else ""
    taken = view.snapshot.taken_at
    footer = join(
        [
            "Read-only: nothing here can change the grid. ",
            f"From the registry's signed answers, read every {view.every:g} s; last at ",
            when(taken),
            ".",
        ]
    )
    body = join(
        [
            tag(
                "header",
                join(
                    [
                        link("/", "zos explorer", class_="brand"),
                        tag("nav", nav),
                        tag("span", "static", id="conn", class_="conn", title="live updates"),
                    ]
                ),
            ),
            tag(
                "main",
                join(
                    [
                        banner,
                        tag("h1", title),
                        before or "",
                        tag(
                            "div",
                            live,
                            id="live",
                            data_version=view.version,
                            data_refresh=refresh,
                            aria_live="polite",
                        ),
                    ]
                ),
            ),
            tag("footer", footer),
        ]
    )
    head = join(
        [
            Markup('<meta charset="utf-8">'),
            Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            tag("title", f"{title} · zos explorer"),
            Markup('<link rel="icon" href="data:,">'),
            Markup('<link rel="stylesheet" href="/static/explorer.css">'),
            Markup('<script src="/static/explorer.js" defer></script>'),
        ]
    )
    return Markup(f'<!doctype html>\n<html lang="en"><head>{head}</head><body>{body}</body></html>')


def status_badge(status: str) -> Markup:
    return tag("span", status, class_=f"status {status}", data_status=status)


def _stat(key: str, label: str, value: object, detail: object = "") -> Markup:
    return tag(
        "div",
        join([tag("dt", label), tag("dd", value, id=f"stat-{key}"), tag("small", detail)]),
        class_="stat",
    )


# -- overview ------------------------------------------------------------------------


def overview(view: View) -> Markup:
    t = view.snapshot.totals()
    stats = join(
        [
            _stat("farms", "Farms", t.farms),
            _stat("nodes", "Nodes", t.nodes),
            _stat("up", "Up", t.up),
            _stat("down", "Down", t.down),
            _stat("cores", "Cores", t.capacity.cru, f"{t.free_up.cru} free on nodes up"),
            _stat("memory", "Memory", size(t.capacity.mru), f"{size(t.free_up.mru)} free"),
            _stat("ssd", "SSD", size(t.capacity.sru), f"{size(t.free_up.sru)} free"),
            _stat("hdd", "HDD", size(t.capacity.hru), f"{size(t.free_up.hru)} free"),
            _stat(
                "public-ips",
                "Public IPs",
                t.public_ips_reserved,
                f"reserved by contracts; {t.public_ipv4_nodes} nodes with a public IPv4",
            ),
            _stat("gateways", "Gateway nodes", t.gateway_nodes, "nodes with a domain"),
            _stat(
                "contracts",
                "Contracts",
                t.node_contracts,
                f"node contracts active; {t.name_contracts} name contracts; "
                f"{t.contracts_ever} ever",
            ),
        ]
    )
    history = view.history
    charts_html = join(
        [
            tag("h2", "Nodes up over the last hour"),
            tag(
                "p",
                "Sampled by this explorer at each read of the registry, which keeps only "
                "each node's last heartbeat.",
                class_="note",
            ),
            charts.up_chart(list(history.samples), view.now, history.window, view.every),
            tag("h2", "Capacity used per node"),
            charts.capacity_chart(list(view.snapshot.nodes.values())),
        ]
    )
    return join([tag("dl", stats, class_="stats"), charts_html])


# -- nodes ---------------------------------------------------------------------------


def _farm_link(snap: Snapshot, farm_id: int) -> Markup:
    farm = snap.farms.get(farm_id)
    return link(f"/farms/{farm_id}", farm.name if farm else f"farm {farm_id}")


def _amount(free: int, total: int) -> Markup:
    return tag("span", f"{size(free)} / {size(total)}", class_="amount")


def _node_row(snap: Snapshot, n: Node) -> Markup:
    free, cap = n.free, n.capacity
    loc = ", ".join(x for x in (n.location.city, n.location.country) if x)
    cells = [
        link(f"/nodes/{n.id}", n.id),
        _farm_link(snap, n.farm_id),
        status_badge(n.status),
        f"{free.cru} / {cap.cru}",
        join([_amount(free.mru, cap.mru), " ", charts.meter(n.used.mru, cap.mru)]),
        join([_amount(free.sru, cap.sru), " ", charts.meter(n.used.sru, cap.sru)]),
        n.public_config.domain,
        loc,
        when(n.last_heartbeat),
    ]
    return tag(
        "tr",
        join(tag("td", c) for c in cells),
        id=f"node-{n.id}",
        class_=f"node {n.status}",
        data_node=n.id,
        data_status=n.status,
    )


COLUMNS: list[tuple[str, str | None]] = [
    ("Node", "id"),
    ("Farm", "farm"),
    ("Status", "status"),
    ("Cores free", "free_cores"),
    ("Memory free", "free_memory"),
    ("SSD free", "free_disk"),
    ("Domain", None),
    ("Location", "country"),
    ("Last heartbeat", "heartbeat"),
]


def nodes_table(snap: Snapshot, found: Found, query: NodeQuery, path: str = "/nodes") -> Markup:
    heads = []
    for label, key in COLUMNS:
        if key is None or key not in SORTS:
            heads.append(tag("th", label, scope="col"))
            continue
        current = query.sort == key
        order = "desc" if current and query.order == "asc" else "asc"
        arrow = (" ▲" if query.order == "asc" else " ▼") if current else ""
        sort_link = link(url(path, query.params(sort=key, order=order, page=1)), label + arrow)
        aria = ("ascending" if query.order == "asc" else "descending") if current else None
        heads.append(tag("th", sort_link, scope="col", aria_sort=aria))
    rows = join(_node_row(snap, n) for n in found.nodes)
    return tag(
        "table",
        join([tag("thead", tag("tr", join(heads))), tag("tbody", rows)]),
        class_="nodes",
        id="nodes",
    )


def _pager(found: Found, query: NodeQuery, path: str) -> Markup:
    if found.pages <= 1:
        return Markup("")
    current = min(query.page, found.pages)
    parts: list[object] = []
    if current > 1:
        parts += [link(url(path, query.params(page=current - 1)), "« previous", rel="prev"), " "]
    parts.append(f"page {current} of {found.pages}")
    if current < found.pages:
        parts += [" ", link(url(path, query.params(page=current + 1)), "next »", rel="next")]
    return tag("nav", join(parts), class_="pager", aria_label="pages")


def nodes_live(view: View, query: NodeQuery) -> Markup:
    snap = view.snapshot
    found = search(snap, query)
    count = tag(
        "p",
        join(
            [
                tag("strong", found.total, id="match-count"),
                f" of {len(snap.nodes)} nodes match",
            ]
        ),
        class_="count",
    )
    empty = tag("p", "No node matches.", class_="empty") if not found.total else ""
    return join([count, nodes_table(snap, found, query), empty, _pager(found, query, "/nodes")])


def _input(name: str, label: str, value: str, **attrs: object) -> Markup:
    return tag("label", join([label, " ", tag("input", name=name, value=value, **attrs)]))


def _select(name: str, label: str, value: str, options: list[tuple[str, str]]) -> Markup:
    opts = join(tag("option", text, value=v, selected=v == value) for v, text in options)
    return tag("label", join([label, " ", tag("select", opts, name=name)]))


def nodes_form(snap: Snapshot, params: Mapping[str, str]) -> Markup:
    def value(name: str) -> str:
        return params.get(name, "")

    farms = sorted(snap.farms.values(), key=lambda f: f.id)
    if len(farms) <= 200:
        farm = _select(
            "farm", "Farm", value("farm"), [("", "any"), *((str(f.id), f.name) for f in farms)]
        )
    else:
        farm = _input("farm", "Farm id", value("farm"), inputmode="numeric", size=6)
    fields = [
        _input("q", "Search", value("q"), type="search", placeholder="id, farm, city, domain"),
        farm,
        _select("status", "Status", value("status"), [("", "any"), ("up", "up"), ("down", "down")]),
        _input("free_memory", "Free memory ≥", value("free_memory"), placeholder="1G", size=6),
        _input("free_disk", "Free disk ≥", value("free_disk"), placeholder="10G", size=6),
        _input("free_cores", "Free cores ≥", value("free_cores"), inputmode="numeric", size=3),
        _input("domain", "Gateway domain", value("domain"), placeholder="any or part of it"),
    ]
    for keep in ("sort", "order", "per_page"):
        if value(keep):
            fields.append(tag("input", type="hidden", name=keep, value=value(keep)))
    fields.append(tag("button", "Search", type="submit"))
    return tag("form", join(fields), method="get", action="/nodes", class_="filters", id="filters")


# -- one node ------------------------------------------------------------------------


def _capacity_rows(cap: Capacity, used: Capacity) -> list[list[object]]:
    free = cap.minus(used)
    rows: list[list[object]] = []
    for label, key, fmt in (
        ("Cores", "cru", str),
        ("Memory", "mru", size),
        ("SSD", "sru", size),
        ("HDD", "hru", size),
    ):
        c, u, f = getattr(cap, key), getattr(used, key), getattr(free, key)
        rows.append([label, fmt(c), fmt(u), fmt(f), charts.meter(u, c, 160)])
    return rows


def node_live(view: View, node: Node) -> Markup:
    snap, now = view.snapshot, view.now
    since = view.history.up_since(node.id)
    if since is None:
        uptime: object = "down" if node.status == "down" else ""
    else:
        uptime = ("at least " if since.at_least else "") + duration(now - since.since)
    pub, loc = node.public_config, node.location
    facts = [
        ("Status", status_badge(node.status)),
        ("Farm", _farm_link(snap, node.farm_id)),
        ("Twin", node.twin_id),
        ("Registered", when(node.created)),
        ("Last heartbeat", when(node.last_heartbeat)),
        ("Up for", tag("span", uptime, id="uptime")),
        ("Active contracts", snap.contracts_per_node.get(node.id, 0)),
    ]
    public = [
        ("IPv4", pub.ipv4 or "none"),
        ("IPv4 gateway", pub.gw4 or "none"),
        ("IPv6", pub.ipv6 or "none"),
        ("IPv6 gateway", pub.gw6 or "none"),
        ("Gateway domain", pub.domain or "none"),
    ]
    where = [
        ("Country", loc.country or "unknown"),
        ("City", loc.city or "unknown"),
        (
            "Coordinates",
            f"{loc.latitude}, {loc.longitude}" if loc.latitude is not None else "unknown",
        ),
    ]

    def facts_list(items: list[tuple[str, object]], id_: str) -> Markup:
        return tag("dl", join(join([tag("dt", k), tag("dd", v)]) for k, v in items), id=id_)

    return join(
        [
            tag("section", facts_list(facts, "node-facts"), class_=f"node-card {node.status}"),
            tag("h2", "Capacity"),
            table(
                ["", "Total", "Used", "Free", "Share used"],
                _capacity_rows(node.capacity, node.used),
                id="capacity",
            ),
            tag("h2", "Status over the last hour"),
            charts.timeline_chart(view.history.timeline(node.id, now), now, view.history.window),
            tag("h2", "Public config"),
            facts_list(public, "public-config"),
            tag("h2", "Location"),
            facts_list(where, "location"),
        ]
    )


# -- farms ---------------------------------------------------------------------------


def _farm_row(snap: Snapshot, farm: Farm) -> list[object]:
    nodes = snap.farm_nodes(farm.id)
    up = sum(1 for n in nodes if n.status == "up")
    cap = Capacity(
        cru=sum(n.capacity.cru for n in nodes),
        mru=sum(n.capacity.mru for n in nodes),
        sru=sum(n.capacity.sru for n in nodes),
    )
    return [
        link(f"/farms/{farm.id}", farm.id),
        link(f"/farms/{farm.id}", farm.name),
        farm.owner_twin,
        f"{up} up of {len(nodes)}",
        cap.cru,
        size(cap.mru),
        size(cap.sru),
    ]


def farms_live(view: View) -> Markup:
    snap = view.snapshot
    farms = sorted(snap.farms.values(), key=lambda f: f.id)
    return table(
        ["Farm", "Name", "Owner twin", "Nodes", "Cores", "Memory", "SSD"],
        (_farm_row(snap, f) for f in farms),
        id="farms",
    )


def farm_live(view: View, farm: Farm, query: NodeQuery) -> Markup:
    snap = view.snapshot
    found = search(snap, query)
    facts = tag(
        "dl",
        join(
            [
                join([tag("dt", "Name"), tag("dd", farm.name)]),
                join([tag("dt", "Owner twin"), tag("dd", farm.owner_twin)]),
                join([tag("dt", "Created"), tag("dd", when(farm.created))]),
                join([tag("dt", "Nodes"), tag("dd", found.total)]),
            ]
        ),
        id="farm-facts",
    )
    more = (
        tag("p", link(url("/nodes", {"farm": farm.id}), f"all {found.total} nodes of this farm"))
        if found.pages > 1
        else ""
    )
    path = f"/farms/{farm.id}"
    return join([facts, tag("h2", "Nodes"), nodes_table(snap, found, query, path), more])


# -- a twin's own deployments --------------------------------------------------------


def mine_elsewhere() -> Markup:
    return join(
        [
            tag(
                "p",
                "This explorer is shared: it holds no one's key, so it cannot read your "
                "deployments (nodes answer only their owner's signed requests).",
            ),
            tag("p", "To see yours, run the explorer on your own machine with your key:"),
            tag("pre", "zos explorer serve --mine"),
            tag(
                "p",
                "It listens on this machine's loopback only, and prints an address to open. "
                "Your key never leaves your machine, and the pages only read.",
            ),
        ]
    )


def _state(state: str) -> Markup:
    return tag("span", state, class_=f"state {state}", data_state=state)


def _deployment(d: DeploymentInfo) -> Markup:
    def logs_link(machine: str) -> Markup:
        return link(url("/mine/logs", {"deployment": d.name, "machine": machine}), "logs")

    parts = [
        tag(
            "h2",
            join([d.name, " ", _state(d.state)]),
        ),
        tag(
            "p",
            join(
                [
                    "on ",
                    link(f"/nodes/{d.node_id}", f"node {d.node_id}"),
                    f", contract {d.contract_id}",
                ]
            ),
        ),
    ]
    if d.message:
        parts.append(tag("p", d.message, class_="message"))
    if d.workloads:
        parts.append(
            table(
                ["Workload", "Type", "State", "Message"],
                ([w.name, w.type, _state(w.state), w.message] for w in d.workloads),
                class_="workloads",
            )
        )
    if d.machines:
        parts.append(
            table(
                ["Machine", "Address", "Network", "Reachable at", "Output"],
                (
                    [
                        m.name,
                        tag("code", m.ip),
                        m.network,
                        join(join([link(u, u), " "]) for u in m.urls),
                        logs_link(m.name),
                    ]
                    for m in d.machines
                ),
                class_="machines",
            )
        )
    if d.gateways:
        parts.append(
            table(
                ["Gateway", "URL", "Backends", "State"],
                (
                    [
                        g.name,
                        link(g.url, g.url) if g.url else "not built yet",
                        ", ".join(g.backends),
                        _state(g.state),
                    ]
                    for g in d.gateways
                ),
                class_="gateways",
            )
        )
    return tag("section", join(parts), class_="deployment", id=f"deployment-{d.contract_id}")


def mine_live(twin_id: int, deployments: list[DeploymentInfo]) -> Markup:
    intro = tag(
        "p",
        f"Twin {twin_id}: read from your nodes with your key, which stays in this process.",
        class_="note",
    )
    if not deployments:
        return join([intro, tag("p", "No deployments (zos deploy -f app.yaml makes one).")])
    return join([intro, join(_deployment(d) for d in deployments)])


def logs_live(deployment: str, machine: str, text: str) -> Markup:
    back = tag("p", link("/mine", "« my deployments"))
    body = tag("pre", text or "(no output yet)", class_="logs", id="logs")
    return join([back, tag("p", f"{deployment}/{machine}", class_="note"), body])


def message(text: str) -> Markup:
    return tag("p", esc(text), class_="message")
