"""The command lines that run the DNS server (`zos.primitives.dns`) and the ACME hook
(`zos.primitives.dnsrecords`) as processes of their own.

Standard library only: the node agent starts both but answers no DNS itself, and
importing the server would load dnspython (2 MiB of its memory) into it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path


def serve_argv(
    listen: tuple[str, int],
    zones: Iterable[str],
    addresses: Mapping[str, Iterable[str]] | None = None,
    records: Path | None = None,
    delegations: Mapping[str, tuple[str, int]] | None = None,
) -> list[str]:
    """The command line of a server process (`python -m zos.primitives.dns serve ...`)."""
    host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
    argv = [sys.executable, "-m", "zos.primitives.dns", "serve", "--listen", f"{host}:{listen[1]}"]
    for z in zones:
        argv += ["--zone", z]
    for name, ips in (addresses or {}).items():
        argv += ["--address", f"{name}={','.join(ips)}"]
    if records is not None:
        argv += ["--records", str(records)]
    for zone, (h, p) in (delegations or {}).items():
        argv += ["--delegate", f"{zone}={h}:{p}"]
    return argv


def hook_argv(records: Path) -> list[str]:
    """The ACME DNS-01 hook; Traefik adds `present|cleanup FQDN VALUE`."""
    return [sys.executable, "-m", "zos.primitives.dnsrecords", "--records", str(records)]
