"""Client sockets made inside a network namespace, and a small HTTP GET over one.

A socket keeps the namespace it was created in, so the agent (or a test) can speak to a
server that is reachable only from inside a namespace, such as the proxy's admin
endpoint on that namespace's loopback, without moving any long-lived thread there.
Everything here blocks: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from ipaddress import ip_address

from zos.primitives import netns


def connect(ns: str | None, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP socket made in namespace `ns` (None: this one), connected to host:port."""
    family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET

    def make() -> socket.socket:
        return socket.socket(family, socket.SOCK_STREAM)

    sock = netns.run_in(ns, make) if ns else make()
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def udp_socket(ns: str | None, host: str) -> socket.socket:
    """An unconnected, non-blocking UDP socket made in namespace `ns`, of host's family."""
    family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET

    def make() -> socket.socket:
        return socket.socket(family, socket.SOCK_DGRAM)

    sock = netns.run_in(ns, make) if ns else make()
    sock.setblocking(False)
    return sock


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    peer_cert: bytes | None = None  # DER of the certificate the server showed (TLS only)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http_get(
    ns: str | None,
    host: str,
    port: int,
    path: str = "/",
    *,
    hostname: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> Response:
    """GET `path` from host:port through a socket made in `ns`.

    `hostname` is what the request names (the Host header and, with `tls`, the SNI and
    the name the certificate is checked against), as a client that resolved it to
    `host` would send; default: `host` itself.
    """
    name = hostname or host
    sock = connect(ns, host, port, timeout)
    try:
        peer = None
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=name)
            peer = sock.getpeercert(binary_form=True)
        conn = http.client.HTTPConnection(name, port, timeout=timeout)
        conn.sock = sock  # already connected (and wrapped): http.client uses it as is
        default = 443 if tls is not None else 80
        conn.request("GET", path, headers={"Host": name if port == default else f"{name}:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, peer)
    finally:
        sock.close()
