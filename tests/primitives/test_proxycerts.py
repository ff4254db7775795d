"""Which route still lacks a certificate, read from Traefik's ACME storage as it writes it
(the proxy's own test shows the retry against Traefik and pebble)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from zos.primitives.proxycerts import NUDGE_FILE, AcmeRetry, certified, covers, storage_file
from zos.primitives.proxyroutes import DNS01, HTTP01, HttpRoute, PassthroughRoute, Route
from zos.primitives.supervisor import Backoff

URL = "https://acme.example.test/dir"
BACKEND = ("http://10.0.0.2:8080",)


def _store(acme: Path, resolver: str, *domains: dict[str, object], url: str = URL) -> None:
    certificates = [
        {"domain": d, "certificate": "LS0t", "key": "LS0t", "Store": "default"} for d in domains
    ]
    data = {resolver: {"Account": {"Email": ""}, "Certificates": certificates}}
    storage_file(acme, resolver, url).write_text(json.dumps(data))


def test_covers_as_traefik_matches() -> None:
    assert covers("app.example.test", "app.example.test")
    assert covers("*.gw.example.test", "hello.gw.example.test")
    assert covers("*.gw.example.test", "*.gw.example.test")
    assert not covers("*.gw.example.test", "a.b.gw.example.test")  # one label only
    assert not covers("*.gw.example.test", "gw.example.test")
    assert not covers("app.example.test", "other.example.test")


def test_certified_reads_every_resolver_of_this_ca_only(tmp_path: Path) -> None:
    assert certified(tmp_path, URL) == set()  # nothing stored yet
    _store(tmp_path, HTTP01, {"main": "App.example.test"})
    _store(tmp_path, DNS01, {"main": "*.gw.example.test", "sans": ["gw.example.test"]})
    _store(tmp_path, HTTP01, {"main": "old.example.test"}, url="https://old-ca.test/dir")
    assert certified(tmp_path, URL) == {"app.example.test", "*.gw.example.test", "gw.example.test"}
    storage_file(tmp_path, HTTP01, URL).write_text('{"http01": {"Certif')  # half written
    assert certified(tmp_path, URL) == {"*.gw.example.test", "gw.example.test"}
    no_certificates = {DNS01: {"Account": {}, "Certificates": None}}
    storage_file(tmp_path, DNS01, URL).write_text(json.dumps(no_certificates))
    assert certified(tmp_path, URL) == set()


def _retry(tmp_path: Path, routes: dict[str, Route]) -> AcmeRetry:
    routes_dir = tmp_path / "routes"
    routes_dir.mkdir(exist_ok=True)
    return AcmeRetry(lambda: routes, routes_dir, tmp_path, URL, Backoff(base=0.01, cap=0.05))


def test_missing_names_what_no_certificate_covers(tmp_path: Path) -> None:
    routes: dict[str, Route] = {
        "app": HttpRoute("app", "app.example.test", BACKEND),
        "hello": HttpRoute("hello", "hello.gw.example.test", BACKEND, "*.gw.example.test"),
        "under": HttpRoute("under", "under.gw.example.test", BACKEND),  # the wildcard serves it
        "pass": PassthroughRoute("pass", "tls.example.test", ("10.0.0.2:8443",)),
    }
    retry = _retry(tmp_path, routes)
    assert retry.missing() == {"app.example.test", "*.gw.example.test", "under.gw.example.test"}
    _store(tmp_path, DNS01, {"main": "*.gw.example.test"})
    assert retry.missing() == {"app.example.test"}
    _store(tmp_path, HTTP01, {"main": "app.example.test"})
    assert retry.missing() == set()


async def test_it_rewrites_its_file_while_a_certificate_is_missing_then_stops(
    tmp_path: Path,
) -> None:
    routes: dict[str, Route] = {"app": HttpRoute("app", "app.example.test", BACKEND)}
    retry = _retry(tmp_path, routes)
    retry.start()
    try:
        while retry.nudges < 3:
            await asyncio.sleep(0.01)
        nudge = (retry.routes_dir / NUDGE_FILE).read_text()
        assert f'"{retry.nudges}"' in nudge and "app" not in nudge  # changes no route
        _store(tmp_path, HTTP01, {"main": "app.example.test"})
        await asyncio.sleep(0.2)  # many times its longest delay
        settled = retry.nudges
        await asyncio.sleep(0.2)
        assert retry.nudges == settled
        # A new route: Traefik orders it on its own first; asked again only once it failed.
        routes["new"] = HttpRoute("new", "new.example.test", BACKEND)
        while retry.nudges == settled:
            await asyncio.sleep(0.01)
        assert retry.missing() == {"new.example.test"}
    finally:
        retry.stop()
    assert sorted(p.name for p in retry.routes_dir.iterdir()) == [NUDGE_FILE]  # no temporary
