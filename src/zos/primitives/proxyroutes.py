"""The proxy's routes: what a gateway asks for, checked, and as Traefik's dynamic config.

Two kinds, as zos has them:
- `HttpRoute`: HTTPS for `host` (``Host(`host`)``), terminated by the proxy with an ACME
  certificate, to `http://IP:port` backends. The certificate is the host's own (HTTP-01),
  or, with `wildcard` (`*.<domain>`, for name proxies), the domain's wildcard one
  (DNS-01), shared by every name under it.
- `PassthroughRoute`: TLS connections whose SNI is `host` (``HostSNI(`host`)``), passed
  unopened to `IP:port` backends that terminate TLS themselves.

Each route is one file (`<name>.yaml`) in the directory the proxy watches; `from_dynamic`
reads one back, so the files alone say which routes exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import urlsplit

from zos.primitives.dnsrecords import DnsError, check_name

HTTP01 = "http01"  # certificate resolver names in the static config
DNS01 = "dns01"
ENTRYPOINT = "websecure"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_RULE = re.compile(r"^Host(SNI)?\(`([^`]+)`\)$")


class RouteError(ValueError):
    """A route that cannot be served; the message names the field and the rule."""


@dataclass(frozen=True)
class Backend:
    ip: IPv4Address | IPv6Address
    port: int

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


def _ip(text: str, field: str) -> IPv4Address | IPv6Address:
    try:
        ip = ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise RouteError(f"{field}: {text!r} is not an IP address") from None
    if ip.is_unspecified:
        raise RouteError(f"{field}: {ip} would reach the proxy's own namespace")
    if ip.is_multicast:
        raise RouteError(f"{field}: {ip} is a multicast address")
    return ip


def _port(text: str | None, field: str, default: int | None = None) -> int:
    if text is None or text == "":
        if default is None:
            raise RouteError(f"{field}: a port is needed")
        return default
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise RouteError(f"{field}: port {text!r} is not 1-65535")
    return int(text)


def parse_http_backend(text: str, field: str = "backend") -> Backend:
    """`http://IP[:port]` (port 80 by default), nothing after the address but `/`."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise RouteError(f"{field}: {text!r}: {e}") from None
    if url.scheme != "http" or not url.hostname:
        raise RouteError(f"{field}: {text!r} is not http://IP[:port]")
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
        raise RouteError(f"{field}: {text!r}: only http://IP[:port], no path or credentials")
    if port is not None and not 0 < port < 65536:
        raise RouteError(f"{field}: port {port} is not 1-65535")
    return Backend(_ip(url.hostname, field), port or 80)


def parse_tcp_backend(text: str, field: str = "backend") -> Backend:
    """`IP:port` (`[IPv6]:port`)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise RouteError(f"{field}: {text!r} is not IP:port")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise RouteError(f"{field}: {text!r}: an IPv6 address goes in brackets")
    return Backend(_ip(host, field), _port(port, field))


def check_route_name(name: str) -> str:
    """A route's name (also its file's and its router's): RouteError otherwise."""
    if not _NAME.match(name):
        raise RouteError(f"name {name!r}: 1-128 of A-Z a-z 0-9 _ - (a letter or digit first)")
    return name


def _check(route: HttpRoute | PassthroughRoute, parse: Callable[[str, str], Backend]) -> None:
    """Check name, host and backends; keep the host in lower case and each backend in
    one form (`parse` reads one, naming its field)."""
    check_route_name(route.name)
    try:
        host = check_name(route.host, "host")
    except DnsError as e:
        raise RouteError(str(e)) from None
    if "." not in host:
        raise RouteError(f"host {host!r}: a fully qualified name is needed")
    if not route.backends:
        raise RouteError("backends: at least one is needed")
    parsed = [parse(b, f"backends[{i}]") for i, b in enumerate(route.backends)]
    scheme = "http://" if isinstance(route, HttpRoute) else ""
    object.__setattr__(route, "host", host)
    object.__setattr__(route, "backends", tuple(scheme + b.address for b in parsed))


def _dynamic(kind: str, name: str, rule: str, tls: dict[str, Any], servers: list[Any]) -> dict:
    """One router and its service of the same name, on the HTTPS entrypoint only."""
    router = {"rule": rule, "entryPoints": [ENTRYPOINT], "service": name, "tls": tls}
    service = {"loadBalancer": {"servers": servers}}
    return {kind: {"routers": {name: router}, "services": {name: service}}}


@dataclass(frozen=True)
class HttpRoute:
    """Backends are kept as `http://IP:port` (the port filled in), whatever form came."""

    name: str
    host: str
    backends: tuple[str, ...]
    wildcard: str | None = None  # "*.<domain>": the certificate comes by DNS-01 for it

    def __post_init__(self) -> None:
        _check(self, parse_http_backend)
        host = self.host
        if self.wildcard is not None:
            wildcard = self.wildcard.lower()
            if wildcard != "*." + host.split(".", 1)[1] or wildcard.count(".") < 2:
                raise RouteError(
                    f"wildcard {self.wildcard!r}: must be '*.' and the domain right above "
                    f"{host!r}, itself of two labels or more"
                )
            object.__setattr__(self, "wildcard", wildcard)

    def parsed_backends(self) -> list[Backend]:
        return [parse_http_backend(b) for b in self.backends]

    def to_dynamic(self) -> dict[str, Any]:
        if self.wildcard is None:
            tls: dict[str, Any] = {"certResolver": HTTP01}
        else:
            tls = {"certResolver": DNS01, "domains": [{"main": self.wildcard}]}
        servers = [{"url": url} for url in self.backends]
        return _dynamic("http", self.name, f"Host(`{self.host}`)", tls, servers)


@dataclass(frozen=True)
class PassthroughRoute:
    name: str
    host: str
    backends: tuple[str, ...]

    def __post_init__(self) -> None:
        _check(self, parse_tcp_backend)

    def parsed_backends(self) -> list[Backend]:
        return [parse_tcp_backend(b) for b in self.backends]

    def to_dynamic(self) -> dict[str, Any]:
        servers = [{"address": address} for address in self.backends]
        rule = f"HostSNI(`{self.host}`)"
        return _dynamic("tcp", self.name, rule, {"passthrough": True}, servers)


Route = HttpRoute | PassthroughRoute


def from_dynamic(name: str, config: Any) -> Route:
    """The route a file written from `to_dynamic` holds; RouteError for anything else."""
    try:
        kind = "tcp" if "tcp" in config else "http"
        router = config[kind]["routers"][name]
        servers = config[kind]["services"][name]["loadBalancer"]["servers"]
        m = _RULE.match(router["rule"])
        if m is None or (m.group(1) is None) != (kind == "http"):
            raise RouteError(f"{name}: rule {router['rule']!r} is not one this proxy writes")
        if kind == "tcp":
            return PassthroughRoute(name, m.group(2), tuple(s["address"] for s in servers))
        domains = router.get("tls", {}).get("domains") or [{}]
        return HttpRoute(name, m.group(2), tuple(s["url"] for s in servers), domains[0].get("main"))
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise RouteError(f"{name}: not a route file this proxy writes ({e!r})") from None
