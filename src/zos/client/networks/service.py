"""A twin's networks on the grid: plan, deploy or update each node's `network` workload,
write laptops' files, admit and drop teammates' keys.

Written against `NetworkNodes`, the little it needs from the grid (the nodes'
`zos.network.*` commands and the network workload of each node), so that the SDK plugs
it in once the nodes serve those commands. Every change is planned first (bad input
changes nothing), then sent node by node: one node that fails or is down is reported and
does not stop the others (the next run, read back from what the nodes hold, finishes it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from zos.client.networks import wgkeys
from zos.client.networks.endpoints import PublicTest, endpoint_host, is_public
from zos.client.networks.errors import NetworkPlanError
from zos.client.networks.model import AccessRequest, NetworkPlan, NetworkRequest, NodeInfo
from zos.client.networks.planner import plan_network
from zos.client.networks.stored import plan_from_workloads
from zos.client.networks.wgquick import wg_quick
from zos.gridtypes.workload import Workload
from zos.identity import Identity

if TYPE_CHECKING:
    from zos.client.networks.model import NodeNetwork, Randomness

DEFAULT_ACCESS = "laptop"  # the owner's own access, when no name is given


class NetworkNodes(Protocol):
    """What the service needs from the grid, for the owner's twin."""

    async def list_wg_ports(self, node_id: int) -> Sequence[int]:
        """`zos.network.list_wg_ports`: the listen ports taken on the node."""
        ...

    async def public_config(self, node_id: int) -> Mapping[str, Any] | None:
        """`zos.network.public_config_get`; None when the node answers that it has none."""
        ...

    async def interfaces(self, node_id: int) -> Mapping[str, Sequence[str]]:
        """`zos.network.interfaces`: {"zos": [ips], "ygg": [ips]}."""
        ...

    async def list_private_ips(self, node_id: int, network: str) -> Sequence[str]:
        """`zos.network.list_private_ips {network_name}`: the machines' addresses there."""
        ...

    async def handshakes(self, node_id: int, network: str) -> Mapping[str, int] | None:
        """Per peer public key, the unix time of its latest handshake with the node's
        interface (0: never); None when the node does not say."""
        ...

    async def networks(self) -> Mapping[str, Mapping[int, Workload]]:
        """The owner's `network` workloads: network name → node id → workload."""
        ...

    async def deploy(self, node_id: int, workload: Workload) -> None:
        """Create the network's workload on the node (version 0)."""
        ...

    async def update(self, node_id: int, workload: Workload) -> None:
        """Replace the network's workload on the node (its version + 1)."""
        ...

    async def remove(self, node_id: int, network: str) -> None:
        """Remove the network's workload from the node."""
        ...


Action = Literal["create", "update", "remove"]


@dataclass(frozen=True)
class NodeResult:
    node_id: int
    action: Action
    error: str = ""  # "" when the node took it

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Applied:
    """A plan and what each node it changed answered."""

    plan: NetworkPlan
    results: tuple[NodeResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


@dataclass(frozen=True)
class PeerView:
    subnet: str
    public_key: str
    endpoint: str  # "" when the peer dials this node
    what: str  # "node N", "access NAME", or "?" for a key the plan does not know
    handshake_age: float | None  # seconds since its latest handshake; None: never or unknown


@dataclass(frozen=True)
class NodeView:
    node_id: int
    subnet: str
    endpoint: str  # "" hidden
    access_node: bool
    version: int
    private_ips: tuple[str, ...]
    peers: tuple[PeerView, ...]
    error: str = ""  # what the node answered instead of its status, if it failed


@dataclass
class NetworkService:
    """The networks of `owner` on the grid `nodes` reaches.

    `public`: which addresses count as public endpoints (a local grid counts its bridge);
    `rng`: where keys and ports come from (the system's by default); `clock`: unix time.
    """

    nodes: NetworkNodes
    owner: Identity
    public: PublicTest = field(default=is_public, kw_only=True)
    rng: Randomness | None = field(default=None, kw_only=True)
    clock: Callable[[], float] = field(default=time.time, kw_only=True)

    # ---- reading -----------------------------------------------------------------------

    async def names(self) -> list[str]:
        return sorted(await self.nodes.networks())

    async def current(self, name: str) -> NetworkPlan | None:
        """The plan of network `name` as its workloads on the nodes hold it; None if none."""
        workloads = (await self.nodes.networks()).get(name)
        return plan_from_workloads(name, workloads) if workloads else None

    async def readable(self) -> tuple[list[NetworkPlan], dict[str, str]]:
        """Every network of the owner as its workloads hold it, and, by name, why the
        ones that cannot be read as a plan cannot (one bad network hides no other)."""
        plans, bad = [], {}
        for name, workloads in sorted((await self.nodes.networks()).items()):
            try:
                plans.append(plan_from_workloads(name, workloads))
            except NetworkPlanError as e:
                bad[name] = str(e)
        return plans, bad

    async def _existing(self, name: str) -> NetworkPlan:
        plan = await self.current(name)
        if plan is None:
            raise NetworkPlanError("name", f"you have no network '{name}' (`zos network ls`)")
        return plan

    async def node_info(self, node_id: int) -> NodeInfo:
        """A node as it describes itself, asked all at once."""
        ports, config, ifaces = await asyncio.gather(
            self.nodes.list_wg_ports(node_id),
            self.nodes.public_config(node_id),
            self.nodes.interfaces(node_id),
        )
        return NodeInfo(node_id, config, ifaces, list(ports))

    # ---- planning and applying ---------------------------------------------------------

    async def _infos(self, node_ids: Sequence[int], current: NetworkPlan | None) -> list[NodeInfo]:
        """Every node's NodeInfo, asked at once. A node of the network that does not
        answer is taken as last seen (its update will fail and be reported, the others
        go on); a new one that does not answer cannot be planned."""
        answers = await asyncio.gather(
            *(self.node_info(n) for n in node_ids), return_exceptions=True
        )
        known = {n.node_id: n for n in current.nodes} if current else {}
        infos = []
        for nid, answer in zip(node_ids, answers, strict=True):
            if isinstance(answer, NodeInfo):
                infos.append(answer)
            elif not isinstance(answer, Exception):
                raise answer  # cancelled, interrupted: not a node's failure
            elif nid in known:
                infos.append(_last_seen(known[nid]))
            else:
                raise NetworkPlanError("nodes", f"node {nid} does not answer: {answer}")
        return infos

    async def _replan(self, want: NetworkRequest, current: NetworkPlan | None) -> NetworkPlan:
        """`want` (its nodes by id) planned over `current`, each node as it describes
        itself now."""
        spanned = list(dict.fromkeys(n.node_id for n in want.nodes))
        # the current access node stays while it can (laptops keep their file): ask it too
        extra = [n for n in (want.access_node, current.access_node if current else 0) if n]
        extra = [n for n in dict.fromkeys(extra) if n not in spanned]
        infos = await self._infos([*spanned, *extra], current)
        request = replace(
            want, nodes=infos[: len(spanned)], access_candidates=infos[len(spanned) :]
        )
        return plan_network(
            request, current, owner_public_key=self.owner.public_key, rng=self.rng,
            public=self.public,
        )  # fmt: skip

    async def apply(self, plan: NetworkPlan) -> Applied:
        """Send every changed node its workload and remove it where it is to go, all at
        once; each node's answer is reported, a failure stops no other node."""

        async def one(node_id: int, action: Action, send: Any) -> NodeResult:
            try:
                await send
            except Exception as e:  # a node down or refusing: reported, the others go on
                return NodeResult(node_id, action, str(e) or type(e).__name__)
            return NodeResult(node_id, action)

        work = []
        for n in plan.changed:
            wl = n.workload(plan.name)
            if n.change == "create":
                work.append(one(n.node_id, "create", self.nodes.deploy(n.node_id, wl)))
            else:
                work.append(one(n.node_id, "update", self.nodes.update(n.node_id, wl)))
        for node_id in plan.removed:
            work.append(one(node_id, "remove", self.nodes.remove(node_id, plan.name)))
        return Applied(plan, tuple(await asyncio.gather(*work)))

    async def ensure(self, name: str, ip_range: str, node_ids: Sequence[int]) -> Applied:
        """Network `name` spanning exactly `node_ids` (where the owner's machines are):
        created, or updated keeping every existing node's subnet, key and port and every
        user access. What a multi-node manifest deploys before its machines."""
        current = await self.current(name)
        accesses = current.access_requests() if current else []
        plan = await self._replan(
            NetworkRequest(name, ip_range, _by_id(node_ids), accesses), current
        )
        return await self.apply(plan)

    async def _change_accesses(
        self,
        current: NetworkPlan,
        accesses: list[AccessRequest],
        access_node: int = 0,
    ) -> NetworkPlan:
        """The same nodes (all kept: a workload read back does not say which nodes have
        the owner's machines and which only serve as access node), other accesses."""
        nodes = _by_id(n.node_id for n in current.nodes)
        want = NetworkRequest(
            current.name, current.ip_range, nodes, accesses, access_node=access_node
        )
        return await self._replan(want, current)

    # ---- user accesses -----------------------------------------------------------------

    async def access(
        self, name: str, node_id: int = 0, access_name: str = DEFAULT_ACCESS
    ) -> tuple[str, Applied]:
        """The owner's wg-quick file for network `name` (made on first use, the same
        after), through `node_id` if given (a node not in the network joins it as its
        access node), and what the nodes answered when that needed a change."""
        current = await self._existing(name)
        accesses = current.access_requests()
        known = {a.name: a for a in current.accesses}
        if access_name in known and known[access_name].granted:
            raise NetworkPlanError(
                "access_name", f"'{access_name}' is a teammate's access (granted by key)"
            )
        in_network = {n.node_id for n in current.nodes}
        mine = AccessRequest(access_name, node_id=node_id if node_id in in_network else 0)
        accesses = [r for r in accesses if r.name != access_name] + [mine]
        forced = node_id if node_id and node_id not in in_network else 0
        plan = await self._change_accesses(current, accesses, forced)
        applied = await self.apply(plan)
        _refuse_if_failed(applied, plan.access(access_name).node_id, "access")
        return wg_quick(plan, access_name, owner=self.owner), applied

    async def teammate_file(self, name: str, access_name: str, key_file: str) -> str:
        """The wg-quick file for a teammate's access, to hand them: it names `key_file`,
        where their private key is on their laptop (the key never passes here)."""
        current = await self._existing(name)
        # planned again, changing nothing: the access node's endpoint comes from the node
        plan = await self._change_accesses(current, current.access_requests())
        return wg_quick(plan, access_name, key_file=key_file)

    async def grant(self, name: str, wg_key: str, access_name: str = "") -> Applied:
        """Admit a teammate's laptop by its WireGuard public key; nobody else's access
        changes. The same name again with another key replaces that teammate's key."""
        key = wgkeys.check_key(wg_key, "wg_key")
        access_name = access_name or f"wg-{''.join(c for c in key if c.isalnum())[:8]}"
        current = await self._existing(name)
        for a in current.accesses:
            if a.name == access_name and not a.granted:
                raise NetworkPlanError(
                    "access_name", f"'{access_name}' is your own access, not a teammate's"
                )
            if a.public_key == key and a.name != access_name:
                raise NetworkPlanError("wg_key", f"is already granted as '{a.name}'")
        accesses = [r for r in current.access_requests() if r.name != access_name]
        accesses.append(AccessRequest(access_name, public_key=key))
        return await self.apply(await self._change_accesses(current, accesses))

    async def revoke(self, name: str, access_name: str = "", wg_key: str = "") -> Applied:
        """Drop one access (by name or by key) from every node; nobody else's changes."""
        if bool(access_name) == bool(wg_key):
            raise NetworkPlanError("access_name", "name the access, or give its wg_key (one)")
        key = wgkeys.check_key(wg_key, "wg_key") if wg_key else ""
        current = await self._existing(name)
        gone = [a for a in current.accesses if a.name == access_name or a.public_key == key]
        if not gone:
            what = f"access '{access_name}'" if access_name else f"key {key}"
            raise NetworkPlanError(
                "access_name" if access_name else "wg_key", f"network '{name}' has no {what}"
            )
        accesses = [r for r in current.access_requests() if r.name != gone[0].name]
        return await self.apply(await self._change_accesses(current, accesses))

    # ---- views -------------------------------------------------------------------------

    async def show(self, name: str) -> tuple[NetworkPlan, list[NodeView]]:
        """Network `name` node by node: subnet, endpoint, the machines' addresses, and
        every peer with the age of its latest handshake as the node reports it."""
        plan = await self._existing(name)
        what = {n.public_key: f"node {n.node_id}" for n in plan.nodes}
        what |= {a.public_key: f"access {a.name}" for a in plan.accesses}
        now = self.clock()

        async def view(node_id: int) -> NodeView:
            n = plan.node(node_id)
            error = ""
            try:
                ips, seen = await asyncio.gather(
                    self.nodes.list_private_ips(node_id, name),
                    self.nodes.handshakes(node_id, name),
                )
            except Exception as e:  # a node down: its part of the plan, without status
                ips, seen, error = (), None, str(e) or type(e).__name__
            peers = tuple(
                PeerView(
                    subnet=p.subnet,
                    public_key=p.wireguard_public_key,
                    endpoint=p.endpoint,
                    what=what.get(p.wireguard_public_key, "?"),
                    handshake_age=_age(now, (seen or {}).get(p.wireguard_public_key, 0)),
                )
                for p in n.data.peers
            )
            endpoint = n.endpoint
            if not endpoint and not n.hidden and not error:
                # a lone node: no peer says where it is; it does
                info = await self.node_info(node_id)
                host = endpoint_host(info.public_config, info.interfaces, public=self.public)
                endpoint = f"{host}:{n.listen_port}" if host else ""
            return NodeView(
                node_id, n.subnet, endpoint, n.is_access_node, n.version, tuple(ips), peers, error
            )

        views = await asyncio.gather(*(view(n.node_id) for n in plan.nodes))
        return plan, list(views)


def _by_id(node_ids: Iterable[int]) -> list[NodeInfo]:
    """Nodes named by id only, for `_replan` to ask."""
    return [NodeInfo(n) for n in node_ids]


def _age(now: float, handshake: int) -> float | None:
    return max(0.0, now - handshake) if handshake else None


def _last_seen(node: NodeNetwork) -> NodeInfo:
    """A node that does not answer, as the plan last saw it: its endpoint's address as
    its one public address (none: hidden); the port it has is kept anyway."""
    host = node.endpoint_host.strip("[]")
    return NodeInfo(node.node_id, None, {"zos": [host] if host else []})


def _refuse_if_failed(applied: Applied, node_id: int, what: str) -> None:
    for r in applied.results:
        if r.node_id == node_id and not r.ok:
            raise NetworkPlanError(what, f"node {node_id} did not take the change: {r.error}")


__all__ = [
    "Applied",
    "NetworkNodes",
    "NetworkService",
    "NodeResult",
    "NodeView",
    "PeerView",
]
