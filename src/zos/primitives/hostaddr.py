"""The address this machine (or the network namespace the agent runs in) is reached at."""

from __future__ import annotations

import socket

# TEST-NET-1 (RFC 5737): only asks the kernel which source address its route would use.
_PROBE = ("192.0.2.1", 9)


def primary_ipv4() -> str | None:
    """The source address of the default route, or None without one.

    Connecting a UDP socket sends nothing: the kernel only picks the route and the
    address it would send from.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(_PROBE)
        except OSError:
            return None
        return str(s.getsockname()[0])
