"""The gateway managers through the real proxy: Traefik in a public namespace, pebble
validating for real (`zos.grid.gatewaylab`), backends in other namespaces, the registry
a small fake (public config and name contracts are what the managers ask it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from netzm_helpers import ctx, deployment, network_data, unique_twin
from test_network_manager import attach_machine

from hangguard import HANG_GUARD
from zos.grid.acme import LocalAcme, self_signed, until_trusted
from zos.grid.gatewaylab import GatewayLab
from zos.node.gatewayproxy import AcmeSettings, NodeProxy
from zos.node.services import NameContractInfo, NodeServices
from zos.node.workloads import GatewayFqdnManager, GatewayNameManager, WorkloadError
from zos.node.workloads.network import NetworkManager
from zos.primitives import netns, nsclient
from zos.primitives.supervisor import Backoff
from zos.registry import PublicConfig

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]

DOMAIN = "gw.example.test"
SITE = "app.example.test"
TLS_SITE = "tls.example.test"
PAGE = "hello through the gateway\n"
CONTROL = IPv4Address("10.239.0.250")  # the grid's control plane, as the node knows it
TWIN = unique_twin()


@dataclass
class Registry:
    """What the managers ask the registry: the node's public config, name contracts."""

    config: PublicConfig | None = None
    names: dict[str, NameContractInfo] = field(default_factory=dict)

    async def twin_key(self, twin_id: int) -> bytes | None:
        return None

    async def node_contract(self, contract_id: int) -> Any:
        return None

    async def name_contract(self, name: str) -> NameContractInfo | None:
        return self.names.get(name)

    async def public_config(self) -> PublicConfig | None:
        return self.config

    def own(self, name: str, twin: int, active: bool = True) -> None:
        self.names[name] = NameContractInfo(len(self.names) + 1, name, twin, active)


@dataclass
class Site:
    lab: GatewayLab
    acme: LocalAcme
    registry: Registry
    node: NodeServices
    backend_cert: Path
    names: GatewayNameManager = field(init=False)
    fqdns: GatewayFqdnManager = field(init=False)

    def __post_init__(self) -> None:
        self.names = GatewayNameManager(self.node)
        self.fqdns = GatewayFqdnManager(self.node)

    @property
    def http_backend(self) -> str:
        return f"http://{self.lab.backend_ip}:8080"

    async def get(self, host: str, tls: bool = True) -> nsclient.Response:
        """From the world namespace to the gateway's address, by host name."""
        context = ssl.create_default_context(cafile=str(self.acme.root_file)) if tls else None
        port = 443 if tls else 80
        return await asyncio.to_thread(
            nsclient.http_get, self.lab.world_ns, self.lab.gateway_ip, port, "/",
            hostname=host, tls=context,
        )  # fmt: skip

    async def verified(self, host: str) -> nsclient.Response:
        """The page once the proxy shows a certificate pebble's root verifies."""
        return await until_trusted(lambda: self.get(host), HANG_GUARD)


def name_proxy(name: str, backends: list[str], **extra: Any) -> dict[str, Any]:
    data = {"name": name, "tls_passthrough": False, "backends": backends, **extra}
    return {"name": f"gw-{name}", "type": "gateway-name-proxy", "data": data}


def fqdn_proxy(fqdn: str, backends: list[str], passthrough: bool = False) -> dict[str, Any]:
    data = {"fqdn": fqdn, "tls_passthrough": passthrough, "backends": backends}
    return {"name": "gw", "type": "gateway-fqdn-proxy", "data": data}


_contract = iter(range(1000, 100000))


def one(workload: dict[str, Any], twin: int = TWIN, more: list[dict[str, Any]] | None = None):
    dep = deployment(twin, next(_contract), [*(more or []), workload])
    return dep, workload["name"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    if shutil.which("pebble") is None:
        pytest.skip("pebble is not installed (scripts/test installs it)")
    run = tmp_path_factory.mktemp("gwmanager")
    lab = GatewayLab(f"m{os.getpid() % 100000}")
    ip = lab.gateway_ip
    acme = lab.acme(run / "acme", (SITE, TLS_SITE), DOMAIN)
    registry = Registry(PublicConfig(ipv4=f"{ip}/24", gw4=lab.world_ip, domain=DOMAIN))
    backoff = Backoff(base=0.1, cap=1.0, stable=30.0)
    proxy = NodeProxy(
        run / "proxy", AcmeSettings(acme.directory_url, acme.api_ca), lab.public_ns, backoff
    )
    node = NodeServices(
        data_dir=run / "node",
        netns_prefix=f"zgm{os.getpid() % 10000}-",
        registry=registry,
        control_plane=(CONTROL,),
        backoff=backoff,
        proxy=proxy,
    )
    www = run / "www"
    www.mkdir()
    (www / "index.html").write_text(PAGE)
    cert, key = run / "backend-cert.pem", run / "backend-key.pem"
    self_signed([TLS_SITE], cert, key)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.to_thread(lab.create)
        await asyncio.to_thread(acme.start)
        be = lab.backend_ip
        for argv in (
            ["busybox", "httpd", "-f", "-p", f"{be}:8080", "-h", str(www)],
            ["openssl", "s_server", "-quiet", "-accept", f"{be}:8443", "-cert", str(cert),
             "-key", str(key), "-www"],
        ):  # fmt: skip
            servers.append(
                subprocess.Popen(netns.argv_in(lab.backend_ns, argv), stdout=subprocess.DEVNULL)
            )
        yield Site(lab, acme, registry, node, cert)
    finally:
        try:  # the rest goes whatever this leaves
            for manager in (GatewayNameManager(node), GatewayFqdnManager(node)):
                await manager.cleanup(set())
            await NetworkManager(node).cleanup(set())
        finally:
            await proxy.stop()
        for server in servers:
            server.kill()
            server.wait()
        await asyncio.to_thread(acme.stop)
        await asyncio.to_thread(lab.destroy)


async def test_a_name_proxy_serves_https_with_the_domains_wildcard_certificate(site: Site) -> None:
    site.registry.own("hello", TWIN)
    dep, name = one(name_proxy("hello", [site.http_backend]))
    result = await site.names.provision(ctx(site.node, dep, name))
    assert result == {"fqdn": f"hello.{DOMAIN}"}
    resp = await site.verified(f"hello.{DOMAIN}")
    assert resp.status == 200 and resp.text == PAGE
    cert = x509.load_der_x509_certificate(resp.peer_cert or b"")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [f"*.{DOMAIN}"]
    # Plain HTTP is redirected to HTTPS.
    redirect = await site.get(f"hello.{DOMAIN}", tls=False)
    assert redirect.status in (301, 308)
    assert redirect.headers["location"].startswith(f"https://hello.{DOMAIN}")
    # The route is gone with the workload.
    await site.names.deprovision(ctx(site.node, dep, name))
    assert (await site.get(f"hello.{DOMAIN}")).status == 404
    assert site.node.proxy is not None and site.node.proxy.routes() == {}


async def test_a_name_only_its_owner_can_use(site: Site) -> None:
    other = unique_twin()
    site.registry.own("taken", other)
    dep, name = one(name_proxy("taken", [site.http_backend]))
    with pytest.raises(WorkloadError, match=rf"name: 'taken' is owned by twin {other}, not twin"):
        await site.names.provision(ctx(site.node, dep, name))
    dep, name = one(name_proxy("nobody", [site.http_backend]))
    with pytest.raises(WorkloadError, match="name: there is no name contract for 'nobody'"):
        await site.names.provision(ctx(site.node, dep, name))
    site.registry.own("lapsed", TWIN, active=False)
    dep, name = one(name_proxy("lapsed", [site.http_backend]))
    with pytest.raises(WorkloadError, match="name: the name contract of 'lapsed' is cancelled"):
        await site.names.provision(ctx(site.node, dep, name))
    assert site.node.proxy is not None and site.node.proxy.routes() == {}


async def test_backends_that_lead_to_the_node_or_the_grid_are_refused(site: Site) -> None:
    site.registry.own("sneaky", TWIN)
    cases = {
        f"http://{site.lab.gateway_ip}:9000": "is one of this node's own addresses",
        "http://127.0.0.1:8082": "loopback or link-local",
        "http://169.254.1.1": "loopback or link-local",
        f"http://{CONTROL}:4222": "control plane",
        "http://100.127.0.2:80": "tenant uplinks",
        "http://backend.example.test": "is not an IP address",
        "https://10.1.2.3": "is not http://IP",
    }
    for backend, why in cases.items():
        dep, name = one(name_proxy("sneaky", [site.http_backend, backend]))
        with pytest.raises(WorkloadError, match=rf"backends\[1\]: .*{why}"):
            await site.names.provision(ctx(site.node, dep, name))
    dep, name = one(fqdn_proxy(TLS_SITE, ["127.0.0.1:443"], passthrough=True))
    with pytest.raises(WorkloadError, match=r"backends\[0\]: a loopback"):
        await site.fqdns.provision(ctx(site.node, dep, name))
    assert site.node.proxy is not None and site.node.proxy.routes() == {}


async def test_an_fqdn_proxy_gets_its_own_certificate_but_not_under_the_nodes_domain(
    site: Site,
) -> None:
    dep, name = one(fqdn_proxy(f"mine.{DOMAIN}", [site.http_backend]))
    with pytest.raises(WorkloadError, match=r"fqdn: 'mine\.gw\.example\.test' is under this"):
        await site.fqdns.provision(ctx(site.node, dep, name))
    dep, name = one(fqdn_proxy(SITE, [site.http_backend]))
    assert await site.fqdns.provision(ctx(site.node, dep, name)) == {}
    resp = await site.verified(SITE)
    assert resp.text == PAGE
    cert = x509.load_der_x509_certificate(resp.peer_cert or b"")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [SITE]
    # The same host for another workload: refused, naming the field.
    dep2, name2 = one(fqdn_proxy(SITE, [site.http_backend]))
    with pytest.raises(WorkloadError, match=r"fqdn: 'app\.example\.test' is already served"):
        await site.fqdns.provision(ctx(site.node, dep2, name2))
    await site.fqdns.deprovision(ctx(site.node, dep, name))


async def test_passthrough_delivers_the_backends_own_certificate(site: Site) -> None:
    dep, name = one(fqdn_proxy(TLS_SITE, [f"{site.lab.backend_ip}:8443"], passthrough=True))
    await site.fqdns.provision(ctx(site.node, dep, name))
    trust = ssl.create_default_context(cafile=str(site.backend_cert))
    resp = await asyncio.to_thread(
        nsclient.http_get, site.lab.world_ns, site.lab.gateway_ip, 443, "/",
        hostname=TLS_SITE, tls=trust,
    )  # fmt: skip
    assert resp.status == 200
    own = x509.load_pem_x509_certificate(site.backend_cert.read_bytes())
    assert resp.peer_cert == own.public_bytes(Encoding.DER)
    await site.fqdns.deprovision(ctx(site.node, dep, name))


async def test_no_public_config_no_gateway(site: Site) -> None:
    saved, site.registry.config = site.registry.config, None
    try:
        dep, name = one(fqdn_proxy(SITE, [site.http_backend]))
        with pytest.raises(WorkloadError, match="no public configuration"):
            await site.fqdns.provision(ctx(site.node, dep, name))
        site.registry.config = PublicConfig(ipv4=f"{site.lab.gateway_ip}/24")
        dep, name = one(name_proxy("hello", [site.http_backend]))
        with pytest.raises(WorkloadError, match="name: this node's public configuration has no"):
            await site.names.provision(ctx(site.node, dep, name))
    finally:
        site.registry.config = saved


async def test_a_backend_on_the_owners_private_network(site: Site) -> None:
    """Through a forwarder that dials from inside the owner's network namespace; another
    twin cannot name that network, and the route outlives the manager (an agent restart)."""
    subnet = IPv4Network("10.77.3.0/24")
    net = {"name": "net", "type": "network", "data": network_data(str(subnet))}
    dep = deployment(TWIN, next(_contract), [net])
    await NetworkManager(site.node).provision(ctx(site.node, dep, "net"))
    info = site.node.networks.lookup(TWIN, "net")
    machine = attach_machine(info.namespace, info.bridge, f"{subnet[2]}/24", str(subnet[1]))
    www = site.node.data_dir / "private-www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("from the private network\n")
    httpd = subprocess.Popen(
        netns.argv_in(
            machine, ["busybox", "httpd", "-f", "-p", f"{subnet[2]}:8080", "-h", str(www)]
        )
    )
    try:
        site.registry.own("private", TWIN)
        backend = f"http://{subnet[2]}:8080"
        dep, name = one(name_proxy("private", [backend], network="net"))
        await site.names.provision(ctx(site.node, dep, name))
        resp = await site.verified(f"private.{DOMAIN}")
        assert resp.text == "from the private network\n"
        # The route is kept by the proxy and the forwarder by its own process: a new
        # manager (a restarted agent) finds both, and serves on.
        await site.names.close()
        site.names = GatewayNameManager(site.node)
        assert (await site.get(f"private.{DOMAIN}")).text == "from the private network\n"
        await site.names.provision(ctx(site.node, dep, name))
        # Outside the network's subnet, or its gateway: refused.
        for bad, why in ((f"http://{subnet[1]}:80", "network's own gateway"),
                         ("http://10.77.4.2:80", "is not in network 'net'")):  # fmt: skip
            dep2, name2 = one(name_proxy("private", [bad], network="net"))
            with pytest.raises(WorkloadError, match=why):
                await site.names.provision(ctx(site.node, dep2, name2))
        # Another twin cannot point a proxy at it: the network is not theirs.
        other = unique_twin()
        site.registry.own("thief", other)
        dep3, name3 = one(name_proxy("thief", [backend], network="net"), twin=other)
        with pytest.raises(WorkloadError, match="network: network 'net' does not exist"):
            await site.names.provision(ctx(site.node, dep3, name3))
        await site.names.deprovision(ctx(site.node, dep, name))
        assert (await site.get(f"private.{DOMAIN}")).status == 404
        assert list((site.node.data_dir / "gateways").glob("*.proc")) == []
    finally:
        httpd.kill()
        httpd.wait()
        netns.delete(machine)


async def test_a_gateway_keeps_the_network_it_uses(site: Site) -> None:
    """The gateway counts as a user of the network it names: the network workload going
    does not remove it while the gateway reaches backends there; the gateway going
    then does, as a network's last machine does."""
    subnet = IPv4Network("10.77.5.0/24")
    net = {"name": "kept", "type": "network", "data": network_data(str(subnet))}
    net_dep = deployment(TWIN, next(_contract), [net])
    networks = NetworkManager(site.node)
    await networks.provision(ctx(site.node, net_dep, "kept"))
    info = site.node.networks.lookup(TWIN, "kept")
    site.registry.own("kept", TWIN)
    dep, name = one(name_proxy("kept", [f"http://{subnet[2]}:8080"], network="kept"))
    await site.names.provision(ctx(site.node, dep, name))
    await networks.deprovision(ctx(site.node, net_dep, "kept"))
    assert site.node.networks.lookup(TWIN, "kept").namespace == info.namespace
    assert site.node.networks.state.load(info.netid).users == []  # only the gateway holds it
    await site.names.deprovision(ctx(site.node, dep, name))
    assert site.node.networks.state.load(info.netid) is None
    assert not netns.exists(info.namespace)


async def test_a_name_no_longer_its_owners_loses_its_route(site: Site) -> None:
    """The node re-checks name contracts (hourly; here every 50 ms): a name cancelled or
    now another twin's is unrouted and its workload reported failed; one still its
    owner's is served on, and a registry that does not answer removes nothing."""
    failed: list[tuple[str, str]] = []

    async def report(wid: str, why: str) -> None:
        failed.append((wid, why))

    names = GatewayNameManager(site.node)
    names.watch.period = 0.05
    site.node.report_failure = report
    site.registry.own("stays", TWIN)
    site.registry.own("moves", TWIN)
    site.registry.own("ends", TWIN)
    deps = {n: one(name_proxy(n, [site.http_backend])) for n in ("stays", "moves", "ends")}
    try:
        for dep, name in deps.values():
            await names.provision(ctx(site.node, dep, name))
        for host in ("stays", "moves", "ends"):
            assert (await site.verified(f"{host}.{DOMAIN}")).text == PAGE
        other = unique_twin()
        site.registry.own("moves", other)
        site.registry.own("ends", TWIN, active=False)
        gone = {await asyncio.wait_for(names.watch.revoked.get(), 30) for _ in range(2)}
        wid = {n: ctx(site.node, dep, name).workload_id for n, (dep, name) in deps.items()}
        assert gone == {wid["moves"], wid["ends"]}
        assert (await site.get(f"moves.{DOMAIN}")).status == 404
        assert (await site.get(f"ends.{DOMAIN}")).status == 404
        assert (await site.get(f"stays.{DOMAIN}")).text == PAGE
        why = dict(failed)
        assert f"'moves' is now owned by twin {other}, not twin {TWIN}" in why[wid["moves"]]
        assert "the name contract of 'ends' is cancelled" in why[wid["ends"]]

        # The registry does not answer: a round removes nothing.
        async def silent(name: str) -> None:
            raise TimeoutError("no answer")

        site.registry.name_contract = silent  # type: ignore[method-assign]
        del site.registry.names["stays"]
        await names.watch.check()
        assert (await site.get(f"stays.{DOMAIN}")).text == PAGE
        assert names.watch.revoked.empty()
    finally:
        await names.close()
        site.node.report_failure = None
        vars(site.registry).pop("name_contract", None)
        for dep, name in deps.values():
            await names.deprovision(ctx(site.node, dep, name))
