"""The node's one reverse proxy for gateway workloads, started when first needed.

Traefik (`zos.primitives.proxy`) runs in the node's public namespace: the agent's own
(`netns` None; in the local grid that is the node's namespace on the grid bridge), where
the node's public address is. It is started by the first gateway workload, or at the
agent's start when the node has a public config. A node whose public config has a
domain also runs its own DNS server (`zos.primitives.nodedns`) on its public IPv4,
port 53, for the DNS-01 challenges of the wildcard `*.<domain>` its name proxies share.

Both are processes of their own: they keep serving while the agent restarts, and the
next agent finds them again (same settings) or replaces them (the public config
changed). The admin endpoint listens on the namespace's loopback only: the agent
reaches it, tenants (other namespaces) do not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from ipaddress import ip_interface
from pathlib import Path
from typing import TYPE_CHECKING

from zos.primitives.nodedns import NodeDns, NodeDnsError, acme_zone
from zos.primitives.proxy import (
    LETS_ENCRYPT,
    ROUTE_SUFFIX,
    Dns01,
    Proxy,
    ProxyError,
    ProxySettings,
    Route,
)
from zos.primitives.proxyroutes import check_route_name
from zos.primitives.supervisor import Backoff

if TYPE_CHECKING:
    from zos.registry.models import PublicConfig


@dataclass(frozen=True)
class AcmeSettings:
    url: str = LETS_ENCRYPT
    ca: Path | None = None  # what the ACME server's own TLS is checked with (pebble's)
    email: str = ""


class NodeProxy:
    """`zos.node.services.ReverseProxy`: one Traefik per node, configured from the
    node's public config."""

    def __init__(
        self,
        run_dir: Path,
        acme: AcmeSettings = AcmeSettings(),
        netns: str | None = None,
        backoff: Backoff | None = None,
        ports: tuple[int, int, int] = (80, 443, 8082),  # http, https, admin
    ) -> None:
        self.run_dir = run_dir
        self.acme = acme
        self.netns = netns
        self.backoff = backoff
        self.ports = ports
        self._proxy: Proxy | None = None
        self._dns: NodeDns | None = None
        self._lock = asyncio.Lock()

    def _settings(self, config: PublicConfig | None) -> tuple[ProxySettings, NodeDns | None]:
        http, https, admin = self.ports
        dns = None
        dns01 = None
        if config is not None and config.domain and config.ipv4:
            ip = str(ip_interface(config.ipv4).ip)
            records = self.run_dir / "dns01"
            dns = NodeDns(
                self.run_dir / "dns",
                (ip, 53),
                [acme_zone(config.domain)],
                records,
                self.netns,
                self.backoff,
            )
            # Lego follows CNAMEs of the challenge name: the node's own server answers it.
            dns01 = Dns01(records, (f"{ip}:53",))
        settings = ProxySettings(
            self.run_dir / "traefik",
            self.netns,
            http_port=http,
            https_port=https,
            admin_port=admin,
            acme_url=self.acme.url,
            acme_email=self.acme.email,
            acme_ca=self.acme.ca,
            dns01=dns01,
        )
        return settings, dns

    async def ensure(self, config: PublicConfig | None) -> Proxy:
        """Traefik (and the node's DNS, with a domain) running with the settings this
        public config asks for; started, found again, or replaced."""
        settings, dns = self._settings(config)
        async with self._lock:
            if self._proxy is None or self._proxy.settings != settings:
                if self._proxy is not None:
                    self._proxy.close()  # the new one's different argv replaces it
                self._proxy = Proxy(settings, self.backoff)
            if dns is None and self._dns is not None:
                await self._dns.stop()
                self._dns = None
            elif dns is not None and (self._dns is None or self._dns.listen != dns.listen
                                      or self._dns.zones != dns.zones):  # fmt: skip
                if self._dns is not None:
                    self._dns.close()
                self._dns = dns
            try:
                if self._dns is not None:
                    await self._dns.ensure()
                await self._proxy.ensure()
            except (ProxyError, NodeDnsError) as e:
                raise ProxyError(f"the node's reverse proxy would not start: {e}") from None
            return self._proxy

    def _loaded(self) -> Proxy:
        """The proxy as last configured, or one that only reads and removes routes."""
        if self._proxy is None:
            self._proxy = Proxy(self._settings(None)[0], self.backoff)
        return self._proxy

    async def set_route(self, route: Route, timeout: float = 20.0) -> None:
        if self._proxy is None:
            raise ProxyError("the proxy is not started (ensure it with the public config first)")
        await self._proxy.set_route(route, timeout)

    async def remove_route(self, name: str, timeout: float = 20.0) -> bool:
        proxy = self._loaded()
        if not proxy.alive():
            # Not (yet) watched by this agent: a running Traefik follows the directory
            # itself, and a stopped one will not load what is gone.
            existed = name in proxy.routes()
            (proxy.routes_dir / f"{check_route_name(name)}{ROUTE_SUFFIX}").unlink(missing_ok=True)
            return existed
        return await proxy.remove_route(name, timeout)

    def routes(self) -> dict[str, Route]:
        return self._loaded().routes()

    async def stop(self) -> None:
        """Stop Traefik and the DNS server (a wipe: the node leaves the grid)."""
        await self._loaded().stop()
        if self._dns is None:  # started by an earlier agent: stop finds it by its state file
            self._dns = NodeDns(self.run_dir / "dns", ("127.0.0.1", 53), ["stopped.invalid"],
                                self.run_dir / "dns01", self.netns)  # fmt: skip
        await self._dns.stop()

    def close(self) -> None:
        """The agent is going away: stop watching, keep serving."""
        if self._proxy is not None:
            self._proxy.close()
        if self._dns is not None:
            self._dns.close()
