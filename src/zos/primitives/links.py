"""Links over netlink (pyroute2): bridges, veth pairs, taps, addresses, routes.

Every function takes `ns`, the name of the network namespace to work in (None: the
agent's own), is idempotent, and blocks: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, ParamSpec, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from zos.primitives import netns

P = ParamSpec("P")
R = TypeVar("R")

MAX_IFNAME = 15


class LinkError(Exception):
    pass


def check_ifname(name: str) -> str:
    if not name or len(name) > MAX_IFNAME or "/" in name or " " in name:
        raise LinkError(f"invalid interface name {name!r} (1-{MAX_IFNAME} characters)")
    return name


def _off_loop(fn: Callable[P, R]) -> Callable[P, R]:
    """pyroute2's blocking API runs its own event loop, which cannot run on a thread that
    already runs one: called from there, do the work on a short-lived thread instead."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(fn, *args, **kwargs).result()

    return wrapper


@contextmanager
def ipr(ns: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket in namespace `ns`. The thread itself enters the namespace for the
    block (pyroute2 opens its socket lazily): ~1 ms, where NetNS forks a helper (~10 ms)."""
    with netns.entered(ns) if ns else contextlib.nullcontext():
        sock = IPRoute()
        try:
            yield sock
        finally:
            sock.close()


def _index(sock: IPRoute, name: str) -> int | None:
    found = sock.link_lookup(ifname=name)
    return found[0] if found else None


def _existing(sock: IPRoute, name: str, ns: str | None) -> int:
    """The index of `name`, which must exist (LinkError naming it and its namespace)."""
    idx = _index(sock, name)
    if idx is None:
        raise LinkError(f"no link {name} in namespace {ns or 'host'}")
    return idx


def _ipv4(msg: Any) -> IPv4Interface:
    """The address of a netlink address message, with its prefix."""
    return IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")


@_off_loop
def exists(name: str, ns: str | None = None) -> bool:
    with ipr(ns) as sock:
        return _index(sock, name) is not None


@_off_loop
def index(name: str, ns: str | None = None) -> int:
    with ipr(ns) as sock:
        return _existing(sock, name, ns)


@_off_loop
def kind(name: str, ns: str | None = None) -> str | None:
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is None:
            return None
        link = sock.get_links(idx)[0]
        info = link.get("IFLA_LINKINFO")
        return info.get("IFLA_INFO_KIND") if info else None


@_off_loop
def names(ns: str | None = None) -> list[str]:
    with ipr(ns) as sock:
        return [link.get("IFLA_IFNAME") for link in sock.get_links()]


@_off_loop
def ensure_bridge(name: str, ns: str | None = None) -> None:
    check_ifname(name)
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is None:
            sock.link("add", ifname=name, kind="bridge")
            idx = _index(sock, name)
        sock.link("set", index=idx, state="up")


@_off_loop
def ensure_veth(name: str, peer: str, ns: str | None = None, peer_ns: str | None = None) -> None:
    """A veth pair `name` (in `ns`) ↔ `peer` (in `peer_ns`); recreated if half of it is missing."""
    check_ifname(name)
    check_ifname(peer)
    peer_side = peer_ns if peer_ns else ns
    if exists(name, ns) and exists(peer, peer_side):
        return
    # A half left alone is a pair whose other end was moved away or whose namespace is
    # going (the kernel destroys a deleted namespace's links later): both halves go.
    delete(name, ns)
    if kind(peer, peer_side) == "veth":
        delete(peer, peer_side)
    with ipr(ns) as sock:
        spec: dict[str, object] = {"ifname": peer}
        if peer_ns and peer_ns != ns:
            spec["net_ns_fd"] = peer_ns
        try:
            sock.link("add", ifname=name, kind="veth", peer=spec)
        except NetlinkError as exc:
            raise LinkError(f"cannot create veth {name}/{peer}: {exc}") from exc


@_off_loop
def ensure_tap(name: str, bridge: str, ns: str | None = None) -> None:
    """A persistent tap `name` enslaved to `bridge` (in `ns`), up, without IPv6 on the
    host side (as zos makes it); QEMU, started in `ns`, opens it by name."""
    check_ifname(name)
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is None:
            try:
                sock.link("add", ifname=name, kind="tuntap", mode="tap")
            except NetlinkError as exc:
                raise LinkError(f"cannot create tap {name}: {exc}") from exc
            idx = _index(sock, name)
        else:
            info = sock.get_links(idx)[0].get("IFLA_LINKINFO")
            if not info or info.get("IFLA_INFO_KIND") != "tun":
                raise LinkError(f"{name} exists and is not a tap")
        midx = _index(sock, bridge)
        if idx is None or midx is None:
            raise LinkError(f"cannot attach tap {name} to {bridge}: link missing")
        sock.link("set", index=idx, master=midx, state="up")
    netns.set_sysctl(ns, f"net/ipv6/conf/{name}/disable_ipv6", "1")


@_off_loop
def set_master(name: str, master: str, ns: str | None = None) -> None:
    with ipr(ns) as sock:
        idx, midx = _index(sock, name), _index(sock, master)
        if idx is None or midx is None:
            raise LinkError(f"cannot attach {name} to {master}: link missing")
        sock.link("set", index=idx, master=midx)


@_off_loop
def ports(bridge: str, ns: str | None = None) -> list[str]:
    """Names of the links enslaved to `bridge`."""
    with ipr(ns) as sock:
        midx = _index(sock, bridge)
        if midx is None:
            return []
        return [
            link.get("IFLA_IFNAME") for link in sock.get_links() if link.get("IFLA_MASTER") == midx
        ]


@_off_loop
def set_up(name: str, ns: str | None = None) -> None:
    with ipr(ns) as sock:
        idx = _existing(sock, name, ns)
        sock.link("set", index=idx, state="up")


@_off_loop
def set_down(name: str, ns: str | None = None) -> None:
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is not None:
            sock.link("set", index=idx, state="down")


@_off_loop
def rename(name: str, new: str, ns: str | None = None) -> None:
    check_ifname(new)
    with ipr(ns) as sock:
        idx = _existing(sock, name, ns)
        sock.link("set", index=idx, state="down")
        sock.link("set", index=idx, ifname=new)


@_off_loop
def delete(name: str, ns: str | None = None) -> None:
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is None:
            return
        try:
            sock.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: a peer deleted it meanwhile
                raise


@_off_loop
def addresses(name: str, ns: str | None = None) -> list[IPv4Interface]:
    with ipr(ns) as sock:
        idx = _index(sock, name)
        if idx is None:
            return []
        return [_ipv4(a) for a in sock.get_addr(index=idx, family=2)]


@_off_loop
def all_addresses(ns: str | None = None) -> list[IPv4Interface]:
    with ipr(ns) as sock:
        return [_ipv4(a) for a in sock.get_addr(family=2)]


@_off_loop
def set_addresses(name: str, wanted: list[IPv4Interface], ns: str | None = None) -> None:
    """Make `wanted` exactly the IPv4 addresses of `name`."""
    with ipr(ns) as sock:
        idx = _existing(sock, name, ns)
        have = {_ipv4(a) for a in sock.get_addr(index=idx, family=2)}
        for addr in have - set(wanted):
            sock.addr("del", index=idx, address=str(addr.ip), prefixlen=addr.network.prefixlen)
        for addr in wanted:
            if addr not in have:
                sock.addr(
                    "add",
                    index=idx,
                    address=str(addr.ip),
                    prefixlen=addr.network.prefixlen,
                    broadcast=str(addr.network.broadcast_address),
                )


@_off_loop
def set_default_route(gateway: IPv4Address, ns: str | None = None) -> None:
    with ipr(ns) as sock:
        sock.route("replace", dst="0.0.0.0/0", gateway=str(gateway))


@_off_loop
def default_gateway(ns: str | None = None) -> IPv4Address | None:
    with ipr(ns) as sock:
        for route in sock.get_routes(family=2):
            if route["dst_len"] == 0 and route.get("RTA_GATEWAY"):
                return ipaddress.IPv4Address(route.get("RTA_GATEWAY"))
    return None
