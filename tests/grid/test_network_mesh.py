"""A private network across three nodes of a local grid, one of them hidden, end to end.

One module-scoped grid (`zos grid up` with 3 nodes, `--hidden 1`). The owner deploys a
manifest with a machine on each node (busybox httpd, a page naming the machine); from
each machine's network namespace the others answer ping and HTTP (a TCP exchange), the
hidden node's machine through the access node. Another twin's machines on the same
nodes reach none of them. A "laptop" namespace on the grid's bridge, configured by
`wg-quick` (wireguard-go) from the file `zos network access` wrote, reaches every
machine; a teammate's laptop granted by key too; after `zos network revoke` the
laptop reaches none and the teammate's still works. After kill -9 of a node agent,
and after a reboot-like restart of a node (its containers gone, its namespaces
removed), `zos grid up` restarts it and the mesh works again with no other step.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
import pytest_asyncio
from gridhelpers import (
    GRID_MARKS,
    close_grid,
    env_for,
    quiet,
    runc_root,
    zos_cli,
)

from zos.client import GridClient
from zos.grid import procs
from zos.grid.local import up
from zos.grid.state import GridState, NodeEntry
from zos.identity import Identity, write_key_file
from zos.primitives import filesystem, links, netns, nsclient, wireguard

pytestmark = [*GRID_MARKS, pytest.mark.timeout(900), pytest.mark.asyncio(loop_scope="module")]

NET = "meshnet"
MESH = """\
name: {name}
network: {{name: {net}, ip_range: {ip_range}}}
machines:
"""
MACHINE = """\
  - name: {name}
    image: rootfs-{name}
    memory: 256M
    node: {node}
    entrypoint: /bin/busybox httpd -f -p 8080 -h /www
"""
WG_ENV = {
    "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go",
    "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
}
SETTLE = 90.0  # seconds a tunnel may take to come back after a node restarts


def ns_run(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def pings(ns: str, ip: str) -> bool:
    return ns_run(ns, "busybox", "ping", "-c", "2", "-W", "2", ip).returncode == 0


def page(ns: str, ip: str) -> str:
    """The page of the machine at `ip` as a TCP client in `ns` gets it ("" if none)."""
    try:
        return nsclient.http_get(ns, ip, 8080, timeout=3).text
    except OSError:
        return ""


def reaches(ns: str, ip: str, name: str) -> bool:
    return pings(ns, ip) and page(ns, ip) == f"machine {name}\n"


async def eventually(check: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    """Until `check()` holds (tunnels handshake, agents restart: no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(1)


async def all_ok(client: GridClient, node_id: int, timeout: float = SETTLE) -> None:
    """Until every deployment of `client` on the node is ok again (the node restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        deps = [d for d in await client.ps() if d.node_id == node_id]
        bad = [(d.name, w.name, w.state, w.message) for d in deps for w in d.workloads]
        bad = [b for b in bad if b[2] != "ok"]
        if not bad:
            return
        assert time.monotonic() < deadline, f"node {node_id} after its restart: {bad}"
        await asyncio.sleep(1)


@dataclass
class Machine:
    name: str
    ip: str
    ns: str  # its network namespace on its node
    node_id: int


@dataclass
class World:
    run: Path
    state: GridState
    owner: GridClient
    other: GridClient
    env: dict[str, str]
    mine: list[Machine] = field(default_factory=list)
    theirs: list[Machine] = field(default_factory=list)
    laptops: list[str] = field(default_factory=list)  # namespaces this test made

    def node(self, node_id: int) -> NodeEntry:
        return next(n for n in self.state.nodes if n.node_id == node_id)

    def mesh_works(self) -> bool:
        return all(reaches(a.ns, b.ip, b.name) for a in self.mine for b in self.mine if a is not b)


async def grid_up(state_dir: Path) -> tuple[GridState, bool]:
    """`zos grid up` with 3 nodes, one hidden, no gateway: starts it, or what stopped."""
    return await asyncio.to_thread(lambda: up(state_dir, 3, None, quiet, gateways=0, hidden=1))


def hidden_nodes(state: GridState) -> list[NodeEntry]:
    return [n for n in state.nodes if n.hidden]


async def deploy_mesh(
    run: Path, client: GridClient, state: GridState, name: str, ip_range: str, rootfs: Path
) -> list[Machine]:
    """A machine on every node of the grid, one deployment per node, one network."""
    text = MESH.format(name=name, net=f"{name}_{NET}", ip_range=ip_range)
    for i, n in enumerate(state.nodes):
        machine = f"{name}{i}"
        root = run / f"rootfs-{machine}"
        if not root.exists():
            subprocess.run(["cp", "-a", str(rootfs), str(root)], check=True)
            (root / "www").mkdir(exist_ok=True)
            (root / "www" / "index.html").write_text(f"machine {machine}\n")
        text += MACHINE.format(name=machine, node=n.node_id)
    manifest = run / f"{name}.yaml"
    manifest.write_text(text)
    done = await client.deploy_across(manifest)
    assert done.network.ok and {r.node_id for r in done.network.results} == {
        n.node_id for n in state.nodes
    }
    out = []
    for info in done.deployments:
        prefix = next(n.netns_prefix for n in state.nodes if n.node_id == info.node_id)
        for x in info.machines:
            ns = f"{prefix}c-{client.twin_id}-{info.contract_id}-{x.name}"
            out.append(Machine(x.name, x.ip, ns, info.node_id))
    return sorted(out, key=lambda m: m.name)


def laptop(world: World, name: str) -> str:
    """A namespace on the grid's bridge (as a laptop on the farm's LAN), its own address."""
    ns = f"{world.state.tag}-lap{name}"
    host = IPv4Interface(world.state.host_address)
    ip = IPv4Interface(
        f"{host.network.broadcast_address - 2 - len(world.laptops)}/{host.network.prefixlen}"
    )
    netns.create(ns)
    world.laptops.append(ns)
    links.set_up("lo", ns)
    port = f"{world.state.tag}l{name}"[:15]
    links.ensure_veth(port, "eth0", None, ns)
    links.set_master(port, world.state.bridge)
    links.set_up(port)
    links.set_addresses("eth0", [ip], ns)
    links.set_up("eth0", ns)
    return ns


def wg_up(ns: str, conf: Path) -> None:
    """`wg-quick up` of `conf` inside `ns` (the interface is named after the file)."""
    env = {**os.environ, **WG_ENV}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "wg-quick", "up", str(conf)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def wg_down(ns: str, conf: Path) -> None:
    env = {**os.environ, **WG_ENV}
    subprocess.run(
        ["ip", "netns", "exec", ns, "wg-quick", "down", str(conf)],
        capture_output=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    (wireguard.UAPI_DIR / f"{conf.stem}.sock").unlink(missing_ok=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path
) -> AsyncIterator[World]:
    run = tmp_path_factory.mktemp("mesh")
    clients: list[GridClient | None] = []
    laptops: list[str] = []  # the namespaces the tests make, removed at the end
    try:
        state, _ = await grid_up(run / "state")
        assert len(hidden_nodes(state)) == 1
        key_file = run / "owner.json"
        identity = Identity.generate()
        write_key_file(key_file, identity)
        for who in (identity, Identity.generate()):
            clients.append(await GridClient.connect(state_dir=run / "state", identity=who))
        owner, other = clients
        assert owner is not None and other is not None
        w = World(run, state, owner, other, {**env_for(run / "state", key_file), **WG_ENV})
        w.laptops = laptops
        w.mine = await deploy_mesh(run, owner, state, "mesh", "10.40.0.0/16", busybox_rootfs)
        w.theirs = await deploy_mesh(run, other, state, "them", "10.41.0.0/16", busybox_rootfs)
        yield w
    finally:
        for ns in laptops:
            for conf in run.glob("*.conf"):
                wg_down(ns, conf)
            netns.delete(ns)
        await close_grid(run / "state", clients)


async def test_machines_on_three_nodes_reach_each_other(world: World) -> None:
    assert len({m.node_id for m in world.mine}) == 3
    for a in world.mine:
        for b in world.mine:
            if a is not b:
                assert reaches(a.ns, b.ip, b.name), f"{a.name} -> {b.name}"


async def test_the_hidden_node_goes_through_the_access_node(world: World) -> None:
    [hidden] = hidden_nodes(world.state)
    plan, views = await world.owner.network_show(f"mesh_{NET}")
    access = plan.access_node
    assert access and access != hidden.node_id
    view = {v.node_id: v for v in views}
    # the hidden node dials its one peer, the access node, for the whole range
    [peer] = view[hidden.node_id].peers
    assert peer.what == f"node {access}" and peer.endpoint
    assert view[hidden.node_id].endpoint == ""
    # the access node has it as a peer that dials in; the third node routes it there
    assert any(p.what == f"node {hidden.node_id}" and not p.endpoint for p in view[access].peers)
    third = next(v for v in views if v.node_id not in (access, hidden.node_id))
    assert all(p.what != f"node {hidden.node_id}" for p in third.peers)
    # traffic flowed: every peer of every node has handshaken (ages from the nodes)
    assert all(
        p.handshake_age is not None for v in views for p in v.peers if p.what.startswith("node")
    )
    on_hidden = next(m for m in world.mine if m.node_id == hidden.node_id)
    on_third = next(m for m in world.mine if m.node_id == third.node_id)
    assert reaches(on_hidden.ns, on_third.ip, on_third.name)
    assert reaches(on_third.ns, on_hidden.ip, on_hidden.name)
    # `zos network show` prints the same, with the handshake ages
    shown = zos_cli(world.env, "network", "show", f"mesh_{NET}")
    assert shown.returncode == 0, shown.stderr
    assert f"node {hidden.node_id}: " in shown.stdout and "hidden" in shown.stdout
    assert "handshake never" not in shown.stdout.split("access ")[0]


async def test_another_twins_machines_reach_none(world: World) -> None:
    assert {m.node_id for m in world.theirs} == {m.node_id for m in world.mine}
    for a in world.theirs:  # their own network works ...
        assert all(reaches(a.ns, b.ip, b.name) for b in world.theirs if b is not a)
    for a in world.theirs:  # ... and reaches none of the owner's machines, nor back
        for b in world.mine:
            assert not pings(a.ns, b.ip) and not page(a.ns, b.ip), f"{a.name} -> {b.name}"
            assert not pings(b.ns, a.ip) and not page(b.ns, a.ip), f"{b.name} -> {a.name}"


async def test_laptops_by_access_file_and_by_grant_and_a_revoke(world: World) -> None:
    net = f"mesh_{NET}"
    conf = world.run / "zl1.conf"
    got = zos_cli(world.env, "network", "access", net, "-o", str(conf))
    assert got.returncode == 0, got.stderr
    text = conf.read_text()
    assert "AllowedIPs = 10.40.0.0/16, 100.64.0.0/16" in text and "PersistentKeepalive = 25" in text
    mine = laptop(world, "1")
    wg_up(mine, conf)
    for m in world.mine:
        await eventually(lambda m=m: reaches(mine, m.ip, m.name), f"laptop -> {m.name}")

    # a teammate's laptop, admitted by its public key only
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    public = subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
    ).stdout.strip()
    got = zos_cli(world.env, "network", "grant", net, "--wg-key", public, "--name", "alice")
    assert got.returncode == 0, got.stderr
    alice_conf = world.run / "zl2.conf"
    key_file = world.run / "alice.key"  # on alice's laptop: zos never reads it
    key_file.write_text(private)
    key_file.chmod(0o600)
    got = zos_cli(
        world.env, "network", "access", net, "--name", "alice",
        "--key-file-on-laptop", str(key_file), "-o", str(alice_conf),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert "PrivateKey" not in alice_conf.read_text()
    alice = laptop(world, "2")
    wg_up(alice, alice_conf)
    for m in world.mine:
        await eventually(lambda m=m: reaches(alice, m.ip, m.name), f"alice -> {m.name}")
    assert all(reaches(mine, m.ip, m.name) for m in world.mine)  # the laptop kept its access

    got = zos_cli(world.env, "network", "revoke", net, "--name", "laptop")
    assert got.returncode == 0, got.stderr
    for m in world.mine:
        assert not pings(mine, m.ip) and not page(mine, m.ip), f"revoked laptop -> {m.name}"
        assert reaches(alice, m.ip, m.name), f"alice -> {m.name} after the revoke"


def _reboot(node: NodeEntry) -> None:
    """What a reboot takes from a node: its processes, containers' state (/run), mounts
    and namespaces (the agent's own one too)."""
    for ns in [*netns.names(prefix=node.netns_prefix), node.netns]:
        for pid in subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True
        ).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        netns.delete(ns)
    root = runc_root(Path(node.data_dir))
    for c in root.iterdir() if root.is_dir() else []:
        subprocess.run(["runc", "--root", str(root), "delete", "--force", c.name], check=False)
    shutil.rmtree(root, ignore_errors=True)
    for m in reversed(filesystem.mounts_under(Path(node.data_dir))):
        subprocess.run(["umount", "-l", str(m.target)], check=False, capture_output=True)


async def restart(world: World, node: NodeEntry, reboot: bool) -> None:
    """kill -9 of the node's agent (and, for a reboot, what goes with the machine), then
    `zos grid up` again, which starts what stopped: nothing else is done by hand."""
    agent = next(p for p in world.state.procs if p.name == f"node{node.index}")
    os.kill(agent.pid, signal.SIGKILL)
    await asyncio.to_thread(procs.stop, agent)
    if reboot:
        await asyncio.to_thread(_reboot, node)
    world.state, restarted = await grid_up(Path(world.state.state_dir))
    assert restarted
    await all_ok(world.owner, node.node_id, 180)


async def test_the_mesh_comes_back_after_kill_9_of_the_access_nodes_agent(world: World) -> None:
    plan, _ = await world.owner.network_show(f"mesh_{NET}")
    await restart(world, world.node(plan.access_node), reboot=False)
    await eventually(world.mesh_works, "the mesh after kill -9 of the access node's agent")
    alice = world.laptops[-1]  # the teammate's laptop still on it (the tunnels kept)
    for m in world.mine:
        await eventually(lambda m=m: reaches(alice, m.ip, m.name), f"alice -> {m.name}")


async def test_the_mesh_comes_back_after_a_reboot_of_the_hidden_node(world: World) -> None:
    [hidden] = hidden_nodes(world.state)
    await restart(world, hidden, reboot=True)
    await eventually(world.mesh_works, "the mesh after the hidden node's reboot", 180)
