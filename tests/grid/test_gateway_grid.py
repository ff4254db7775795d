"""Gateways on a local grid, end to end: `zos grid up` runs pebble and, as the farmer, gives
node 1 a public config with a domain; a twin deploys the example app's machine on node 1 and a
name proxy to it over its private network, and the page comes over HTTPS from the host
with a certificate that verifies against pebble's root (Python's TLS and curl). Another
twin cannot use the name; fqdn proxies are checked; passthrough reaches a backend's own
TLS; the routes survive Traefik and the agent being killed; removal stops the route."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from gridhelpers import GRID_MARKS, close_grid, quiet, web_rootfs

from hangguard import HANG_GUARD
from zos.bus import BusError
from zos.client import GridClient
from zos.client.manifest import ManifestError
from zos.grid import procs
from zos.grid.acme import self_signed, until_trusted
from zos.grid.local import up
from zos.grid.state import GridState, NodeEntry
from zos.gridtypes import Deployment, SignatureRequest, SignatureRequirement, Workload
from zos.identity import Identity
from zos.primitives import netns, nsclient, wireguard

pytestmark = [*GRID_MARKS, pytest.mark.timeout(600), pytest.mark.asyncio(loop_scope="module")]

PAGE = "<h1>through the gateway</h1>\n"
APP = """\
name: gwapp
node: {node}
network: {{name: gwnet, subnet: 10.20.77.0/24}}
machines:
  - name: web
    image: rootfs
    memory: 256M
    entrypoint: /bin/busybox httpd -f -v -p 8080 -h /www
"""


@dataclass
class World:
    state: GridState
    owner: GridClient
    other: GridClient
    machine_ip: str
    app_contract: int
    run: Path  # the example app's rootfs is here

    @property
    def gateway(self) -> NodeEntry:
        return self.state.nodes[0]

    @property
    def plain(self) -> NodeEntry:
        return self.state.nodes[1]

    @property
    def gateway_ip(self) -> str:
        return self.gateway.address.split("/")[0]

    @property
    def machine_ns(self) -> str:
        """The app's machine's network namespace on the gateway node."""
        wid = f"{self.owner.twin_id}-{self.app_contract}-web"
        return f"{self.gateway.netns_prefix}c-{wid}"

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.state.acme_root)

    async def get(self, host: str, context: ssl.SSLContext | None = None) -> nsclient.Response:
        """From the host, to the gateway node's address, by name (as `curl --resolve`)."""
        return await asyncio.to_thread(
            nsclient.http_get, None, self.gateway_ip, 443, "/", hostname=host,
            tls=context or self.trust(), timeout=5,
        )  # fmt: skip

    async def verified(self, host: str, timeout: float = HANG_GUARD) -> nsclient.Response:
        return await until_trusted(lambda: self.get(host), timeout)

    async def deploy(
        self, client: GridClient, node: NodeEntry, workloads: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Contract, sign, send, and wait until no workload is still init; the deployment."""
        assert client.registry is not None and client.bus is not None
        dep = Deployment(
            version=0,
            twin_id=client.twin_id,
            signature_requirement=SignatureRequirement(
                requests=[SignatureRequest(twin_id=client.twin_id, required=True, weight=1)],
                weight_required=1,
            ),
            workloads=[Workload.from_raw({"version": 0, **w}) for w in workloads],
        )
        contract = await client.registry.create_node_contract(node.node_id, dep.hash_hex())
        dep.contract_id = contract.id
        dep.sign(client.twin_id, client.identity)
        await client.bus.request(node.twin_id, "zos.deployment.deploy", dep.to_dict(), timeout=20)
        return await self.wait(client, node, contract.id)

    async def wait(
        self, client: GridClient, node: NodeEntry, contract_id: int, timeout: float = 60
    ) -> dict[str, Any]:
        assert client.bus is not None
        deadline = time.monotonic() + timeout
        while True:
            raw = await client.bus.request(
                node.twin_id, "zos.deployment.get", {"contract_id": contract_id}, timeout=20
            )
            if all(w["result"]["state"] not in ("", "init") for w in raw["workloads"]):
                return raw
            assert time.monotonic() < deadline, raw
            await asyncio.sleep(0.2)

    async def remove(self, client: GridClient, node: NodeEntry, contract_id: int) -> None:
        assert client.bus is not None and client.registry is not None
        payload = {"contract_id": contract_id}
        await client.bus.request(node.twin_id, "zos.deployment.delete", payload, timeout=20)
        deadline = time.monotonic() + 60
        while True:
            raw = await client.bus.request(node.twin_id, "zos.deployment.get", payload)
            if all(w["result"]["state"] == "deleted" for w in raw["workloads"]):
                break
            assert time.monotonic() < deadline, raw
            await asyncio.sleep(0.2)
        await client.registry.cancel_contract(contract_id)


def result(dep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w["result"] for w in dep["workloads"] if w["name"] == name)


def name_proxy(name: str, backends: list[str], **extra: Any) -> dict[str, Any]:
    data = {"name": name, "tls_passthrough": False, "backends": backends, **extra}
    return {"name": "gw", "type": "gateway-name-proxy", "data": data}


def fqdn_proxy(
    fqdn: str, backends: list[str], passthrough: bool = False, network: str | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"fqdn": fqdn, "tls_passthrough": passthrough, "backends": backends}
    if network:
        data["network"] = network
    return {"name": "gw", "type": "gateway-fqdn-proxy", "data": data}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path
) -> AsyncIterator[World]:
    run = tmp_path_factory.mktemp("gwgrid")
    state_dir = run / "state"
    owner = other = None
    try:
        state, _ = await asyncio.to_thread(up, state_dir, 2, None, quiet)
        assert state.acme_url and Path(state.acme_root).is_file()
        assert state.nodes[0].domain and not state.nodes[1].domain
        web_rootfs(busybox_rootfs, run / "rootfs", PAGE)
        (run / "app.yaml").write_text(APP.format(node=state.nodes[0].node_id))
        owner = await GridClient.connect(state_dir=state_dir, identity=Identity.generate())
        other = await GridClient.connect(state_dir=state_dir, identity=Identity.generate())
        info = await owner.deploy(run / "app.yaml")
        [machine] = info.machines
        yield World(state, owner, other, machine.ip, info.contract_id, run)
    finally:
        await close_grid(state_dir, [owner, other])


async def test_grid_up_gives_the_gateway_node_its_public_config(world: World) -> None:
    """Set by the farmer's signed transaction (the node runs with no flag for it), read
    back by anyone, and the one node `nodes(gateway=True)` lists."""
    assert world.owner.registry is not None
    node = await world.owner.registry.get_node(world.gateway.node_id)
    host = world.state.host_address.split("/")[0]
    assert (node.public_config.ipv4, node.public_config.gw4) == (world.gateway.address, host)
    assert node.public_config.domain == world.gateway.domain
    assert not (await world.owner.registry.get_node(world.plain.node_id)).public_config.gateway
    assert [n.id for n in await world.owner.nodes(gateway=True)] == [world.gateway.node_id]
    assert [n.id for n in await world.owner.nodes(gateway=False)] == [world.plain.node_id]
    [gateway] = [p for p in world.state.procs if p.name == f"node{world.gateway.index}"]
    assert not any("public-config" in arg for arg in gateway.argv)


async def test_a_name_proxy_over_https_to_a_machine_on_the_owners_network(world: World) -> None:
    assert world.owner.registry is not None
    name = f"hello{os.getpid()}"
    await world.owner.registry.create_name_contract(name)
    backend = f"http://{world.machine_ip}:8080"
    dep = await world.deploy(
        world.owner, world.gateway, [name_proxy(name, [backend], network="gwnet")]
    )
    fqdn = f"{name}.{world.gateway.domain}"
    assert result(dep, "gw")["state"] == "ok", dep
    assert result(dep, "gw")["data"] == {"fqdn": fqdn}
    resp = await world.verified(fqdn)
    assert resp.status == 200 and resp.text == PAGE
    # The same with curl, as the README shows it.
    curl = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", world.state.acme_root,
         "--resolve", f"{fqdn}:443:{world.gateway_ip}", f"https://{fqdn}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert curl.returncode == 0 and curl.stdout == PAGE, curl.stderr
    # `zos ps` shows where it is served.
    listed = {d.contract_id: d for d in await world.owner.ps()}
    assert [(g.url, g.state) for g in listed[dep["contract_id"]].gateways] == [
        (f"https://{fqdn}", "ok")
    ]

    # Another twin can neither take the name nor serve it.
    assert world.other.registry is not None
    with pytest.raises(BusError, match="is taken"):
        await world.other.registry.create_name_contract(name)
    stolen = await world.deploy(world.other, world.gateway, [name_proxy(name, [backend])])
    assert result(stolen, "gw")["state"] == "error"
    assert f"owned by twin {world.owner.twin_id}" in result(stolen, "gw")["message"]
    # Nor point a proxy at the owner's network with a name of its own.
    own = f"other{os.getpid()}"
    await world.other.registry.create_name_contract(own)
    sneaky = await world.deploy(
        world.other, world.gateway, [name_proxy(own, [backend], network="gwnet")]
    )
    assert "network 'gwnet' does not exist" in result(sneaky, "gw")["message"]
    assert (await world.get(fqdn)).text == PAGE  # the owner's route is untouched

    # Traefik killed: the agent starts it again, with every route.
    traefik = Path(world.gateway.data_dir) / "proxy" / "traefik" / "state.json"
    os.kill(json.loads(traefik.read_text())["pid"], signal.SIGKILL)
    assert (await world.verified(fqdn, timeout=60)).text == PAGE
    # The agent killed: Traefik (and the forwarder) serve on; a new agent rebuilds it all.
    node1 = next(p for p in world.state.procs if p.name == "node1")
    os.kill(node1.pid, signal.SIGKILL)
    await asyncio.to_thread(procs.stop, node1)
    assert (await world.get(fqdn)).text == PAGE
    state, restarted = await asyncio.to_thread(up, Path(world.state.state_dir), 2, None, quiet)
    assert restarted
    world.state = state
    again = await world.wait(world.owner, world.gateway, dep["contract_id"])
    assert result(again, "gw")["state"] == "ok"
    assert (await world.get(fqdn)).text == PAGE

    # Removed: the route is gone.
    await world.remove(world.owner, world.gateway, dep["contract_id"])
    assert (await world.get(fqdn)).status == 404


# The example machine again, under another deployment and network, with a gateway.
PUBLISHED = (
    APP.replace("gwapp", "{deployment}").replace(
        "gwnet, subnet: 10.20.77.0/24", "pubnet, subnet: 10.20.78.0/24"
    )
    + "gateways:\n  - {{name: {name}, machine: web, port: 8080{extra}}}\n"
)


def published(world: World, deployment: str, name: str, node: str = "", extra: str = "") -> Path:
    path = world.run / f"{deployment}-{name}.yaml"
    path.write_text(PUBLISHED.format(deployment=deployment, name=name, node=node or "null",
                                     extra=extra))  # fmt: skip
    return path


async def test_a_manifests_gateway_is_published_with_its_machine(world: World) -> None:
    """`gateways:` in a manifest: deployed on the node that serves gateways (none named),
    its name contract taken, the URL in what deploy returns; another twin's manifest with
    the name is refused naming the field; `rm` stops the route and frees the name."""
    assert world.owner.registry is not None and world.other.registry is not None
    name = f"pub{os.getpid()}"
    info = await world.owner.deploy(published(world, "pub", name))
    fqdn = f"{name}.{world.gateway.domain}"
    assert info.node_id == world.gateway.node_id
    assert [(g.name, g.url, g.state) for g in info.gateways] == [
        (f"gw_{name}", f"https://{fqdn}", "ok")
    ]
    assert (await world.owner.registry.get_name_contract(name)).owner_twin == world.owner.twin_id
    assert (await world.verified(fqdn)).text == PAGE
    # Deployed again (replaced): the same name, still served.
    again = await world.owner.deploy(published(world, "pub", name))
    assert again.contract_id != info.contract_id and again.gateways[0].state == "ok"
    assert (await world.verified(fqdn)).text == PAGE

    # Another twin: refused before anything is sent, naming the field.
    before = len(await world.other.ps())
    with pytest.raises(
        ManifestError,
        match=rf"gateways\[0\]\.name: name '{name}' is taken by twin {world.owner.twin_id}",
    ):
        await world.other.deploy(published(world, "theirs", name))
    assert len(await world.other.ps()) == before
    # A gateway on another node than its machine, named or picked because the machine's
    # node serves none, with a network fixed to one node (`subnet:`): refused before
    # anything is sent (`test_a_gateway_on_another_node_than_its_machine` deploys one).
    elsewhere = published(
        world, "theirs", f"x{name}", str(world.gateway.node_id), f", node: {world.plain.node_id}"
    )
    for far in (elsewhere, published(world, "theirs", f"x{name}", str(world.plain.node_id))):
        with pytest.raises(ManifestError, match=r"gateways\[0\]: served by node .*network\.subnet"):
            await world.other.deploy(far)
    assert len(await world.other.ps()) == before
    with pytest.raises(BusError, match="no name contract"):
        await world.other.registry.get_name_contract(f"x{name}")

    # Removed with its deployment: the route stops, the name is free again.
    await world.owner.rm("pub")
    assert (await world.get(fqdn)).status == 404
    await world.other.registry.create_name_contract(name)
    await world.other.registry.cancel_name_contract(name)


# The example machine on the node that serves no gateways, its network left to the
# planner: the gateway goes to the gateway node, the network with it.
SPAN = (
    APP.replace("gwapp", "{deployment}").replace("{{name: gwnet, subnet: 10.20.77.0/24}}",
                                                 "{{name: spannet, ip_range: 10.50.0.0/16}}")
    + "gateways:\n  - {{name: {name}, machine: web, port: 8080}}\n"
)  # fmt: skip


async def test_a_gateway_on_another_node_than_its_machine(world: World) -> None:
    """A one-node manifest whose machine's node serves no gateways: the client picks the
    gateway node, adds it to the network (its own part, the machine's node as its peer),
    deploys the gateway there with the backend at the machine's private address, and
    takes the name; HTTPS by name reaches the machine over the tunnel. `rm` frees the
    name, stops the route, and takes the network off the gateway node."""
    assert world.owner.registry is not None and world.other.registry is not None
    name = f"span{os.getpid()}"
    path = world.run / "span.yaml"
    path.write_text(SPAN.format(deployment="span", node=world.plain.node_id, name=name))
    info = await world.owner.deploy(path)
    fqdn = f"{name}.{world.gateway.domain}"
    assert info.node_id == world.plain.node_id and info.machines[0].ip.startswith("10.50.")
    assert [(g.url, g.state) for g in info.gateways] == [(f"https://{fqdn}", "ok")]
    assert (await world.owner.registry.get_name_contract(name)).owner_twin == world.owner.twin_id
    resp = await world.verified(fqdn)
    assert resp.status == 200 and resp.text == PAGE
    mine = [d for d in await world.owner.ps() if d.name == "span"]
    assert {d.node_id for d in mine} == {world.gateway.node_id, world.plain.node_id}
    [served] = [d for d in mine if d.node_id == world.gateway.node_id]
    assert not served.machines
    assert served.gateways[0].backends == [f"http://{info.machines[0].ip}:8080"]
    plan = await world.owner.network_service().current("spannet")
    assert plan is not None
    assert {n.node_id for n in plan.nodes} == {world.gateway.node_id, world.plain.node_id}

    await world.owner.rm("span")
    assert (await world.get(fqdn)).status == 404
    await world.other.registry.create_name_contract(name)  # free again
    await world.other.registry.cancel_name_contract(name)
    plan = await world.owner.network_service().current("spannet")
    assert plan is not None and [n.node_id for n in plan.nodes] == [world.plain.node_id]


async def test_a_manifest_over_several_nodes_publishes_a_gateway(world: World) -> None:
    """The same machine, placed by its own `node:` (a manifest spanning nodes, deployed
    with `deploy_across`), its gateway on the node it names."""
    assert world.owner.registry is not None
    name = f"mesh{os.getpid()}"
    path = world.run / "meshgw.yaml"
    text = SPAN.format(deployment="meshgw", node="null", name=name)
    text = text.replace(
        "    image: rootfs\n", f"    image: rootfs\n    node: {world.plain.node_id}\n"
    )
    path.write_text(text.replace("port: 8080}", f"port: 8080, node: {world.gateway.node_id}}}"))
    done = await world.owner.deploy_across(path)
    fqdn = f"{name}.{world.gateway.domain}"
    by_node = {d.node_id: d for d in done.deployments}
    assert set(by_node) == {world.gateway.node_id, world.plain.node_id}
    assert [g.url for g in by_node[world.gateway.node_id].gateways] == [f"https://{fqdn}"]
    assert (await world.verified(fqdn)).text == PAGE
    await world.owner.rm("meshgw")
    assert (await world.get(fqdn)).status == 404
    with pytest.raises(BusError, match="no name contract"):
        await world.owner.registry.get_name_contract(name)


def network_part(
    nodes: list[NodeEntry], i: int, subnets: list[str], keys: list[str], ports: list[int]
) -> dict[str, Any]:
    """Node `i`'s part of a network spanning `nodes`: its subnet, key and port, and each
    other node as a peer reached at its address on the grid bridge."""
    peers = [
        {
            "subnet": subnets[j],
            "wireguard_public_key": wireguard.public_key(keys[j]),
            "allowed_ips": [subnets[j], f"{wireguard.tunnel_address(subnets[j]).ip}/32"],
            "endpoint": f"{nodes[j].address.split('/')[0]}:{ports[j]}",
        }
        for j in range(len(nodes))
        if j != i
    ]
    data = {
        "ip_range": "10.20.0.0/16",
        "subnet": subnets[i],
        "wireguard_private_key": keys[i],
        "wireguard_listen_port": ports[i],
        "peers": peers,
    }
    return {"name": "meshnet", "type": "network", "data": data}


async def test_a_name_proxy_to_a_machine_on_another_node_of_the_network(world: World) -> None:
    """The owner's network on both nodes, joined by its WireGuard tunnel; the machine on
    the node without gateways, the name proxy (and the network's part) on the gateway
    node: HTTPS by name reaches the machine over the tunnel. Another twin's proxy
    cannot use the network there."""
    assert world.owner.registry is not None and world.other.registry is not None
    [app] = [d for d in await world.owner.ps() if d.contract_id == world.app_contract]
    nodes = [world.gateway, world.plain]
    subnets = ["10.20.90.0/24", "10.20.91.0/24"]
    keys = [base64.b64encode(os.urandom(32)).decode() for _ in nodes]
    ports = random.sample(range(40000, 60000), len(nodes))
    machine = {
        "name": "web",
        "type": "zmachine",
        "data": {
            "flist": app.machines[0].flist,
            "network": {"public_ip": "", "planetary": False,
                        "interfaces": [{"network": "meshnet", "ip": "10.20.91.2"}]},
            "size": 0,
            "compute_capacity": {"cpu": 1, "memory": 256 << 20},
            "mounts": [],
            "entrypoint": "/bin/busybox httpd -f -v -p 8080 -h /www",
            "env": {},
        },
    }  # fmt: skip
    far = await world.deploy(
        world.owner, world.plain, [network_part(nodes, 1, subnets, keys, ports), machine]
    )
    assert {w["name"]: w["result"]["state"] for w in far["workloads"]} == {
        "meshnet": "ok",
        "web": "ok",
    }, far
    name = f"far{os.getpid()}"
    await world.owner.registry.create_name_contract(name)
    backend = "http://10.20.91.2:8080"
    proxy = name_proxy(name, [backend], network="meshnet")
    near = await world.deploy(
        world.owner, world.gateway, [network_part(nodes, 0, subnets, keys, ports), proxy]
    )
    assert result(near, "gw")["state"] == "ok", near
    fqdn = f"{name}.{world.gateway.domain}"
    assert (await world.verified(fqdn)).text == PAGE
    # Another twin, its own name, pointed at the owner's network: not found for it.
    stolen = f"farx{os.getpid()}"
    await world.other.registry.create_name_contract(stolen)
    sneaky = await world.deploy(
        world.other, world.gateway, [name_proxy(stolen, [backend], network="meshnet")]
    )
    assert "network 'meshnet' does not exist" in result(sneaky, "gw")["message"]
    await world.remove(world.owner, world.gateway, near["contract_id"])
    assert (await world.get(fqdn)).status == 404
    await world.remove(world.owner, world.plain, far["contract_id"])


async def test_fqdn_proxies(world: World) -> None:
    backend = f"http://{world.machine_ip}:8080"
    fqdn = f"www.{world.gateway.sites}"
    # Under the node's own domain, or on a node without a public config: refused.
    under = await world.deploy(
        world.owner, world.gateway,
        [fqdn_proxy(f"x.{world.gateway.domain}", [backend])],
    )  # fmt: skip
    assert "is under this gateway's own domain" in result(under, "gw")["message"]
    plain = await world.deploy(world.owner, world.plain, [fqdn_proxy(fqdn, [backend])])
    assert "no public configuration" in result(plain, "gw")["message"]
    # A backend that is the node itself, or the grid's control plane: refused.
    host = world.state.host_address.split("/")[0]
    for bad in (f"http://{world.gateway_ip}:8082", f"http://{host}:80"):
        refused = await world.deploy(world.owner, world.gateway, [fqdn_proxy(fqdn, [bad])])
        assert result(refused, "gw")["state"] == "error"
        assert "backends[0]" in result(refused, "gw")["message"]
    # Its own certificate by HTTP-01 (the backend on the owner's network, as above).
    dep = await world.deploy(
        world.owner, world.gateway, [fqdn_proxy(fqdn, [backend], network="gwnet")]
    )
    assert result(dep, "gw")["state"] == "ok", dep
    assert (await world.verified(fqdn)).text == PAGE
    await world.remove(world.owner, world.gateway, dep["contract_id"])


async def test_passthrough_reaches_the_backends_own_tls(world: World, tmp_path: Path) -> None:
    """A TLS server in the machine's network namespace (as the tenant's own server would
    be), reached over the owner's network."""
    fqdn = f"tls.{world.gateway.sites}"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed([fqdn], cert, key)
    ip = world.machine_ip
    server = subprocess.Popen(
        netns.argv_in(world.machine_ns, ["openssl", "s_server", "-quiet", "-accept",
                      f"{ip}:8443", "-cert", str(cert), "-key", str(key), "-www"]),
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        dep = await world.deploy(
            world.owner, world.gateway, [fqdn_proxy(fqdn, [f"{ip}:8443"], True, "gwnet")]
        )
        assert result(dep, "gw")["state"] == "ok", dep
        trust = ssl.create_default_context(cafile=str(cert))
        resp = await until_trusted(lambda: world.get(fqdn, trust), 30)
        assert resp.status == 200
        own = x509.load_pem_x509_certificate(cert.read_bytes())
        assert resp.peer_cert == own.public_bytes(Encoding.DER)
        await world.remove(world.owner, world.gateway, dep["contract_id"])
    finally:
        server.kill()
        server.wait()


async def test_the_admin_endpoint_is_the_agents_only(world: World) -> None:
    """Not from the host, another node, or the tenant's own machine."""
    machine_ns = world.machine_ns
    assert netns.exists(machine_ns)
    for ns, host in (
        (None, world.gateway_ip),
        (world.plain.netns, world.gateway_ip),
        (machine_ns, "127.0.0.1"),
        (machine_ns, world.gateway_ip),
    ):
        with pytest.raises(OSError):
            await asyncio.to_thread(nsclient.connect, ns, host, 8082, 2)
    # The agent's namespace has it, on its loopback.
    sock = await asyncio.to_thread(nsclient.connect, world.gateway.netns, "127.0.0.1", 8082, 2)
    sock.close()
