"""`zos grid up` / `zos grid down`: a whole grid on this machine.

up: a host bridge; a fresh registry key (`<state>/registry-key.json`, mode 0600);
nats-server with JetStream on the bridge's host address, its authorization naming that
key (unless `nats` names one to join: then its operator configured it for the registry
key given as `registry_key_file`); the registry; a farm with a fresh owner key; the hub;
the web explorer (on the host's loopback); the port forwarder; N node agents, each in
its own network namespace with its own address on the bridge, the farm's join token
naming the registry key they pin. Every process is detached (own session) and logs to
`<state>/logs/`; `<state>/grid.json` records them after every step.

down: stops the nodes, lets each node remove what it made (containers, mounts,
namespaces), stops the rest, sweeps namespaces and links by the grid's prefix and
mounts and loop devices under the state dir, and removes the state dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from zos.grid import hostnet, procs
from zos.grid.acme import LocalAcme
from zos.grid.natsserver import NatsServer, free_port, nats_server_binary
from zos.grid.state import (
    REGISTRY_KEY_FILE,
    Forward,
    GridState,
    NodeEntry,
    Proc,
    StateError,
    edit_forwards,
    grid_tag,
    load,
    save,
)
from zos.identity import Identity, KeyError_, load_key_file, write_key_file
from zos.primitives.nodedns import acme_zone
from zos.primitives.trees import remove_tree

GiB = 1 << 30
Say = Callable[[str], None]


class GridError(Exception):
    """`zos grid` could not do what was asked; the message says why and what to do."""


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    with open(state_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GridError(f"another `zos grid` command is running on {state_dir}") from None
        yield


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def stopped(state: GridState) -> list[str]:
    """Processes of a grid that are not running (empty: all are)."""
    return [p.name for p in state.procs if not procs.alive(p)]


def _wait_port(host: str, port: int, proc: Proc, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(proc):
            raise GridError(f"{proc.name} exited:\n{procs.tail(proc.log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
            return
        time.sleep(0.1)
    raise GridError(f"{proc.name} did not listen on {host}:{port} in {timeout}s")


def _node_memory(count: int) -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(GiB // 2, min(2 * GiB, total // (count + 2)))


def up(
    state_dir: Path,
    nodes: int = 2,
    nats: str | None = None,
    say: Say = print,
    timeout: float = 120.0,
    registry_key_file: Path | None = None,
    gateways: int = 1,
    hidden: int = 0,
) -> tuple[GridState, bool]:
    """Start a grid (or find the running one); returns it and whether it was started now.

    Joining `nats` needs the key its servers name as the registry's (`registry_key_file`).
    The first `gateways` nodes get a public config with a domain and serve gateways,
    with certificates from the grid's own ACME CA (pebble). The last `hidden` nodes sit
    behind a NAT router each (no public endpoint; never gateways).
    """
    state_dir = Path(state_dir).absolute()
    if not 1 <= nodes <= 16:
        raise GridError(f"--nodes: {nodes} is not between 1 and 16")
    if not 0 <= hidden < nodes:
        raise GridError(
            f"--hidden: {hidden} must be from 0 to {nodes - 1} (a hidden node's networks "
            "need a public node as their access node)"
        )
    registry = _registry_identity(nats, registry_key_file)
    if os.geteuid() != 0:
        raise GridError("zos grid up needs root (network namespaces, mounts, containers)")
    with _locked(state_dir):
        try:
            old = load(state_dir)
        except StateError as e:
            raise GridError(str(e)) from None
        if old is not None:
            if old.ready and not stopped(old):
                if len(old.nodes) != nodes:
                    say(
                        f"the running grid has {len(old.nodes)} nodes; to have {nodes}, "
                        "`zos grid down` first"
                    )
                return old, False
            if old.ready:
                return _resume(old, say, timeout), True
            say("a previous grid here is incomplete: removing it first")
            _down(state_dir, say)
            state_dir.mkdir(parents=True, exist_ok=True)
            state_dir.chmod(0o700)
        try:
            return _up(state_dir, nodes, nats, registry, say, timeout, gateways, hidden), True
        except BaseException:
            say("grid up failed: removing what was started")
            _down(state_dir, say, keep_logs=True)
            raise


def _registry_identity(nats: str | None, key_file: Path | None) -> Identity:
    if nats and key_file is None:
        raise GridError(
            "--nats needs --registry-key-file: the registry key its servers are configured "
            "for (`zos registry nats-config --key-file F` prints their authorization block)"
        )
    if key_file is None:
        return Identity.generate()
    try:
        return load_key_file(key_file)
    except KeyError_ as e:
        raise GridError(f"--registry-key-file: {e}") from None


def _up(
    state_dir: Path,
    count: int,
    nats: str | None,
    registry: Identity,
    say: Say,
    timeout: float,
    gateways: int = 1,
    hidden: int = 0,
) -> GridState:
    tag = grid_tag(state_dir)
    subnet = hostnet.pick_subnet(tag)
    host = IPv4Interface(f"{subnet[1]}/{subnet.prefixlen}")
    host_ip = str(host.ip)
    logs = state_dir / "logs"
    state = GridState(
        tag=tag,
        state_dir=str(state_dir),
        nats_url=nats or "",
        external_nats=bool(nats),
        bridge=hostnet.bridge_name(tag),
        host_address=str(host),
        registry_key=registry.public_hex,
    )
    save(state)
    key_file = state_dir / REGISTRY_KEY_FILE
    write_key_file(key_file, registry)
    hostnet.ensure_bridge(tag, host)
    say(f"bridge {state.bridge} {host}")

    if not nats:
        server = NatsServer(
            store_dir=state_dir / "nats",
            registry_key=registry.public_key,
            host=host_ip,
            name=tag,
            log_file=logs / "nats.log",
        )
        logs.mkdir(parents=True, exist_ok=True)
        server.start()
        assert server.pid is not None
        state.procs.append(
            Proc(
                name="nats",
                pid=server.pid,
                start_time=procs.start_time(server.pid),
                log=str(logs / "nats.log"),
                argv=[nats_server_binary() or "nats-server", "-c", str(server.conf_path)],
            )
        )
        state.nats_url = server.url
        save(state)
        say(f"nats   {state.nats_url} (JetStream in {state_dir / 'nats'})")

    reg = procs.spawn(
        "registry",
        _py("zos.cli", "registry", "serve", "--nats", state.nats_url, "--key-file", str(key_file)),
        logs / "registry.log",
    )
    state.procs.append(reg)
    save(state)
    farmer = Identity.generate()
    state.farmer_seed = farmer.seed.hex()
    farm_id, farm_name, token = asyncio.run(_farm(state, farmer, reg, timeout))
    state.farm_id, state.farm_name = farm_id, farm_name
    save(state)
    say(f"registry on {state.nats_url}; farm {farm_id} ({farm_name})")

    hub_port = free_port(host_ip)
    hub = procs.spawn(
        "hub",
        _py(
            "zos.cli",
            "hub",
            "serve",
            "--root",
            str(state_dir / "hub"),
            "--listen",
            f"{host_ip}:{hub_port}",
            "--nats",
            state.nats_url,
            "--registry-key",
            state.registry_key,
        ),
        logs / "hub.log",
    )
    state.procs.append(hub)
    state.hub_url = f"http://{host_ip}:{hub_port}"
    save(state)
    _wait_port(host_ip, hub_port, hub)
    say(f"hub    {state.hub_url}")
    gateway_nodes = _gateway_nodes(tag, host, min(gateways, count - hidden))
    acme = _start_acme(state, gateway_nodes)
    say(f"acme   {state.acme_url} (pebble; its root: {state.acme_root})")
    _guard_host(state)

    _start_explorer(state)
    say(f"explorer {state.explorer_url}")

    state.procs.append(
        procs.spawn(
            "forward", _py("zos.grid.forward", "--state-dir", str(state_dir)), logs / "forward.log"
        )
    )
    save(state)

    memory = _node_memory(count)
    node_nats, relays = _relays(nats) if nats else (state.nats_url, [])
    # The token goes to the nodes in a file of the state dir (0600), never in their argv.
    token_file = state_dir / "farm-token"
    token_file.touch(0o600)
    token_file.write_text(token)
    for i in range(1, count + 1):
        is_hidden = i > count - hidden
        ns, addr, veth = _ensure_node(tag, i, host, is_hidden)
        if relays:
            _relay_into(state_dir, ns, relays)
        data_dir = state_dir / "nodes" / f"node{i}"
        entry = NodeEntry(
            index=i,
            netns=ns,
            address=str(addr),
            host_veth=veth,
            data_dir=str(data_dir),
            netns_prefix=f"{tag}-{i}-",
            hidden=is_hidden,
            **gateway_nodes.get(i, {}),
        )
        argv = [
            "nsenter",
            f"--net=/var/run/netns/{ns}",
            "--",
            *_py(
                "zos.cli",
                "node",
                "run",
                "--farm-id",
                str(farm_id),
                "--nats",
                node_nats,
                "--data-dir",
                str(data_dir),
                "--join-token-file",
                str(token_file),
                "--netns-prefix",
                entry.netns_prefix,
                # the grid's hub: the one store a tenant's flist may use at the host's address
                "--store",
                state.hub_url,
                "--heartbeat",
                "2",
                "--cores",
                "2",
                "--memory",
                str(memory),
                "--disk",
                str(20 * GiB),
                "--acme-url",
                state.acme_url,
                "--acme-ca",
                str(acme.api_ca),
            ),
        ]
        state.procs.append(procs.spawn(f"node{i}", argv, logs / f"node{i}.log"))
        state.nodes.append(entry)
        save(state)
    asyncio.run(_wait_nodes(state, timeout))
    asyncio.run(_set_public_configs(state))
    for n in state.nodes:
        say(
            f"node{n.index}  node {n.node_id} (twin {n.twin_id}) at {n.address.split('/')[0]}"
            f" in namespace {n.netns}{' (hidden: behind NAT)' if n.hidden else ''}"
        )
    state.ready = True
    save(state)
    return state


def _start_explorer(state: GridState) -> None:
    """The web explorer on the host's loopback, reading the registry as a twin of its own
    (its key made on first start in the state dir), the registry key pinned as the hub's."""
    state_dir = Path(state.state_dir)
    port = free_port("127.0.0.1")
    argv = _py(
        "zos.cli",
        "explorer",
        "serve",
        "--nats",
        state.nats_url,
        "--registry-key",
        state.registry_key,
        "--key-file",
        str(state_dir / "explorer-key.json"),
        "--listen",
        f"127.0.0.1:{port}",
    )
    proc = procs.spawn("explorer", argv, state_dir / "logs" / "explorer.log")
    state.procs.append(proc)
    state.explorer_url = f"http://127.0.0.1:{port}"
    save(state)
    _wait_port("127.0.0.1", port, proc)


def _gateway_nodes(tag: str, host: IPv4Interface, count: int) -> dict[int, dict[str, str]]:
    """Domain and sites zone of each gateway node (index from 1)."""
    return {i: {"domain": f"gw{i}.{tag}.test", "sites": f"site{i}.{tag}.test"}
            for i in range(1, count + 1)}  # fmt: skip


def _node_ip(host: IPv4Interface, index: int) -> str:
    return str(host.network[hostnet.NODE_BASE + index])


def _start_acme(state: GridState, gateways: dict[int, dict[str, str]]) -> LocalAcme:
    """pebble and the world's DNS it asks, on the host's bridge address: every gateway
    node's names resolve to its address, its `_acme-challenge` zone to its own DNS."""
    host = IPv4Interface(state.host_address)
    addresses: dict[str, tuple[str, ...]] = {}
    delegations: dict[str, tuple[str, int]] = {}
    for i, names in gateways.items():
        ip = _node_ip(host, i)
        addresses[f"*.{names['domain']}"] = (ip,)
        addresses[f"*.{names['sites']}"] = (ip,)
        delegations[acme_zone(names["domain"])] = (ip, 53)
    acme = LocalAcme(Path(state.state_dir) / "acme", str(host.ip), None, addresses, delegations)
    acme.start()
    for proc in (acme.dns_proc, acme.pebble_proc):
        assert proc is not None
        state.procs.append(proc)
    state.acme_url, state.acme_root = acme.directory_url, str(acme.root_file)
    save(state)
    return acme


def _resume(state: GridState, say: Say, timeout: float) -> GridState:
    """Start again what stopped (a crash, a reboot), with the same state: the registry's
    JetStream data, the nodes' data dirs (they bring their deployments back), the ports."""
    dead = [p for p in state.procs if not procs.alive(p)]
    say(f"restarting what stopped: {', '.join(p.name for p in dead)}")
    state_dir = Path(state.state_dir)
    host = IPv4Interface(state.host_address)
    hostnet.ensure_bridge(state.tag, host)
    _guard_host(state)
    for n in state.nodes:
        _ensure_node(state.tag, n.index, host, n.hidden)
    relays = _relays(state.nats_url)[1] if state.external_nats else []
    try:
        for p in dead:
            if not p.argv:
                raise GridError(f"{p.name} was started by an older zos and cannot be restarted")
            if p.name.startswith("node") and relays:
                _relay_into(state_dir, hostnet.node_netns(state.tag, int(p.name[4:])), relays)
            new = procs.spawn(p.name, p.argv, Path(p.log))
            p.pid, p.start_time = new.pid, new.start_time
            save(state)
            url = {
                "nats": state.nats_url,
                "hub": state.hub_url,
                "explorer": state.explorer_url,
            }.get(p.name)
            if url:
                parts = urllib.parse.urlsplit(url)
                _wait_port(parts.hostname or "", parts.port or 0, p)
        asyncio.run(_wait_nodes(state, timeout))
    except GridError as e:
        raise GridError(f"{e}\n(`zos grid down` then `zos grid up` starts a fresh grid)") from None
    return state


def _ensure_node(
    tag: str, index: int, host: IPv4Interface, hidden: bool
) -> tuple[str, IPv4Interface, str]:
    if hidden:
        return hostnet.ensure_hidden_node(tag, index, host)
    return hostnet.ensure_node(tag, index, host)


def _guard_host(state: GridState) -> None:
    """Nodes reach the host only at its NATS port (unless NATS is relayed from elsewhere)
    and its hub port."""
    urls = [state.hub_url] if state.external_nats else [state.nats_url, state.hub_url]
    if state.acme_url:  # the gateway nodes' ACME client
        urls.append(state.acme_url)
    ports = [urllib.parse.urlsplit(u).port or 0 for u in urls]
    hostnet.guard_host(state.tag, IPv4Interface(state.host_address), ports)


def _relays(nats: str) -> tuple[str, list[tuple[str, int, int]]]:
    """The NATS URLs as seen from a node namespace (relayed from its own 127.0.0.1), and
    the relays: (host, port, local port). So any NATS the host reaches, even one on the
    host's loopback, serves the nodes."""
    urls, relays, used = [], [], set()
    for url in (u.strip() for u in nats.split(",") if u.strip()):
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        if not parts.hostname:
            raise GridError(f"--nats {url}: no host in the URL (e.g. nats://127.0.0.1:4222)")
        port = parts.port or 4222
        local = port if port not in used else free_port()
        used.add(local)
        relays.append((parts.hostname, port, local))
        auth = parts.netloc.rpartition("@")[0]
        urls.append(f"{parts.scheme}://{auth + '@' if auth else ''}127.0.0.1:{local}")
    return ",".join(urls), relays


def _relay_into(state_dir: Path, ns: str, relays: list[tuple[str, int, int]]) -> None:
    from zos.primitives import netns

    new = [
        Forward(listen_netns=ns, listen_host="127.0.0.1", listen_port=local, netns="", ip=h, port=p)
        for h, p, local in relays
    ]
    edit_forwards(state_dir, lambda fs: [f for f in fs if f.listen_netns != ns] + new)

    def reachable() -> bool:
        import socket

        for _, _, local in relays:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", local)) != 0:
                    return False
        return True

    deadline = time.monotonic() + 15
    while not netns.run_in(ns, reachable):
        if time.monotonic() > deadline:
            raise GridError(f"cannot relay NATS into {ns}: see {state_dir / 'logs/forward.log'}")
        time.sleep(0.1)


async def _farm(state: GridState, farmer: Identity, reg: Proc, timeout: float):
    from zos.bus import BusError
    from zos.registry import RegistryClient

    client = RegistryClient(state.nats_url, farmer, registry_key=bytes.fromhex(state.registry_key))
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.connect()
            await client.ensure_twin()
            break
        except (BusError, OSError, Exception) as e:
            if not procs.alive(reg):
                raise GridError(f"the registry exited:\n{procs.tail(reg.log)}") from None
            if time.monotonic() > deadline:
                raise GridError(f"the registry did not answer in {timeout}s: {e}") from None
            await asyncio.sleep(0.3)
    try:
        name = f"local-{state.tag}"
        if state.external_nats:
            name += f"-{os.urandom(3).hex()}"
        farm = await client.create_farm(name)
        # For any twin, long-lived: a node restarted later may register again.
        token = await client.farm_join_token(farm.id, expires=10 * 365 * 24 * 3600.0)
        return farm.id, farm.name, token
    finally:
        await client.close()


async def _registered(reg: Any, key: Path) -> tuple[int, int] | None:
    """(twin, node) of the node whose key file is `key`, once it is up; None until then
    (also while the registry is still starting)."""
    from zos.bus import BusError

    try:
        twin = await reg.twin_by_key(load_key_file(key).public_key)
        node = await reg.node_by_twin(twin.id) if twin else None
        if twin is None or node is None:
            return None
        node = await reg.get_node(node.id)
    except BusError as e:
        if e.code in ("unavailable", "timeout"):
            return None
        raise
    return (twin.id, node.id) if node.status == "up" else None


async def _wait_nodes(state: GridState, timeout: float) -> None:
    """Until every node is registered, up, and answers on the bus."""
    from zos.bus import BusClient, BusError
    from zos.nodeapi import NodeClient
    from zos.registry import RegistryClient

    by_name = {p.name: p for p in state.procs}
    deadline = time.monotonic() + timeout
    farmer = Identity.from_seed_hex(state.farmer_seed)
    registry_key = bytes.fromhex(state.registry_key)
    async with RegistryClient(state.nats_url, farmer, registry_key=registry_key) as reg:
        bus: BusClient | None = None
        try:
            for n in state.nodes:
                proc = by_name[f"node{n.index}"]
                key = Path(n.data_dir) / "node-key.json"
                while True:
                    if not procs.alive(proc):
                        raise GridError(f"node{n.index} exited:\n{procs.tail(proc.log)}")
                    found = await _registered(reg, key) if key.exists() else None
                    if found is not None:
                        if bus is None:
                            twin = await reg.ensure_twin()
                            resolver = await reg.key_resolver()
                            bus = BusClient(reg.conn, farmer, twin.id, resolver)
                        with contextlib.suppress(BusError):
                            await NodeClient(bus, found[0]).version(timeout=2)
                            n.twin_id, n.node_id = found
                            break
                    if time.monotonic() > deadline:
                        raise GridError(
                            f"node{n.index} did not come up in {timeout}s:\n{procs.tail(proc.log)}"
                        )
                    await asyncio.sleep(0.2)
        finally:
            if bus is not None:
                await bus.close()
    save(state)


async def _set_public_configs(state: GridState) -> None:
    """The farmer gives each gateway node its public config (its bridge address, the host
    as its gateway, its domain) with the registry's signed transaction, as a farmer of
    the real grid does; the nodes read it from the registry (it outlives their restarts)."""
    from zos.registry import PublicConfig, RegistryClient

    farmer = Identity.from_seed_hex(state.farmer_seed)
    gw4 = str(IPv4Interface(state.host_address).ip)
    registry_key = bytes.fromhex(state.registry_key)
    async with RegistryClient(state.nats_url, farmer, registry_key=registry_key) as reg:
        for n in state.nodes:
            if n.domain:
                config = PublicConfig(ipv4=n.address, gw4=gw4, domain=n.domain)
                await reg.set_node_public_config(n.node_id, config)


def down(state_dir: Path, say: Say = print) -> bool:
    """Stop the grid and remove everything it made; False if there was none."""
    state_dir = Path(state_dir).absolute()
    if not (state_dir / "grid.json").exists() and not state_dir.exists():
        return False
    with _locked(state_dir):
        found = _down(state_dir, say)
    remove_tree(state_dir, ignore_errors=True)
    return found


def _down(state_dir: Path, say: Say, keep_logs: bool = False) -> bool:
    try:
        state = load(state_dir)
    except StateError as e:
        say(f"{e}: sweeping by the grid's prefix only")
        state = None
    tag = state.tag if state else grid_tag(state_dir)
    if state is not None:
        nodes = [p for p in state.procs if p.name.startswith("node")]
        for p in nodes:
            procs.stop(p)
        for n in state.nodes:
            _node_cleanup(n, state_dir, say)
        if state.external_nats and state.farmer_seed:
            # While the registry still runs: the farm owner takes the nodes off the grid.
            with contextlib.suppress(Exception):
                asyncio.run(asyncio.wait_for(_unregister(state), 20))
        for p in reversed([p for p in state.procs if p not in nodes]):
            procs.stop(p)
        say(f"stopped {len(state.procs)} processes")
    asyncio.run(_sweep_mounts(state_dir))
    gone = hostnet.remove(tag)
    if gone:
        say(f"removed {len(gone)} namespaces and links ({tag}*)")
    for child in list(state_dir.iterdir()) if state_dir.exists() else []:
        if child.name in (".lock",) or (keep_logs and child.name == "logs"):
            continue
        if child.is_dir() and not child.is_symlink():
            remove_tree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return state is not None


def _node_cleanup(n: NodeEntry, state_dir: Path, say: Say) -> None:
    """The node's own cleanup of everything it made, run in its namespace."""
    argv = _py(
        "zos.cli", "node", "wipe", "--data-dir", n.data_dir, "--netns-prefix", n.netns_prefix
    )
    if Path(f"/var/run/netns/{n.netns}").exists():
        argv = ["nsenter", f"--net=/var/run/netns/{n.netns}", "--", *argv]
    log = state_dir / "logs" / f"node{n.index}-cleanup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            code = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=180
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    if code != 0:
        say(f"node{n.index}: cleanup did not finish (see {log}); sweeping")


async def _sweep_mounts(state_dir: Path) -> None:
    from zos.primitives import filesystem, loop

    for m in reversed(filesystem.mounts_under(state_dir)):
        with contextlib.suppress(Exception):
            await filesystem.umount(m.target)
    for dev in loop.devices_under(state_dir):
        with contextlib.suppress(Exception):
            await loop.detach(dev)


async def _unregister(state: GridState) -> None:
    from zos.registry import RegistryClient

    farmer = Identity.from_seed_hex(state.farmer_seed)
    registry_key = bytes.fromhex(state.registry_key)
    async with RegistryClient(state.nats_url, farmer, registry_key=registry_key) as reg:
        for n in state.nodes:
            if n.node_id:
                with contextlib.suppress(Exception):
                    await reg.remove_node(n.node_id)
