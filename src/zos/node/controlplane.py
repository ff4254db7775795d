"""The grid's control plane as a node sees it: the NATS servers it is told to use (the
registry lives there) and the block stores it is configured with (the grid's hubs).

Tenants never reach these, whatever their address (the uplink walls drop them), and a
tenant's flist is never fetched from them unless they are a configured store.
"""

from __future__ import annotations

import socket
import urllib.parse
from ipaddress import IPv4Address, ip_address

from zos.flist.stores import split_spec


def _hosts(nats: str, stores: list[str]) -> list[str]:
    urls = [u.strip() for u in nats.split(",") if u.strip()]
    urls += [split_spec(s)[2] for s in stores]
    hosts = []
    for url in urls:
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        if parts.scheme != "dir" and parts.hostname:
            hosts.append(parts.hostname)
    return hosts


def control_plane(nats: str, stores: list[str]) -> list[IPv4Address]:
    """The IPv4 addresses of the NATS servers and network stores (resolved now)."""
    found: set[IPv4Address] = set()
    for host in _hosts(nats, stores):
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue  # not resolvable now: nothing to wall off
        for info in infos:
            addr = ip_address(info[4][0])
            if isinstance(addr, IPv4Address):
                found.add(addr)
    return sorted(found)
