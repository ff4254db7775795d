"""Certificates the proxy's routes still lack, and the nudge that makes Traefik order them.

Traefik orders a route's certificate when its dynamic configuration changes, and not
again after that attempt failed (traefik/traefik#7784): an ACME server that was
unreachable, a challenge router not loaded yet when the first attempt ran (under load,
on a fresh start), or a name whose DNS came later, leave the route on Traefik's default
certificate until some other route changes. `AcmeRetry` watches the ACME storage for
each TLS route's certificate and, while one is missing, rewrites a file of its own in
the watched directory (a middleware no router uses, its value a counter), which is a new
configuration: Traefik then tries every missing certificate again. The rewrites back off
(default 30 s doubling to an hour) so that a name which can never validate costs a CA
like Let's Encrypt a few attempts an hour at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from zos.primitives.proxyroutes import DNS01, HTTP01, HttpRoute, Route
from zos.primitives.supervisor import Backoff

log = logging.getLogger(__name__)

NUDGE_FILE = "_acme-retry.yml"  # not a route: routes are *.yaml with a letter or digit first
MIDDLEWARE = "zos-acme-retry"
RETRY = Backoff(base=30.0, cap=3600.0)


def storage_file(acme_dir: Path, resolver: str, acme_url: str) -> Path:
    """Where Traefik keeps `resolver`'s account and certificates: per CA, since an
    account (and what it ordered) belongs to one."""
    tag = hashlib.sha256(acme_url.encode()).hexdigest()[:12]
    return acme_dir / f"{resolver}-{tag}.json"


def wanted(route: Route) -> str | None:
    """The name a route's certificate must cover: its host, or its wildcard (DNS-01);
    None for passthrough (the backend's own certificate)."""
    if not isinstance(route, HttpRoute):
        return None
    return route.wildcard or route.host


def covers(certificate_name: str, name: str) -> bool:
    """As Traefik matches: equal, or a wildcard for exactly one more label."""
    if certificate_name == name:
        return True
    if not certificate_name.startswith("*."):
        return False
    label, _, parent = name.partition(".")
    return bool(label) and label != "*" and parent == certificate_name[2:]


def certified(acme_dir: Path, acme_url: str) -> set[str]:
    """Every name the storage holds a certificate for, whichever resolver ordered it (a
    host under a wildcard gets no order of its own: Traefik serves the wildcard); a
    storage file missing or half written (Traefik rewrites it) holds none yet."""
    found: set[str] = set()
    for resolver in (HTTP01, DNS01):
        try:
            data = json.loads(storage_file(acme_dir, resolver, acme_url).read_text())
            certificates = data[resolver]["Certificates"] or []
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for cert in certificates:
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                if cert["certificate"]:
                    domain = cert["domain"]
                    found.update(
                        str(n).lower() for n in [domain["main"], *(domain.get("sans") or [])]
                    )
    return found


class AcmeRetry:
    """While a route's certificate is missing, make Traefik try again, backing off."""

    def __init__(
        self,
        routes: Callable[[], dict[str, Route]],
        routes_dir: Path,
        acme_dir: Path,
        acme_url: str,
        backoff: Backoff = RETRY,
    ) -> None:
        self._routes = routes
        self.routes_dir = routes_dir
        self.acme_dir = acme_dir
        self.acme_url = acme_url
        self.backoff = backoff
        self.nudges = 0
        self._task: asyncio.Task[None] | None = None

    def missing(self) -> set[str]:
        """The names a route needs that no certificate in the storage covers."""
        need = {w for route in self._routes().values() if (w := wanted(route)) is not None}
        have = certified(self.acme_dir, self.acme_url)
        return {n for n in need if not any(covers(c, n) for c in have)}

    def nudge(self) -> None:
        """A new configuration for Traefik that changes no route."""
        self.nudges += 1
        text = (
            f"# Rewritten by the agent while a certificate is missing ({__name__}).\n"
            f"http:\n  middlewares:\n    {MIDDLEWARE}:\n      headers:\n"
            f'        customRequestHeaders:\n          X-Zos-Acme-Retry: "{self.nudges}"\n'
        )
        # Traefik loads no dotted *.tmp; a route's temporary is `.<name>.tmp`, and no
        # route name starts with "_", so the two never share a file.
        tmp = self.routes_dir / "._acme-retry.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.routes_dir / NUDGE_FILE)

    async def run(self) -> None:
        failures = 0
        waiting: set[str] = set()
        while True:
            await asyncio.sleep(self.backoff.delay(failures + 1))
            try:
                missing = await asyncio.to_thread(self.missing)
                if not missing or missing - waiting:
                    # All there, or a route new since the last look: Traefik is ordering
                    # its certificate on its own; look again after the shortest delay.
                    failures, waiting = 0, missing
                    continue
                log.info("proxy: no certificate yet for %s: asking again",
                         ", ".join(sorted(missing)))  # fmt: skip
                await asyncio.to_thread(self.nudge)
                failures, waiting = failures + 1, missing
            except OSError as e:  # the run directory went away under us (a wipe)
                log.warning("proxy: acme retry: %s", e)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
