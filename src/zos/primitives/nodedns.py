"""The node's own DNS server (`zos.primitives.dns serve`), kept running in its namespace.

It answers `_acme-challenge.<domain>` from the directory the proxy's DNS-01 hook writes,
on the node's public address, port 53 (UDP and TCP), like the proxy: a process of its
own in the node's public namespace, restarted when it dies and found again by the next
agent (`zos.primitives.hostproc`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from zos.primitives import dnsprocess, netns
from zos.primitives.dnsrecords import check_name
from zos.primitives.hostproc import HostProcess, HostProcessError
from zos.primitives.supervisor import Backoff


class NodeDnsError(Exception):
    pass


def acme_zone(domain: str) -> str:
    """The zone the farmer delegates to the node for DNS-01 of `*.<domain>`."""
    return "_acme-challenge." + check_name(domain, "domain")


class NodeDns:
    def __init__(
        self,
        run_dir: Path,
        listen: tuple[str, int],
        zones: list[str],
        records: Path,
        ns: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.listen = listen
        self.zones = [check_name(z, "zone") for z in zones]
        self.records = records
        self.ns = ns
        argv = netns.argv_in(ns, dnsprocess.serve_argv(listen, self.zones, None, records))
        self._proc = HostProcess(
            "dns", ["env", "-i", *argv], run_dir / "state.json", run_dir / "dns.log", backoff
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def _ready(self) -> bool:
        # Imported here: only a node that serves DNS-01 needs dnspython to ask its server.
        from zos.primitives import dns

        try:
            await asyncio.to_thread(
                dns.query, *self.listen, self.zones[0], "SOA", self.ns, timeout=0.5
            )
        except OSError:
            return False
        return True

    async def ensure(self, timeout: float = 20.0) -> int:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)
        try:
            return await self._proc.ensure(self._ready, timeout)
        except HostProcessError as e:
            raise NodeDnsError(f"dns: {e}") from None

    async def stop(self) -> None:
        await self._proc.stop()

    def close(self) -> None:
        self._proc.close()
