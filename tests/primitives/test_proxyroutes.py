"""Proxy routes: checked before anything is written, written as Traefik reads them, read
back from their files; the static settings keep everything on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zos.primitives.proxy import Dns01, Proxy, ProxySettings, _flags
from zos.primitives.proxyroutes import (
    HttpRoute,
    PassthroughRoute,
    RouteError,
    from_dynamic,
    parse_http_backend,
    parse_tcp_backend,
)


def test_routes_as_traefik_reads_them_and_back() -> None:
    http = HttpRoute("1-7-web", "App.Example.Test.", ("http://10.0.0.3:8080", "http://[fd00::3]"))
    assert http.host == "app.example.test"
    assert http.backends == ("http://10.0.0.3:8080", "http://[fd00::3]:80")
    d = http.to_dynamic()["http"]
    assert d["routers"]["1-7-web"] == {
        "rule": "Host(`app.example.test`)",
        "entryPoints": ["websecure"],
        "service": "1-7-web",
        "tls": {"certResolver": "http01"},
    }
    assert d["services"]["1-7-web"]["loadBalancer"]["servers"] == [
        {"url": "http://10.0.0.3:8080"},
        {"url": "http://[fd00::3]:80"},
    ]
    named = HttpRoute("n", "hello.gw.example.test", ("http://10.0.0.3",), "*.gw.example.test")
    tls = named.to_dynamic()["http"]["routers"]["n"]["tls"]
    assert tls == {"certResolver": "dns01", "domains": [{"main": "*.gw.example.test"}]}
    tcp = PassthroughRoute("p", "tls.example.test", ("10.0.0.3:8443",))
    router = tcp.to_dynamic()["tcp"]["routers"]["p"]
    assert router["rule"] == "HostSNI(`tls.example.test`)" and router["tls"] == {
        "passthrough": True
    }
    for route in (http, named, tcp):
        # What the file holds is what it was made from.
        text = yaml.safe_dump(route.to_dynamic())
        assert from_dynamic(route.name, yaml.safe_load(text)) == route


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: HttpRoute("a b", "x.example.test", ("http://10.0.0.1",)), "name 'a b'"),
        (lambda: HttpRoute("a", "x`) || Host(`y", ("http://10.0.0.1",)), "host"),
        (lambda: HttpRoute("a", "localhost", ("http://10.0.0.1",)), "fully qualified"),
        (lambda: HttpRoute("a", "x.example.test", ()), "backends: at least one"),
        (lambda: HttpRoute("a", "x.example.test", ("https://10.0.0.1",)), r"backends\[0\]"),
        (lambda: HttpRoute("a", "x.example.test", ("http://web:80",)), "not an IP address"),
        (lambda: HttpRoute("a", "x.example.test", ("http://10.0.0.1/admin",)), "no path"),
        (lambda: HttpRoute("a", "x.example.test", ("http://u:p@10.0.0.1",)), "credentials"),
        (lambda: HttpRoute("a", "x.example.test", ("http://10.0.0.1:0",)), "1-65535"),
        (lambda: HttpRoute("a", "x.example.test", ("http://0.0.0.0:80",)), "own namespace"),
        (lambda: HttpRoute("a", "x.example.test", ("http://[::]:80",)), "own namespace"),
        (lambda: HttpRoute("a", "x.example.test", ("http://224.0.0.1",)), "multicast"),
        (lambda: HttpRoute("a", "x.example.test", ("http://10.0.0.1",), "*.other.test"), "wild"),
        (lambda: HttpRoute("a", "x.test", ("http://10.0.0.1",), "*.test"), "wildcard"),
        (lambda: PassthroughRoute("a", "x.example.test", ("10.0.0.1",)), "IP:port"),
        (lambda: PassthroughRoute("a", "x.example.test", ("fd00::1:443",)), "brackets"),
        (lambda: PassthroughRoute("a", "x.example.test", ("10.0.0.1:99999",)), "1-65535"),
    ],
)
def test_bad_routes_are_refused_naming_the_field(make, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        make()


def test_backend_forms() -> None:
    assert parse_http_backend("http://10.0.0.1").address == "10.0.0.1:80"
    assert parse_http_backend("http://10.0.0.1:8080/").address == "10.0.0.1:8080"
    assert parse_tcp_backend("[fd00::1]:443").address == "[fd00::1]:443"


def test_static_settings_keep_traffic_here_and_admin_on_loopback(tmp_path: Path) -> None:
    settings = ProxySettings(
        tmp_path,
        acme_url="https://10.9.0.1:14000/dir",
        dns01=Dns01(tmp_path / "txt", ("10.9.0.1:53",)),
    )
    flags = dict(
        f.removeprefix("--").split("=", 1) for f in _flags(settings, tmp_path / "r", tmp_path)
    )
    assert flags["global.checknewversion"] == "false"
    assert flags["global.sendanonymoususage"] == "false"
    assert flags["entrypoints.traefik.address"] == "127.0.0.1:8082"
    assert flags["entrypoints.web.http.redirections.entrypoint.to"] == "websecure"
    assert flags["certificatesresolvers.http01.acme.caserver"] == "https://10.9.0.1:14000/dir"
    assert flags["certificatesresolvers.dns01.acme.dnschallenge.provider"] == "exec"
    assert flags["certificatesresolvers.dns01.acme.dnschallenge.resolvers"] == "10.9.0.1:53"
    # No resolver without DNS-01: a proxy without a domain asks for no wildcard.
    plain = _flags(ProxySettings(tmp_path), tmp_path / "r", tmp_path)
    assert not any("dns01" in f for f in plain)
    assert any(f.endswith("acme-v02.api.letsencrypt.org/directory") for f in plain)


async def test_a_route_naming_the_proxy_itself_or_a_taken_host_changes_nothing(
    tmp_path: Path,
) -> None:
    proxy = Proxy(ProxySettings(tmp_path / "proxy", admin_port=8082))
    (tmp_path / "proxy" / "routes").mkdir(parents=True)
    first = HttpRoute("first", "app.example.test", ("http://10.0.0.3:8080",))
    proxy._write(first)
    written = (tmp_path / "proxy" / "routes" / "first.yaml").stat().st_ino
    proxy._write(first)  # the same route again: the file is left alone (Traefik not reloaded)
    assert (tmp_path / "proxy" / "routes" / "first.yaml").stat().st_ino == written
    for backend in ("http://127.0.0.1:8082", "http://127.0.0.5:8082", "http://[::1]:443"):
        with pytest.raises(RouteError, match="is the proxy itself"):
            await proxy.set_route(HttpRoute("bad", "bad.example.test", (backend,)))
    with pytest.raises(RouteError, match="is the proxy itself"):
        await proxy.set_route(PassthroughRoute("bad", "bad.example.test", ("127.0.0.1:80",)))
    with pytest.raises(RouteError, match="already routed by 'first'"):
        await proxy.set_route(PassthroughRoute("second", "app.example.test", ("10.0.0.4:443",)))
    with pytest.raises(RouteError, match="no DNS-01"):
        await proxy.set_route(
            HttpRoute("n", "a.gw.example.test", ("http://10.0.0.3",), "*.gw.example.test")
        )
    with pytest.raises(RouteError, match=r"name '\.\./state'"):
        await proxy.remove_route("../state")
    assert sorted(proxy.routes()) == ["first"]
    assert sorted(p.name for p in (tmp_path / "proxy" / "routes").iterdir()) == ["first.yaml"]
