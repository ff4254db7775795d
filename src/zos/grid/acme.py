"""A local ACME CA for the local grid and the tests: Debian's pebble, and the DNS it asks.

`LocalAcme` starts, on one address (in a network namespace, if given):
- a DNS server (`zos.primitives.dns`) that plays the world's DNS: the given names
  resolve to the gateway's address, and each `_acme-challenge.<domain>` is relayed to
  the node's own DNS server, as a resolver that followed the farmer's NS record would;
- pebble, with its own config and a TLS certificate made here for its API, validating
  challenges for real (HTTP-01 on port 80, DNS-01 through that DNS; never
  PEBBLE_VA_ALWAYS_VALID), without its random sleeps or nonce rejections.
Its issuing root is fetched from pebble's management endpoint after the start: a new
one every start, so nothing but this run's proxies trusts it.

Nothing here asks any server but these two: no packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import shutil
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zos.grid import procs
from zos.grid.natsserver import free_port
from zos.grid.state import Proc
from zos.primitives import dns, dnsprocess, netns, nsclient


class AcmeError(Exception):
    pass


T = TypeVar("T")


async def until_trusted(fetch: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
    """What `fetch` (an HTTPS request that checks the certificate) returns once it stops
    failing on TLS or the connection: until ACME is done a proxy shows its own default
    certificate, and while it (re)starts it is not there at all."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fetch()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


def self_signed(names: list[str], cert: Path, key: Path, days: int = 30) -> None:
    """A self-signed certificate (PEM files) for `names`: IP addresses or DNS names."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.touch(mode=0o600)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class LocalAcme:
    run_dir: Path
    host: str  # the address both listen on (the gateways must reach it)
    netns: str | None = None
    # Names the world resolves (`fqdn` or `*.domain`) to the gateway's addresses.
    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # `_acme-challenge.<domain>` -> (host, port) of the node's DNS server.
    delegations: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    dns_port: int = 0  # 0: a free port (53 in a namespace of its own)
    acme_port: int = 0  # 0: a free port (14000 in a namespace of its own)
    management_port: int = 0  # 0: a free port (15000 in a namespace of its own)
    dns_proc: Proc | None = None
    pebble_proc: Proc | None = None

    def __post_init__(self) -> None:
        self._ports()  # known from the start: the proxies' settings name them

    # --- where ----------------------------------------------------------------------------

    @property
    def directory_url(self) -> str:
        return f"https://{self._url_host}:{self.acme_port}/dir"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def api_ca(self) -> Path:
        """The certificate pebble's API shows: what an ACME client must trust to talk to it."""
        return self.run_dir / "api-cert.pem"

    @property
    def root_file(self) -> Path:
        """The root pebble issues under (PEM), fetched from its management endpoint."""
        return self.run_dir / "root.pem"

    @property
    def dns_address(self) -> tuple[str, int]:
        return self.host, self.dns_port

    def _ports(self) -> None:
        def pick(port: int, fixed: int) -> int:
            if port:
                return port
            return fixed if self.netns else free_port(self.host)

        self.dns_port = pick(self.dns_port, 53)
        self.acme_port = pick(self.acme_port, 14000)
        self.management_port = pick(self.management_port, 15000)

    # --- start and stop -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalAcme:
        if shutil.which("pebble") is None:
            raise AcmeError("pebble is not installed (apt-get install pebble)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_dns(timeout)
            self._start_pebble(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_dns(self, timeout: float) -> None:
        zones = sorted({name.removeprefix("*.") for name in self.addresses})
        argv = dnsprocess.serve_argv(
            (self.host, self.dns_port), zones, self.addresses, None, self.delegations
        )
        self.dns_proc = procs.spawn(
            "acme-dns", netns.argv_in(self.netns, argv), self.run_dir / "dns.log"
        )

        def answers() -> bool:
            name = zones[0] if zones else "localhost"
            with contextlib.suppress(OSError):
                dns.query(self.host, self.dns_port, name, "SOA", self.netns, timeout=0.5)
                return True
            return False

        self._wait(self.dns_proc, answers, timeout)

    def _start_pebble(self, timeout: float) -> None:
        key = self.run_dir / "api-key.pem"
        self_signed([self.host, "localhost"], self.api_ca, key)
        config = {
            "pebble": {
                "listenAddress": f"{self._url_host}:{self.acme_port}",
                "managementListenAddress": f"{self._url_host}:{self.management_port}",
                "certificate": str(self.api_ca),
                "privateKey": str(key),
                "httpPort": 80,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        conf = self.run_dir / "pebble.json"
        conf.write_text(json.dumps(config, indent=2))
        dns_at = f"{self._url_host}:{self.dns_port}"
        argv = netns.argv_in(self.netns, ["pebble", "-config", str(conf), "-dnsserver", dns_at])
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self.pebble_proc = procs.spawn("pebble", argv, self.run_dir / "pebble.log", env)
        tls = ssl.create_default_context(cafile=str(self.api_ca))

        def fetched() -> bool:
            with contextlib.suppress(OSError):
                resp = nsclient.http_get(
                    self.netns, self.host, self.management_port, "/roots/0", tls=tls, timeout=2
                )
                if resp.status == 200 and b"BEGIN CERTIFICATE" in resp.body:
                    self.root_file.write_bytes(resp.body)
                    return True
            return False

        self._wait(self.pebble_proc, fetched, timeout)

    def _wait(self, proc: Proc, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not procs.alive(proc):
                raise AcmeError(f"{proc.name} exited: {procs.tail(proc.log, 5)}")
            if time.monotonic() > deadline:
                raise AcmeError(f"{proc.name} did not answer in {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in (self.pebble_proc, self.dns_proc):
            if proc is not None:
                procs.stop(proc)
        self.pebble_proc = self.dns_proc = None
