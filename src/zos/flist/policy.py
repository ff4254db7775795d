"""Where a tenant's flist may make the node connect (no server-side request forgery).

A tenant names an flist URL and, inside the flist, the stores its blocks come from. The
node fetches them, so without a rule a tenant could make the node talk to itself, its
loopback, the grid's NATS servers, or read its own disk (`dir://`). `FetchPolicy` is
that rule: `dir://` never; a network store or flist URL only at an IPv4 address that is
not the node's (loopback, any address of its interfaces, checked at each connection),
not a non-routable one (unspecified, link-local, multicast, broadcast) and not the
control plane's, unless it is one of the stores the node was configured with.

It checks each address when a connection is made, not only when the URL is read: a name
that resolves elsewhere later (DNS rebinding) is checked again, and redirects are never
followed by the node's fetches.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from zos.flist.errors import FlistError, StoreError

DEFAULT_PORTS = {"http": 80, "https": 443, "zdb": 9900}
_THIS_NETWORK = IPv4Network("0.0.0.0/8")  # "this host" (0.0.0.0 reaches the node itself)


def endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) a network store URL connects to; None for anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return None
    return parts.hostname.lower(), port


class FetchPolicy:
    """`trusted`: store URLs the node is configured with (always allowed); `control`: the
    control plane's addresses; `local`: this node's own addresses, asked at each check."""

    def __init__(
        self,
        trusted: Iterable[str] = (),
        control: Iterable[IPv4Address] = (),
        local: Callable[[], Iterable[IPv4Address]] = tuple,
    ) -> None:
        self._trusted = {e for e in map(endpoint, trusted) if e is not None}
        self._control = set(control)
        self._local = local

    def trusts(self, host: str, port: int) -> bool:
        return (host.lower(), port) in self._trusted

    def check_route(self, url: str) -> None:
        """A store named inside a tenant's flist: a network store, never a node path."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme == "dir":
            raise FlistError(
                f"route {url[:200]}: dir:// stores (a path on the node) are not allowed in "
                "a tenant's flist"
            )
        if endpoint(url) is None:
            raise FlistError(f"route {url[:200]}: not a network store (http, https, zdb)")

    def refusal(self, addr: IPv4Address) -> str | None:
        """Why the node may not connect to `addr` for a tenant (None: it may)."""
        if addr.is_loopback:
            return "the node's loopback"
        if addr.is_link_local or addr.is_multicast or addr.is_reserved or addr in _THIS_NETWORK:
            return "not a routable address"
        if addr in self._control:
            return "the grid's control plane"
        if addr in set(self._local()):
            return "an address of this node"
        return None

    async def address(self, host: str, port: int) -> str:
        """An IPv4 address of `host` the node may connect to; StoreError naming the rule."""
        if self.trusts(host, port):
            return host
        addrs = await self._resolve(host, port)
        return str(addrs[0])

    async def _resolve(self, host: str, port: int) -> list[IPv4Address]:
        try:
            literal = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and not isinstance(literal, IPv4Address):
            raise StoreError(f"{host}: refused: only IPv4 stores are allowed in a tenant's flist")
        if isinstance(literal, IPv4Address):
            addrs = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, family=socket.AF_INET, type=socket.SOCK_STREAM
                )
            except OSError:
                raise StoreError(f"{host}: cannot resolve the name (IPv4)") from None
            addrs = sorted({IPv4Address(info[4][0]) for info in infos})
        for addr in addrs:
            why = self.refusal(addr)
            if why is not None:
                raise StoreError(f"{host}: refused: {addr} is {why}")
        if not addrs:
            raise StoreError(f"{host}: cannot resolve the name (IPv4)")
        return addrs

    def resolver(self) -> AbstractResolver:
        """For aiohttp: every name checked at each new connection (IP literals are not
        resolved by aiohttp: check them with `address` before the request)."""
        return _Resolver(self)


class _Resolver(AbstractResolver):
    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.policy.trusts(host, port):
            return await self._inner.resolve(host, port, family)
        try:
            addrs = await self.policy._resolve(host, port)
        except StoreError as e:
            raise OSError(str(e)) from None
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addrs
        ]

    async def close(self) -> None:
        await self._inner.close()
