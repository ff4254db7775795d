"""`gateway-name-proxy` and `gateway-fqdn-proxy`: a workload published to the web.

Both become one route of the node's reverse proxy (`zos.node.gatewayproxy`), named
`<kind>-<workload id>`: HTTPS for a host name, terminated by the proxy with an ACME
certificate, to `http://IP:port` backends; or, with `tls_passthrough`, TLS connections
routed by SNI, unopened, to `IP:port` backends that terminate TLS themselves.

- name proxy: `<name>.<node domain>`, only for the twin owning the active name contract
  of `name` (asked of the registry, signed); its certificate is the domain's wildcard,
  by DNS-01. Result `{"fqdn": ...}`.
- fqdn proxy: the workload's own `fqdn`, never under the node's domain; its certificate
  by HTTP-01. Result `{}`, as zos has it.
Both need the node's public config (set by its farmer, read from the registry).

Backends are IP literals; never loopback, link-local, the node's own addresses (its
public config's too), the grid's control plane, or the node's tenant uplinks. With
`network`, backends are addresses of the owner's private network (its subnet on this
node, or a peer's: another node's, reached over the network's WireGuard tunnel): a
forwarder (`zos.primitives.nsforward`, a process that outlives the agent) listens on
the proxy namespace's loopback and connects from inside the network's namespace; the
route's backends are those loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, ip_interface
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zos.node.networks import Attachment, NetworkInfo, network_lock
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.namewatch import NameWatch
from zos.primitives import links, nat, netns, nsclient, nsforward
from zos.primitives.dnsrecords import within
from zos.primitives.hostproc import HostProcess, HostProcessError
from zos.primitives.proxy import ProxyError
from zos.primitives.proxyroutes import (
    Backend,
    HttpRoute,
    PassthroughRoute,
    Route,
    RouteError,
    parse_http_backend,
    parse_tcp_backend,
)

if TYPE_CHECKING:
    from zos.node.services import ReverseProxy
    from zos.registry.models import PublicConfig

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
NO_PUBLIC_CONFIG = (
    "gateway is not supported on this node: it has no public configuration "
    "(its farmer sets one; `zos nodes` shows which nodes serve gateways)"
)


def _fail(ctx: WorkloadContext, field: str, why: str) -> WorkloadError:
    return WorkloadError(f"{ctx.workload.type} '{ctx.workload.name}': {field}: {why}")


class GatewayManager(Manager):
    """What both gateway types share: the public config, backends, forwarders, the route."""

    kind: ClassVar[str]  # the route names' prefix, and the field that names the host
    rank = 80  # after the machines and networks its backends are on
    updatable = True

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self._forwarders: dict[str, HostProcess] = {}

    # --- where things are -----------------------------------------------------------------

    @property
    def proxy(self) -> ReverseProxy:
        proxy = self.node.proxy
        if proxy is None:
            raise WorkloadError("gateways are not supported on this node (no reverse proxy)")
        return proxy

    def route_name(self, wid: str) -> str:
        return f"{self.kind}-{wid}"

    def _dir(self) -> Path:
        path = self.node.data_dir / "gateways"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _state_file(self, wid: str) -> Path:
        return self._dir() / f"{self.route_name(wid)}.json"

    # --- checks ---------------------------------------------------------------------------

    async def _public_config(self, ctx: WorkloadContext) -> PublicConfig:
        registry = self.node.registry
        config = await registry.public_config() if registry is not None else None
        if config is None:
            raise WorkloadError(NO_PUBLIC_CONFIG)
        return config

    def _backends(self, ctx: WorkloadContext, data: Any, config: PublicConfig) -> list[Backend]:
        """The backends, parsed, and none that leads to the node itself or its grid."""
        parse = parse_tcp_backend if data.tls_passthrough else parse_http_backend
        own: set[Any] = {a.ip for a in links.all_addresses(self.proxy.netns)}
        for text in (config.ipv4, config.ipv6):
            if text:
                own.add(ip_interface(text).ip)
        control = set(self.node.control_plane)
        found = []
        for i, text in enumerate(data.backends):
            field = f"backends[{i}]"
            try:
                backend = parse(text, field)
            except RouteError as e:
                raise _fail(ctx, field, str(e).removeprefix(f"{field}: ")) from None
            ip = backend.ip
            if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # what the proxy would connect to
            if ip.is_loopback or ip.is_link_local:
                why = "a loopback or link-local address is not allowed"
            elif ip in own:
                why = "is one of this node's own addresses"
            elif ip in control:
                why = "is an address of the grid's control plane"
            elif isinstance(ip, IPv4Address) and ip in nat.UPLINK_RANGE:
                why = f"lies in {nat.UPLINK_RANGE}, the node's tenant uplinks"
            else:
                why = ""
            if why:
                raise _fail(ctx, field, f"{ip} {why}" if why.startswith("is") else why)
            found.append(backend)
        return found

    def _network(self, ctx: WorkloadContext, data: Any, backends: list[Backend]) -> NetworkInfo:
        """The owner's network that every backend lies in: its subnet on this node, or
        the subnet of one of its peers (another node of the network, over its tunnel)."""
        try:
            info = self.node.networks.lookup(ctx.twin_id, data.network)
        except WorkloadError as e:
            raise _fail(ctx, "network", str(e)) from None
        ip_range = IPv4Network(info.ip_range)
        peers = [IPv4Network(p["subnet"]) for p in info.wireguard.get("peers", [])]
        remote = [n for n in peers if n.subnet_of(ip_range)]
        for i, b in enumerate(backends):
            subnet = next((n for n in (info.network, *remote) if b.ip in n), None)
            if subnet is None:
                raise _fail(
                    ctx,
                    f"backends[{i}]",
                    f"{b.ip} is not in network '{data.network}': neither its subnet on this "
                    f"node ({info.subnet}) nor one its peers on other nodes hold",
                )
            if b.ip == subnet[1]:
                raise _fail(ctx, f"backends[{i}]", f"{b.ip} is the network's own gateway")
        return info

    # --- the network a gateway uses -------------------------------------------------------

    @property
    def _user_kind(self) -> str:
        """The kind of the record that makes this gateway a user of its network."""
        return f"gateway-{self.kind}"

    async def _hold(self, ctx: WorkloadContext, info: NetworkInfo) -> None:
        """Recorded as attached to the network (with no link of its own), so the network
        is not removed while the gateway uses it; let go of any network it used before."""
        nets, wid = self.node.networks, ctx.workload_id
        async with network_lock(info.netid):
            if nets.state.load(info.netid) is None or not netns.exists(info.namespace):
                raise _fail(ctx, "network", f"network '{info.name}' was just removed")
            prefix = info.network.prefixlen
            nets.state.record(
                Attachment(
                    workload_id=wid,
                    kind=self._user_kind,
                    netid=info.netid,
                    network=info.name,
                    port="",
                    namespace=info.namespace,
                    address=IPv4Interface(f"{info.gateway}/{prefix}"),  # none a machine takes
                    gateway=info.gateway,
                )
            )
        await self._let_go(wid, keep=info.netid)

    def _held(self) -> dict[str, list[str]]:
        """Workload id -> the networks this type of gateway is recorded as using."""
        nets = self.node.networks
        held: dict[str, list[str]] = {}
        for netid in nets.state.netids():
            for a in nets.attachments(netid):
                if a.kind == self._user_kind:
                    held.setdefault(a.workload_id, []).append(netid)
        return held

    async def _let_go(self, wid: str, keep: str = "") -> None:
        """No longer a user of its networks (but `keep`): each is removed if nothing else
        uses it, as when its last machine goes."""
        nets = self.node.networks
        for netid in self._held().get(wid, []):
            if netid == keep:
                continue
            async with network_lock(netid):
                nets.state.drop(netid, wid)
                await nets.release_if_unused(netid)

    # --- forwarders (backends on a private network) ---------------------------------------

    def _free_port(self) -> int:
        def bind() -> int:
            with socket.socket() as s:
                s.bind((LOOPBACK, 0))
                return s.getsockname()[1]

        ns = self.proxy.netns
        return netns.run_in(ns, bind) if ns else bind()

    def _forwarder(self, wid: str, argv: list[str]) -> HostProcess:
        proc = self._forwarders.get(wid)
        if proc is None or proc.argv != argv:
            if proc is not None:
                proc.close()
            name = self.route_name(wid)
            proc = HostProcess(
                f"forward {name}",
                argv,
                self._dir() / f"{name}.proc",
                self._dir() / f"{name}.log",
                self.node.backoff,
            )
            self._forwarders[wid] = proc
        return proc

    async def _forward(self, wid: str, dial_ns: str, backends: list[Backend]) -> list[Backend]:
        """Loopback backends that reach `backends` from inside `dial_ns`, kept running."""
        state = self._state_file(wid)
        ports: list[int] = []
        with contextlib.suppress(OSError, ValueError, KeyError):
            ports = list(json.loads(state.read_text())["ports"])
        if len(ports) != len(backends):
            ports = [self._free_port() for _ in backends]
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"ports": ports}))
            os.replace(tmp, state)
        mappings = [
            nsforward.Mapping(LOOPBACK, port, str(b.ip), b.port)
            for port, b in zip(ports, backends, strict=True)
        ]
        proc = self._forwarder(wid, nsforward.argv(self.proxy.netns, dial_ns, mappings))
        ns = self.proxy.netns

        async def ready() -> bool:
            try:
                await _connect(ns, ports[0])
            except OSError:
                return False
            return True

        try:
            await proc.ensure(ready)
        except HostProcessError as e:
            raise WorkloadError(f"the forwarder to network backends would not start: {e}") from None
        return [Backend(IPv4Address(LOOPBACK), port) for port in ports]

    async def _stop_forwarder(self, wid: str) -> None:
        name = self.route_name(wid)
        proc = self._forwarders.pop(wid, None) or HostProcess(
            f"forward {name}", [], self._dir() / f"{name}.proc", self._dir() / f"{name}.log"
        )
        await proc.stop()
        for suffix in (".json", ".log", ".old"):
            (self._dir() / f"{name}{suffix}").unlink(missing_ok=True)

    # --- the workload ---------------------------------------------------------------------

    def host(self, ctx: WorkloadContext, data: Any, config: PublicConfig) -> str:
        raise NotImplementedError

    async def _check_owner(self, ctx: WorkloadContext, data: Any) -> None:
        """A name proxy checks its name contract; an fqdn proxy has nothing to check."""

    def _route(
        self,
        ctx: WorkloadContext,
        data: Any,
        host: str,
        backends: list[Backend],
        wildcard: str | None,
    ) -> Route:
        name = self.route_name(ctx.workload_id)
        try:
            if data.tls_passthrough:
                return PassthroughRoute(name, host, tuple(b.address for b in backends))
            urls = tuple(f"http://{b.address}" for b in backends)
            return HttpRoute(name, host, urls, wildcard)
        except RouteError as e:
            raise _fail(ctx, self.kind, str(e)) from None

    def _wildcard(self, config: PublicConfig) -> str | None:
        return None

    def _result(self, host: str) -> dict[str, Any]:
        return {}

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        data = ctx.workload.data
        config = await self._public_config(ctx)
        host = self.host(ctx, data, config)
        await self._check_owner(ctx, data)
        backends = self._backends(ctx, data, config)
        wid = ctx.workload_id
        if data.network:
            info = self._network(ctx, data, backends)
            await self._hold(ctx, info)
            backends = await self._forward(wid, info.namespace, backends)
        else:  # an update may have dropped the network
            if self._state_file(wid).exists():
                await self._stop_forwarder(wid)
            await self._let_go(wid)
        route = self._route(ctx, data, host, backends, self._wildcard(config))
        try:
            await self.proxy.ensure(config)
            await self.proxy.set_route(route)
        except RouteError as e:
            if data.network:
                await self._stop_forwarder(wid)
            why = str(e)
            if "already routed" in why:
                why = f"{host!r} is already served on this node by another workload"
            raise _fail(ctx, self.kind, why) from None
        except ProxyError as e:
            raise WorkloadError(str(e)) from None
        return self._result(host)

    async def update(self, ctx: WorkloadContext, previous: Any) -> dict[str, Any]:
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        await self._remove(ctx.workload_id)

    async def _remove(self, wid: str) -> None:
        try:
            await self.proxy.remove_route(self.route_name(wid))
        except ProxyError as e:
            raise WorkloadError(f"the route could not be removed: {e}") from None
        await self._stop_forwarder(wid)
        await self._let_go(wid)

    async def cleanup(self, keep: set[str]) -> None:
        if self.node.proxy is None:
            return
        prefix = f"{self.kind}-"
        wids = {n.removeprefix(prefix) for n in self.proxy.routes() if n.startswith(prefix)}
        for path in self._dir().glob(f"{prefix}*.json"):
            wids.add(path.stem.removeprefix(prefix))
        wids |= set(self._held())
        for wid in wids - keep:
            log.info("removing gateway leftover %s%s", prefix, wid)
            await self._remove(wid)

    async def close(self) -> None:
        for proc in self._forwarders.values():
            proc.close()


async def _connect(ns: str | None, port: int) -> None:
    sock = await asyncio.to_thread(nsclient.connect, ns, LOOPBACK, port, 1.0)
    sock.close()


class GatewayNameManager(GatewayManager):
    type = "gateway-name-proxy"
    kind = "name"

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self.watch = NameWatch(lambda: self.node.registry, self._hosts, self._revoke)

    def _hosts(self) -> dict[str, str]:
        if self.node.proxy is None:
            return {}
        prefix = f"{self.kind}-"
        routes = self.proxy.routes()
        return {n.removeprefix(prefix): r.host for n, r in routes.items() if n.startswith(prefix)}

    async def _revoke(self, wid: str, why: str) -> None:
        await self._remove(wid)
        if self.node.report_failure is not None:
            await self.node.report_failure(wid, why)

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        result = await super().provision(ctx)
        self.watch.start()
        return result

    async def cleanup(self, keep: set[str]) -> None:
        await super().cleanup(keep)
        if self.node.proxy is not None and self._hosts():
            self.watch.start()

    async def close(self) -> None:
        await self.watch.close()
        await super().close()

    def host(self, ctx: WorkloadContext, data: Any, config: PublicConfig) -> str:
        if not config.domain:
            raise _fail(ctx, "name", "this node's public configuration has no domain")
        return f"{data.name}.{config.domain}".lower()

    async def _check_owner(self, ctx: WorkloadContext, data: Any) -> None:
        registry = self.node.registry
        contract = await registry.name_contract(data.name) if registry is not None else None
        if contract is None:
            raise _fail(ctx, "name", f"there is no name contract for {data.name!r} (create one)")
        if contract.owner_twin != ctx.twin_id:
            raise _fail(
                ctx,
                "name",
                f"{data.name!r} is owned by twin {contract.owner_twin}, not twin {ctx.twin_id}",
            )
        if not contract.active:
            raise _fail(ctx, "name", f"the name contract of {data.name!r} is cancelled")

    def _wildcard(self, config: PublicConfig) -> str | None:
        return f"*.{config.domain}".lower()

    def _result(self, host: str) -> dict[str, Any]:
        return {"fqdn": host}


class GatewayFqdnManager(GatewayManager):
    type = "gateway-fqdn-proxy"
    kind = "fqdn"

    def host(self, ctx: WorkloadContext, data: Any, config: PublicConfig) -> str:
        fqdn = data.fqdn.lower()
        domain = config.domain.lower()
        if domain and within(fqdn, domain):
            raise _fail(
                ctx,
                "fqdn",
                f"{data.fqdn!r} is under this gateway's own domain {domain!r} "
                "(use a gateway-name-proxy for that)",
            )
        return fqdn
