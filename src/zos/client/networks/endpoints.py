"""Where other nodes reach a node's WireGuard port, from what the node says about itself.

As ThreeFold's clients do: the IPv4 of its public config if public, else that config's
IPv6 (in brackets), else the first public address of its `zos` interface; none: the node
is *hidden* (it dials out to its access node and is never dialled).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_interface
from typing import Any

from zos.client.networks.errors import NetworkPlanError
from zos.gridtypes.endpoint import split_ip_port

IPAddress = IPv4Address | IPv6Address
PublicTest = Callable[[IPAddress], bool]


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address (what ThreeFold's clients accept as public)."""
    return ip.is_global and not ip.is_multicast


def _address(value: object, field: str) -> IPAddress:
    try:
        return ip_interface(str(value)).ip  # "ip" or "ip/prefix"
    except ValueError:
        raise NetworkPlanError(field, f"{value!r} is not an IP address") from None


def host(ip: IPAddress) -> str:
    """An address as it goes before `:port` in an endpoint."""
    return f"[{ip}]" if ip.version == 6 else str(ip)


def endpoint_host(
    public_config: Mapping[str, Any] | None,
    interfaces: Mapping[str, Sequence[str]] | None,
    *,
    public: PublicTest = is_public,
    field: str = "node",
) -> str:
    """`IPv4`, `[IPv6]`, or "" (hidden), from the answers of `zos.network.public_config_get`
    (None when it answered an error: the node has none) and `zos.network.interfaces`."""
    config = public_config or {}
    if not isinstance(config, Mapping):
        raise NetworkPlanError(f"{field}.public_config", "must be an object or null")
    for family, version in (("ipv4", 4), ("ipv6", 6)):
        value = config.get(family) or ""
        if not value:
            continue
        ip = _address(value, f"{field}.public_config.{family}")
        if ip.version != version:
            raise NetworkPlanError(
                f"{field}.public_config.{family}", f"{value!r} is not an IPv{version} address"
            )
        if public(ip):
            return host(ip)
    ifaces = interfaces or {}
    if not isinstance(ifaces, Mapping):
        raise NetworkPlanError(f"{field}.interfaces", "must be an object of lists")
    zos = ifaces.get("zos") or []
    if isinstance(zos, str) or not isinstance(zos, Sequence):
        raise NetworkPlanError(f"{field}.interfaces.zos", "must be a list of addresses")
    for i, value in enumerate(zos):
        ip = _address(value, f"{field}.interfaces.zos[{i}]")
        if public(ip):
            return host(ip)
    return ""


def split_endpoint(value: object, field: str) -> tuple[str, int]:
    """(`IPv4` or `[IPv6]`, port) of an endpoint `IP:PORT` / `[IPv6]:PORT`."""
    parts = split_ip_port(str(value))
    if parts is None:
        raise NetworkPlanError(field, f"{value!r} must be IP:PORT (an IPv6 address in brackets)")
    ip, port, _ = parts
    if not 0 < int(port) < 65536:
        raise NetworkPlanError(field, f"{value!r}: {port} is not a port (1-65535)")
    return host(ip), int(port)
