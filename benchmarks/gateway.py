"""Requests per second and latency through the gateway's proxy, beside the same load
straight to the backend, in one run.

Setup (all on this machine, `zos.grid.gatewaylab`): Traefik in a public namespace with
a certificate from a local pebble (HTTP-01, validated for real), caddy as the backend in
another namespace (HTTP on 8080, its own TLS on 8443), wrk in a third. Four loads of the
same length and concurrency, over kept-alive connections:

  backend, http          wrk -> caddy :8080                 (the baseline)
  gateway, https         wrk -> traefik :443 (TLS ends) -> caddy :8080
  gateway, https, fwd    wrk -> traefik :443 -> nsforward (dialling from the backend's
                         namespace, as for a backend on a private network) -> caddy :8080
                         (beside "gateway, https": what the forwarder adds)
  backend, https         wrk -> caddy :8443 (caddy's TLS)  (the passthrough baseline)
  gateway, passthrough   wrk -> traefik :443 (by SNI, unopened) -> caddy :8443

wrk resolves the names through a hosts file bind-mounted over /etc/hosts in a mount
namespace of its own, so it sends the right SNI and Host. Needs root.

    .venv/bin/python benchmarks/gateway.py [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zos.grid.acme import LocalAcme, self_signed
from zos.grid.gatewaylab import GatewayLab
from zos.primitives import netns, nsclient, nsforward
from zos.primitives.proxy import HttpRoute, PassthroughRoute, Proxy, ProxySettings

APP, NET, TLS = "app.example.test", "net.example.test", "tls.example.test"
FORWARD_PORT = 18080  # the forwarder's, on the proxy namespace's loopback
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(ns: str, url: str, hosts: dict[str, str], duration: int, conns: int, run: Path) -> dict:
    """One wrk run from namespace `ns`; requests/s, p50 and p99 (ms), errors."""
    hosts_file = run / f"hosts-{len(list(run.glob('hosts-*')))}"
    hosts_file.write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{duration}s", "--latency", url]
    inner = f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts && exec " + shlex.join(
        netns.argv_in(ns, argv)
    )
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]), "errors": errors}


def _wait_port(ns: str, host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            nsclient.connect(ns, host, port, 1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} in {ns}") from None
            time.sleep(0.05)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1

    run = Path(tempfile.mkdtemp(prefix="zos-bench-gateway-"))
    lab = GatewayLab(f"b{os.getpid() % 100000}")
    gw, be = lab.gateway_ip, lab.backend_ip
    acme = LocalAcme(run / "acme", lab.world_ip, lab.world_ns, addresses={APP: (gw,), NET: (gw,)})
    proxy = Proxy(
        ProxySettings(
            run / "proxy", lab.public_ns, acme_url=acme.directory_url, acme_ca=acme.api_ca
        )
    )
    caddy: subprocess.Popen[bytes] | None = None
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(lab.create)
        await asyncio.to_thread(acme.start)
        www = run / "www"
        www.mkdir()
        (www / "index.html").write_text("hello from the backend\n" * 20)  # ~460 bytes
        cert, key = run / "backend-cert.pem", run / "backend-key.pem"
        self_signed([TLS], cert, key)
        (run / "Caddyfile").write_text(
            "{\n admin off\n auto_https off\n}\n"
            f"http://:8080 {{\n bind {be}\n root * {www}\n file_server\n}}\n"
            f"https://{TLS}:8443 {{\n bind {be}\n tls {cert} {key}\n root * {www}\n"
            " file_server\n}\n"
        )
        caddy_argv = ["caddy", "run", "--config", str(run / "Caddyfile"), "--adapter", "caddyfile"]
        with open(run / "caddy.log", "wb") as log:
            caddy = subprocess.Popen(
                netns.argv_in(lab.backend_ns, caddy_argv), stdout=log, stderr=subprocess.STDOUT
            )
        await asyncio.to_thread(_wait_port, lab.backend_ns, be, 8443, caddy)
        mapping = nsforward.Mapping("127.0.0.1", FORWARD_PORT, be, 8080)
        forwarder = subprocess.Popen(nsforward.argv(lab.public_ns, lab.backend_ns, [mapping]))
        await asyncio.to_thread(_wait_port, lab.public_ns, "127.0.0.1", FORWARD_PORT, forwarder)

        await proxy.ensure()
        await proxy.set_route(HttpRoute("app", APP, (f"http://{be}:8080",)))
        await proxy.set_route(PassthroughRoute("tls", TLS, (f"{be}:8443",)))
        await proxy.set_route(HttpRoute("net", NET, (f"http://127.0.0.1:{FORWARD_PORT}",)))
        ca = ssl.create_default_context(cafile=str(acme.root_file))
        deadline = time.monotonic() + 120
        for host in (APP, NET):  # until pebble's certificates are in place (Traefik's before)
            while True:
                try:
                    await asyncio.to_thread(
                        nsclient.http_get, lab.world_ns, gw, 443, "/", hostname=host, tls=ca
                    )
                    break
                except (TimeoutError, ssl.SSLError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        # (label, url, hosts, the load it is compared with: None for a baseline)
        loads = [
            ("backend, http", f"http://{APP}:8080/", {APP: be}, None),
            ("gateway, https", f"https://{APP}/", {APP: gw}, "backend, http"),
            ("gateway, https, fwd", f"https://{NET}/", {NET: gw}, "gateway, https"),
            ("backend, https", f"https://{TLS}:8443/", {TLS: be}, None),
            ("gateway, passthrough", f"https://{TLS}/", {TLS: gw}, "backend, https"),
        ]
        print(f"wrk -t2 -c{args.connections} -d{args.duration}s, one after the other\n")
        print(f"{'load':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  compared with")
        done: dict[str, dict] = {}
        for label, url, hosts, against in loads:
            r = await asyncio.to_thread(
                wrk, lab.world_ns, url, hosts, args.duration, args.connections, run
            )
            done[label] = r
            if against is None:
                ratio = "(baseline)"
            else:
                base = done[against]
                ratio = (
                    f"{r['rps'] / base['rps']:.2f}x req/s, {r['p50'] - base['p50']:+.2f} ms p50"
                    f" (vs {against})"
                )
            print(f"{label:<22} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}  {ratio}")
            if r["errors"]:
                print(f"{'':<22} errors: {r['errors'].group(0)}")
    finally:
        await proxy.stop()
        for proc in (caddy, forwarder):
            if proc is not None:
                proc.kill()
                proc.wait()
        await asyncio.to_thread(acme.stop)
        await asyncio.to_thread(lab.destroy)
        subprocess.run(["rm", "-rf", str(run)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
