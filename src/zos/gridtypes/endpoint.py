"""The `IP:PORT` / `[IPv6]:PORT` form of a WireGuard peer's endpoint, read once for the
planner (client) and the node (primitives), which word their errors each their own way."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address


def split_ip_port(text: str) -> tuple[IPv4Address | IPv6Address, str, bool] | None:
    """(ip, port digits, whether the ip was bracketed), or None when `text` is not
    `IPv4:PORT` or `[IPv6]:PORT`. The port's range is left to the caller to check."""
    address, sep, port = text.rpartition(":")
    bracketed = address.startswith("[") and address.endswith("]")
    try:
        ip = ip_address(address[1:-1] if bracketed else address)
    except ValueError:
        return None
    if not sep or (ip.version == 6) != bracketed or not port.isdigit():
        return None
    return ip, port, bracketed
