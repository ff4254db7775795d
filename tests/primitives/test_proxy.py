"""The node's reverse proxy, for real: Traefik in a public namespace, certificates from
pebble (validated for real: HTTP-01 on :80, DNS-01 through the node's own DNS), backends
in another namespace, clients in a third (`zos.grid.gatewaylab`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509

from hangguard import HANG_GUARD
from zos.grid.acme import LocalAcme, self_signed, until_trusted
from zos.grid.gatewaylab import GatewayLab
from zos.primitives import netns, nsclient
from zos.primitives.dns import ChallengeRecords
from zos.primitives.nodedns import NodeDns, acme_zone
from zos.primitives.proxy import (
    Dns01,
    HttpRoute,
    PassthroughRoute,
    Proxy,
    ProxySettings,
    RouteError,
)
from zos.primitives.supervisor import Backoff

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]

DOMAIN = "gw.example.test"
PAGE = "hello from the backend\n"
ACME_RETRY = Backoff(base=0.5, cap=2.0)  # how soon a failed certificate is asked again
TLS_PAGE = b"HTTP/1.0 200 OK\r\nContent-Length: 21\r\n\r\nthe backend's own TLS"


@dataclass
class Gateway:
    lab: GatewayLab
    acme: LocalAcme
    dns: NodeDns
    records: Path
    proxy: Proxy
    backend_cert: Path
    http_backend: str
    tls_backend: str

    def ca(self, cafile: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(cafile or self.acme.root_file))

    async def get(
        self, host: str, path: str = "/", port: int = 443, ca: Path | None = None
    ) -> nsclient.Response:
        """From the world namespace, to the gateway's address, by host name."""
        tls = self.ca(ca) if port == 443 else None
        return await asyncio.to_thread(
            nsclient.http_get, self.lab.world_ns, self.lab.gateway_ip, port, path,
            hostname=host, tls=tls,
        )  # fmt: skip

    async def verified(self, host: str, timeout: float = HANG_GUARD) -> nsclient.Response:
        """The page once the proxy shows a certificate for `host` that pebble's root
        verifies (until ACME is done it shows its own default one)."""
        return await until_trusted(lambda: self.get(host), timeout)


async def _tls_backend(ns: str, ip: str, cert: Path, key: Path) -> asyncio.Server:
    """A server in `ns` that terminates TLS itself (what passthrough must reach)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(TLS_PAGE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def listener() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, 8443))
        s.listen(64)
        return s

    return await asyncio.start_server(serve, sock=netns.run_in(ns, listener), ssl=ctx)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    if shutil.which("pebble") is None:
        pytest.skip("pebble is not installed (scripts/test installs it)")
    run = tmp_path_factory.mktemp("gateway")
    lab = GatewayLab(f"t{os.getpid() % 100000}")
    ip = lab.gateway_ip
    names = ("app.example.test", "tls.example.test", "late.example.test", "lost-route.example.test")
    # lost-route.example.test is left out on purpose: the world cannot resolve it.
    acme = lab.acme(run / "acme", names[:3], DOMAIN)
    records = run / "dns01"
    dns = NodeDns(run / "dns", (ip, 53), [acme_zone(DOMAIN)], records, lab.public_ns)
    settings = ProxySettings(
        run / "proxy",
        lab.public_ns,
        acme_url=acme.directory_url,
        acme_ca=acme.api_ca,
        dns01=Dns01(records, (f"{lab.world_ip}:53",)),
    )
    proxy = Proxy(settings, Backoff(base=0.1, cap=1.0, stable=30.0), ACME_RETRY)
    www = run / "www"
    www.mkdir()
    (www / "index.html").write_text(PAGE)
    cert, key = run / "backend-cert.pem", run / "backend-key.pem"
    self_signed(["tls.example.test", f"tls2.{DOMAIN}"], cert, key)
    httpd = tls = gateway = None
    try:
        await asyncio.to_thread(lab.create)
        await asyncio.to_thread(acme.start)
        await dns.ensure()
        argv = ["busybox", "httpd", "-f", "-p", f"{lab.backend_ip}:8080", "-h", str(www)]
        httpd = subprocess.Popen(netns.argv_in(lab.backend_ns, argv))
        tls = await _tls_backend(lab.backend_ns, lab.backend_ip, cert, key)
        await proxy.ensure()
        gateway = Gateway(
            lab, acme, dns, records, proxy, cert,
            f"http://{lab.backend_ip}:8080", f"{lab.backend_ip}:8443",
        )  # fmt: skip
        # Routes whose certificates the tests wait for: ACME starts on all at once.
        await proxy.set_route(HttpRoute("app", names[0], (gateway.http_backend,)))
        await proxy.set_route(
            HttpRoute("hello", f"hello.{DOMAIN}", (gateway.http_backend,), f"*.{DOMAIN}")
        )
        await proxy.set_route(PassthroughRoute("pass", names[1], (gateway.tls_backend,)))
        yield gateway
    finally:
        await (gateway.proxy if gateway is not None else proxy).stop()  # a test may swap it
        await dns.stop()
        if tls is not None:
            tls.close()
        if httpd is not None:
            httpd.kill()
            httpd.wait()
        await asyncio.to_thread(acme.stop)
        await asyncio.to_thread(lab.destroy)


def _cert(der: bytes | None) -> x509.Certificate:
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _names(der: bytes | None) -> list[str]:
    san = _cert(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


async def test_https_by_host_name_with_a_certificate_pebble_issued(gw: Gateway) -> None:
    resp = await gw.verified("app.example.test")
    assert resp.status == 200 and resp.text == PAGE
    assert _names(resp.peer_cert) == ["app.example.test"]
    # As a person would check it: curl, the name resolved to the gateway, pebble's root.
    out = await netns.exec_in(
        gw.lab.world_ns, "curl", "-sS", "--resolve", f"app.example.test:443:{gw.lab.gateway_ip}",
        "--cacert", str(gw.acme.root_file), "https://app.example.test/index.html",
    )  # fmt: skip
    assert out == PAGE


async def test_http_redirects_to_https_but_not_the_acme_path(gw: Gateway) -> None:
    resp = await gw.get("app.example.test", "/some/page?x=1", port=80)
    assert resp.status in (301, 308)
    assert resp.headers["location"] == "https://app.example.test/some/page?x=1"
    challenge = await gw.get("app.example.test", "/.well-known/acme-challenge/none", port=80)
    assert challenge.status not in (301, 308) and PAGE not in challenge.text


async def test_passthrough_delivers_the_backends_own_certificate(gw: Gateway) -> None:
    backend_der = ssl.PEM_cert_to_DER_cert(gw.backend_cert.read_text())
    resp = await gw.get("tls.example.test", ca=gw.backend_cert)
    assert resp.peer_cert == backend_der
    assert resp.body == TLS_PAGE.split(b"\r\n\r\n", 1)[1]


async def test_a_wildcard_certificate_by_dns01_serves_every_name(gw: Gateway) -> None:
    hello = await gw.verified(f"hello.{DOMAIN}")
    assert hello.text == PAGE and _names(hello.peer_cert) == [f"*.{DOMAIN}"]
    await gw.proxy.set_route(
        HttpRoute("other", f"other.{DOMAIN}", (gw.http_backend,), f"*.{DOMAIN}")
    )
    other = await gw.verified(f"other.{DOMAIN}")
    assert other.peer_cert == hello.peer_cert  # the same certificate, not a second order
    # The hook cleaned its TXT value once pebble had checked it.
    assert ChallengeRecords(gw.records).names() == []
    await gw.proxy.remove_route("other")


def _failures(gw: Gateway, host: str) -> int:
    """How many times Traefik wrote that it could not get a certificate for `host`."""
    log = gw.proxy.run_dir / "traefik.log"
    lines = log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if "Unable to obtain" in line and host in line)


async def _until(what: str, check: Callable[[], bool], timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_no_certificate_for_a_name_that_does_not_lead_here(gw: Gateway) -> None:
    """pebble really validates: a host the world cannot resolve gets no certificate."""
    await gw.proxy.set_route(HttpRoute("lost", "lost-route.example.test", (gw.http_backend,)))
    lost = "lost-route.example.test"
    await _until("traefik never gave up on the certificate", lambda: _failures(gw, lost) >= 1, 120)
    with pytest.raises(ssl.SSLCertVerificationError):
        await gw.get("lost-route.example.test")
    await gw.proxy.remove_route("lost")


async def test_a_certificate_that_failed_is_ordered_again_once_acme_answers(gw: Gateway) -> None:
    """Traefik itself never retries a failed order until its configuration changes: the
    proxy's retry must, with nothing else changing here."""
    host = "late.example.test"  # HTTP-01 for its own name (under no wildcard served here)
    pebble = f"ip daddr {gw.acme.host} tcp dport {gw.acme.acme_port}"
    block = (
        "table inet zos_test_block {\n chain out {\n"
        f"  type filter hook output priority 0\n  {pebble} reject with tcp reset\n }}\n}}\n"
    )
    await netns.exec_in(gw.lab.public_ns, "nft", "-f", "-", input=block.encode())
    try:
        before = gw.proxy.acme_retry.nudges
        await gw.proxy.set_route(HttpRoute("late", host, (gw.http_backend,)))
        # The first order and at least one retry failed: the CA was unreachable.
        await _until("traefik never tried", lambda: _failures(gw, host) >= 2)
        assert gw.proxy.acme_retry.nudges > before
        with pytest.raises(ssl.SSLCertVerificationError):
            await gw.get(host)
    finally:
        await netns.exec_in(gw.lab.public_ns, "nft", "delete", "table", "inet", "zos_test_block")
    late = await gw.verified(host)
    assert late.text == PAGE and _names(late.peer_cert) == [host]
    # Every certificate there: the retry stops asking.
    await _until("the retry did not settle", lambda: not gw.proxy.acme_retry.missing())
    settled = gw.proxy.acme_retry.nudges
    await asyncio.sleep(3 * ACME_RETRY.cap)
    assert gw.proxy.acme_retry.nudges == settled
    await gw.proxy.remove_route("late")


async def test_a_removed_route_stops_serving(gw: Gateway) -> None:
    await gw.verified(f"hello.{DOMAIN}")  # the wildcard certificate exists
    await gw.proxy.set_route(HttpRoute("temp", f"temp.{DOMAIN}", (gw.http_backend,), f"*.{DOMAIN}"))
    assert (await gw.verified(f"temp.{DOMAIN}")).text == PAGE
    await gw.proxy.set_route(PassthroughRoute("temp-tls", f"tls2.{DOMAIN}", (gw.tls_backend,)))
    assert (await gw.get(f"tls2.{DOMAIN}", ca=gw.backend_cert)).status == 200

    assert await gw.proxy.remove_route("temp")
    assert await gw.proxy.remove_route("temp-tls")
    assert not await gw.proxy.remove_route("temp")  # gone already
    gone = await gw.get(f"temp.{DOMAIN}")
    assert gone.status == 404 and PAGE not in gone.text
    with pytest.raises(ssl.SSLCertVerificationError):  # the proxy's own certificate now
        await gw.get(f"tls2.{DOMAIN}", ca=gw.backend_cert)
    assert sorted(gw.proxy.routes()) == ["app", "hello", "pass"]


async def _all_served(gw: Gateway) -> list[bytes | None]:
    app = await gw.verified("app.example.test")
    hello = await gw.verified(f"hello.{DOMAIN}")
    passed = await gw.get("tls.example.test", ca=gw.backend_cert)
    assert app.text == PAGE and hello.text == PAGE and passed.status == 200
    return [app.peer_cert, hello.peer_cert]


async def test_killed_traefik_comes_back_with_every_route(gw: Gateway) -> None:
    before = await _all_served(gw)
    old = gw.proxy.pid
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while gw.proxy.pid in (0, old) or not gw.proxy.alive():
        assert time.monotonic() < deadline, "traefik was not restarted"
        await asyncio.sleep(0.05)
    await gw.proxy.ensure()  # answering again
    assert gw.proxy.restarts >= 1
    # Every route again, with the certificates it had (kept, not ordered anew).
    assert await _all_served(gw) == before


async def test_a_new_agent_finds_the_running_proxy(gw: Gateway) -> None:
    pid = gw.proxy.pid
    gw.proxy.close()  # the agent goes away; Traefik keeps serving
    assert (await gw.get("app.example.test")).status == 200
    gw.proxy = Proxy(gw.proxy.settings, Backoff(base=0.1, cap=1.0, stable=30.0))
    assert await gw.proxy.ensure() == pid
    assert sorted(gw.proxy.routes()) == ["app", "hello", "pass"]


async def test_the_admin_endpoint_answers_the_agent_only(gw: Gateway) -> None:
    assert (await gw.proxy.admin_get("/ping")).text == "OK"
    assert "traefik_" in (await gw.proxy.admin_get("/metrics")).text
    router = await gw.proxy.router("app", "http")
    assert router is not None and router["status"] == "enabled"
    port = gw.proxy.settings.admin_port
    # Other namespaces: neither the gateway's address nor their own loopback leads there.
    for ns, host in (
        (gw.lab.world_ns, gw.lab.gateway_ip),
        (gw.lab.backend_ns, gw.lab.gateway_ip),
        (gw.lab.world_ns, "127.0.0.1"),
    ):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(nsclient.connect, ns, host, port, 5)
    # Nor can a tenant's route lead the proxy to it (or to itself).
    for backend in (f"http://127.0.0.1:{port}", f"http://{gw.lab.gateway_ip}:443"):
        with pytest.raises(RouteError, match="is the proxy itself"):
            await gw.proxy.set_route(HttpRoute("sneaky", f"sneaky.{DOMAIN}", (backend,)))
    with pytest.raises(RouteError, match="own namespace"):
        HttpRoute("sneaky", f"sneaky.{DOMAIN}", (f"http://0.0.0.0:{port}",))
    assert "sneaky" not in gw.proxy.routes()
