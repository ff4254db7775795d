"""Addresses inside a network's range: one /24 per node or access, 100.64.A.B tunnel IPs."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network

from zos.client.networks.errors import NetworkPlanError

PRIVATE_RANGES = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
TUNNEL_RANGE = IPv4Network("100.64.0.0/16")  # every node's and laptop's tunnel address
FIRST_SUBNET = 2  # ThreeFold's clients start at x.y.2.0/24


def check_ip_range(value: object, field: str = "ip_range") -> IPv4Network:
    """A network's ip_range: a /16 inside a private range."""
    try:
        net = IPv4Network(str(value))
    except ValueError as e:
        raise NetworkPlanError(field, f"{value!r} is not an IPv4 network ({e})") from None
    if net.prefixlen != 16:
        raise NetworkPlanError(field, f"{net} must be a /16 (e.g. 10.40.0.0/16)")
    if not any(net.subnet_of(r) for r in PRIVATE_RANGES):
        inside = ", ".join(map(str, PRIVATE_RANGES))
        raise NetworkPlanError(field, f"{net} must be a private range, inside {inside}")
    return net


def check_subnet(value: object, ip_range: IPv4Network, field: str) -> IPv4Network:
    """A node's or access's /24 inside the range."""
    try:
        net = IPv4Network(str(value))
    except ValueError as e:
        raise NetworkPlanError(field, f"{value!r} is not an IPv4 network ({e})") from None
    if net.prefixlen != 24 or not net.subnet_of(ip_range):
        raise NetworkPlanError(field, f"{net} is not a /24 inside ip_range {ip_range}")
    return net


def candidate_subnets(ip_range: IPv4Network) -> Iterator[IPv4Network]:
    """The /24s a planner hands out, lowest first: x.y.2.0/24 to x.y.255.0/24."""
    for i, subnet in enumerate(ip_range.subnets(new_prefix=24)):
        if i >= FIRST_SUBNET:
            yield subnet


def subnet_capacity(ip_range: IPv4Network) -> int:
    return 2 ** (24 - ip_range.prefixlen) - FIRST_SUBNET


def tunnel_ip(subnet: str | IPv4Network) -> str:
    """100.64.A.B/32 for the subnet 10.A.B.0/24 (the node's or laptop's tunnel address)."""
    octets = IPv4Network(subnet).network_address.packed
    return f"{TUNNEL_RANGE.network_address + octets[1] * 256 + octets[2]}/32"
