"""The node search: the filters of `zos nodes` (farm, status, free memory, disk and
cores), a gateway domain, free text, sorting and pages — over the explorer's snapshot.

Free capacity is counted as the registry counts it for `zos nodes` (capacity minus what
the node's last heartbeat reported used), so a filter here finds what `list_nodes`
finds. A parameter that is not understood is a `QueryError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from zos.client.manifest import parse_size
from zos.explorer.snapshot import Snapshot
from zos.registry import Node

MAX_PER_PAGE = 500


class QueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _farm_name(snap: Snapshot, node: Node) -> str:
    farm = snap.farms.get(node.farm_id)
    return farm.name if farm else ""


def _used_share(used: int, total: int) -> float:
    return used / total if total else 0.0


SORTS: dict[str, Callable[[Snapshot, Node], Any]] = {
    "id": lambda s, n: n.id,
    "farm": lambda s, n: (n.farm_id, n.id),
    "status": lambda s, n: (n.status, n.id),
    "cores": lambda s, n: (n.capacity.cru, n.id),
    "free_cores": lambda s, n: (n.free.cru, n.id),
    "free_memory": lambda s, n: (n.free.mru, n.id),
    "free_disk": lambda s, n: (n.free.sru, n.id),
    "memory_used": lambda s, n: (_used_share(n.used.mru, n.capacity.mru), n.id),
    "heartbeat": lambda s, n: (n.last_heartbeat, n.id),
    "country": lambda s, n: (n.location.country.lower(), n.id),
}


@dataclass(frozen=True)
class NodeQuery:
    q: str = ""
    farm: int | None = None
    status: str = ""
    free_memory: int = 0
    free_disk: int = 0
    free_cores: int = 0
    domain: str = ""  # "any": nodes with a gateway domain; else a part of the domain
    sort: str = "id"
    order: str = "asc"
    page: int = 1
    per_page: int = 100

    def params(self, **change: Any) -> dict[str, object]:
        """This query as URL parameters (defaults left out), with `change` applied."""
        query, default = replace(self, **change), NodeQuery()
        return {k: v for k, v in vars(query).items() if v != getattr(default, k)}


def _int(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise QueryError(name, f"{text!r} is not a whole number from {low} to {high}")
    return int(text)


def _size(params: Mapping[str, str], name: str) -> int:
    text = params.get(name, "").strip()
    if text in ("", "0"):
        return 0
    try:
        return parse_size(text)
    except ValueError as e:
        raise QueryError(name, str(e)) from None


def parse_query(params: Mapping[str, str]) -> NodeQuery:
    status = params.get("status", "").strip()
    if status not in ("", "up", "down"):
        raise QueryError("status", f"{status!r} is not up or down")
    sort = params.get("sort", "").strip() or "id"
    if sort not in SORTS:
        raise QueryError("sort", f"{sort!r} is not one of {', '.join(SORTS)}")
    order = params.get("order", "").strip() or "asc"
    if order not in ("asc", "desc"):
        raise QueryError("order", f"{order!r} is not asc or desc")
    text = params.get("q", "").strip()
    domain = params.get("domain", "").strip().lower()
    for name, value in (("q", text), ("domain", domain)):
        if len(value) > 100:
            raise QueryError(name, "longer than 100 characters")
    return NodeQuery(
        q=text,
        farm=_int(params, "farm", 1, (1 << 53) - 1),
        status=status,
        free_memory=_size(params, "free_memory"),
        free_disk=_size(params, "free_disk"),
        free_cores=_int(params, "free_cores", 0, 1 << 20) or 0,
        domain=domain,
        sort=sort,
        order=order,
        page=_int(params, "page", 1, 1 << 30) or 1,
        per_page=_int(params, "per_page", 1, MAX_PER_PAGE) or 100,
    )


def _matches_text(snap: Snapshot, node: Node, words: list[str]) -> bool:
    loc, pub = node.location, node.public_config
    hay = " ".join(
        [
            str(node.id),
            f"node{node.id}",
            f"twin{node.twin_id}",
            f"farm{node.farm_id}",
            _farm_name(snap, node),
            loc.country,
            loc.city,
            pub.domain,
            pub.ipv4,
            pub.ipv6,
        ]
    ).lower()
    return all(w in hay for w in words)


def matches(snap: Snapshot, node: Node, query: NodeQuery) -> bool:
    if query.farm is not None and node.farm_id != query.farm:
        return False
    if query.status and node.status != query.status:
        return False
    free = node.free
    if free.mru < query.free_memory or free.sru < query.free_disk or free.cru < query.free_cores:
        return False
    domain = node.public_config.domain.lower()
    if query.domain and not (domain if query.domain == "any" else query.domain in domain):
        return False
    return not query.q or _matches_text(snap, node, query.q.lower().split())


@dataclass(frozen=True)
class Found:
    nodes: list[Node]  # this page
    total: int  # every match
    pages: int


def search(snap: Snapshot, query: NodeQuery) -> Found:
    hits = [n for n in snap.nodes.values() if matches(snap, n, query)]
    key = SORTS[query.sort]
    hits.sort(key=lambda n: key(snap, n), reverse=query.order == "desc")
    pages = max(1, -(-len(hits) // query.per_page))
    start = (min(query.page, pages) - 1) * query.per_page
    return Found(hits[start : start + query.per_page], len(hits), pages)
