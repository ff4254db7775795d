"""The WireGuard primitive on real namespaces: two "nodes" (public namespaces on a bridge
the test makes, each with its own WireGuard state and namespace prefix) build the same
network, with a "machine" namespace behind each; a laptop dials in with `wg-quick`; a
rogue node and spoofed sources get nothing in; peers change in place; the interfaces
survive their agent's kill -9 and come back after a reboot-like loss; removal leaves
nothing. The kernel backend runs the same tests where the kernel has WireGuard."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from netlab import Lan, ping, plug_machine
from netzm_helpers import listen_in

from zos.primitives import links, netns
from zos.primitives.hostproc import start_time
from zos.primitives.wireguard import (
    KERNEL,
    UAPI_DIR,
    USERSPACE,
    Config,
    Peer,
    PortInUse,
    Status,
    WireGuard,
    WireGuardError,
    _changes,
    _Dump,
    device_name,
    interface_name,
    probe,
    public_key,
    tunnel_address,
)

TAG = f"zwg{os.getpid() % 100000}"
NETID = f"t{os.getpid() % 100000}"  # one network, on every node
IP_RANGE = IPv4Network("10.20.0.0/16")
LAN = "10.250.0.{}"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()  # unclamped, as the clients make them


# ---- configuration, names and keys (no root) -------------------------------------------

KEY, OTHER = new_key(), new_key()


def cfg(**kw: object) -> Config:
    base: dict[str, object] = {
        "private_key": KEY,
        "listen_port": 51820,
        "address": "100.64.20.2/16",
        "routes": ["10.20.0.0/16"],
        "peers": [Peer(public_key(OTHER), ["10.20.3.0/24"], "10.250.0.3:51820")],
    }
    return Config(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"private_key": "c2hvcnQ="}, "private_key: must be a base64 WireGuard key"),
        ({"private_key": 12}, "private_key: must be a base64"),
        ({"listen_port": 0}, "listen_port: 0 is not a port"),
        ({"listen_port": 70000}, "listen_port: 70000"),
        ({"address": "10.0.0.300/16"}, "address:"),
        ({"routes": ["10.20.0.0/33"]}, "routes[0]:"),
        ({"peers": [Peer("nope")]}, "peers[0].public_key: must be a base64"),
        ({"peers": [Peer(public_key(OTHER), ["10.1.0.0/8", "x"])]}, "peers[0].allowed_ips[1]"),
        ({"peers": [Peer(public_key(OTHER), [], "example.com:1")]}, "peers[0].endpoint"),
        ({"peers": [Peer(public_key(OTHER), [], "fd00::1:51820")]}, "in brackets"),
        ({"peers": [Peer(public_key(OTHER), [], "10.0.0.1:0")]}, "peers[0].endpoint: port 0"),
        ({"peers": [Peer(public_key(OTHER), [], "", -1)]}, "peers[0].keepalive"),
        ({"peers": [Peer(public_key(KEY))]}, "peers[0].public_key: is this interface's own"),
        (
            {"peers": [Peer(public_key(OTHER)), Peer(public_key(OTHER))]},
            "peers[1].public_key: listed twice",
        ),
        ({"peers": ["not a peer"]}, "peers[0]: must be a Peer"),
    ],
)
def test_config_refuses_bad_input_naming_the_field(kw: dict[str, object], message: str) -> None:
    with pytest.raises(WireGuardError) as err:
        cfg(**kw)
    assert message in str(err.value)


def test_config_is_normalised() -> None:
    c = cfg(
        address="100.64.20.2/16",
        routes=["10.20.7.9/16"],
        peers=[
            Peer(public_key(OTHER), ["10.20.3.7/24", "10.20.3.0/24", "fd00::1/64"], "[fd00::9]:7")
        ],
    )
    assert c.address == IPv4Interface("100.64.20.2/16")
    assert c.routes == (IPv4Network("10.20.0.0/16"),)
    assert c.peers[0].allowed_ips == ("10.20.3.0/24", "fd00::/64")
    assert c.peers[0].endpoint == "[fd00::9]:7"


def test_keys_addresses_and_names() -> None:
    out = subprocess.run(["wg", "pubkey"], input=KEY, capture_output=True, text=True, check=True)
    assert public_key(KEY) == out.stdout.strip()
    # reference/network.md: subnet 10.A.B.0/24 → 100.64.A.B/16
    assert tunnel_address("10.20.3.0/24") == IPv4Interface("100.64.20.3/16")
    assert tunnel_address(IPv4Network("10.1.255.0/24")) == IPv4Interface("100.64.1.255/16")
    netid = "Utuyj5UcbHmzZ"  # 13 characters, as gridtypes.names.network_id makes them
    assert interface_name(netid) == "w-Utuyj5UcbHmzZ"
    names = {device_name(p, netid) for p in ("", "zg1-1-", "zg1-2-")}
    assert len(names) == 3 and all(len(n) <= 15 for n in names)
    assert device_name("zg1-1-", netid) == device_name("zg1-1-", netid)
    for bad in ("", "x" * 14, "a/b", "a b"):
        with pytest.raises(WireGuardError, match="netid"):
            interface_name(bad)


def test_changes_touch_only_what_differs() -> None:
    def dump(private: str, *peers: tuple[str, tuple[str, ...], str, int]) -> _Dump:
        from zos.primitives.wireguard import PeerStatus

        ps = tuple(PeerStatus(k, ep, ips, 1, 10, 10, ka) for k, ips, ep, ka in peers)
        return _Dump(private, Status("w-x", "wgx", USERSPACE, "", 51820, ps))

    b, c, d = public_key(OTHER), public_key(new_key()), public_key(new_key())
    # The kernel reports the private key clamped: that is the same key, left alone.
    raw = bytearray(base64.b64decode(KEY))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    clamped = base64.b64encode(bytes(raw)).decode()
    want = cfg(
        peers=[
            Peer(b, ["10.20.3.0/24"], "10.250.0.3:51820"),
            Peer(c, ["10.20.9.0/24"]),  # dials us: the endpoint it came from stays
            Peer(d, ["10.20.4.0/24"], "", 25),
        ]
    )
    same = dump(
        clamped,
        (b, ("10.20.3.0/24",), "10.250.0.3:51820", 0),
        (c, ("10.20.9.0/24",), "10.250.0.9:40000", 0),
        (d, ("10.20.4.0/24",), "", 25),
    )
    assert _changes(same, want) == []
    other = dump(
        KEY,
        (b, ("10.20.3.0/24", "10.20.9.0/24"), "10.250.0.3:51820", 0),  # allowed IPs differ
        (public_key(new_key()), ("10.20.5.0/24",), "", 0),  # no longer wanted
        (d, ("10.20.4.0/24",), "", 25),
    )
    args = _changes(other, want)
    assert "private-key" not in args
    assert args.count("peer") == 3 and "remove" in args
    assert args[args.index(b) :][:4] == [b, "allowed-ips", "10.20.3.0/24", "persistent-keepalive"]
    assert d not in args
    assert _changes(dump(new_key()), want)[:2] == ["private-key", "/dev/stdin"]


# ---- the test's network of nodes ---------------------------------------------------------


def has_kernel_wireguard() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        return probe() == KERNEL
    except WireGuardError:
        return False


@dataclass
class Node:
    name: str
    pub: str  # the node's public side
    ip: str
    subnet: IPv4Network
    key: str
    port: int
    state: Path
    backend: str

    def __post_init__(self) -> None:
        self.wg = self.agent()

    def agent(self) -> WireGuard:
        """What a (new) agent of this node makes: the same state, public side and prefix."""
        return WireGuard(self.state, self.pub, self.prefix, self.backend)  # type: ignore[arg-type]

    @property
    def prefix(self) -> str:
        return f"{TAG}{self.name}-"

    @property
    def ns(self) -> str:
        return f"{self.prefix}n-{NETID}"

    @property
    def machine(self) -> str:
        return f"{TAG}-{self.name}-m"

    @property
    def machine_ip(self) -> str:
        return str(self.subnet[2])

    @property
    def tunnel(self) -> IPv4Interface:
        return tunnel_address(self.subnet)

    @property
    def public(self) -> str:
        return public_key(self.key)

    def peer(self, *also: str, endpoint: bool = True) -> Peer:
        """This node as its peers list it (reference/network.md), routing `also` too."""
        allowed = [str(self.subnet), f"{self.tunnel.ip}/32", *also]
        return Peer(self.public, allowed, f"{self.ip}:{self.port}" if endpoint else "")

    def config(self, *peers: Peer, port: int | None = None) -> Config:
        return Config(self.key, port or self.port, self.tunnel, [IP_RANGE], list(peers))

    def pid(self) -> int:
        raw = json.loads((self.state / f"{device_name(self.prefix, NETID)}.pid").read_text())
        return int(raw["pid"])

    def plug_machine(self) -> None:
        plug_machine(self.ns, self.machine, self.subnet)


@dataclass
class Mesh:
    lan: Lan
    a: Node
    b: Node
    backend: str

    async def reset(self) -> None:
        """Both nodes peered with each other only (what every test leaves behind)."""
        await self.a.wg.ensure(NETID, self.a.ns, self.a.config(self.b.peer()))
        await self.b.wg.ensure(NETID, self.b.ns, self.b.config(self.a.peer()))


@pytest.fixture(scope="module", params=[USERSPACE, KERNEL])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    backend = request.param
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    if backend == KERNEL and not has_kernel_wireguard():  # probed here, not at collection
        pytest.skip("the kernel has no WireGuard")
    state = tmp_path_factory.mktemp("wg")
    lan = Lan(TAG, LAN)
    nodes = []
    try:
        for i, name in enumerate("ab"):
            pub, ip = lan.host(name, 2 + i)
            subnet = IPv4Network(f"10.20.{2 + i}.0/24")
            nodes.append(Node(name, pub, ip, subnet, new_key(), 51820, state / name, backend))
        mesh = Mesh(lan, nodes[0], nodes[1], backend)
        asyncio.run(mesh.reset())
        for node in nodes:
            node.plug_machine()
        yield mesh
    finally:

        async def remove() -> None:
            for node in nodes:
                await node.wg.remove(NETID)

        asyncio.run(remove())
        for node in nodes:
            netns.delete(node.machine)
            netns.delete(node.ns)
        lan.close()


def tcp_pair(server_ns: str, client_ns: str, host: str, port: int) -> tuple[socket.socket, ...]:
    """An established TCP connection from `client_ns` to `host:port` in `server_ns`."""

    def connect() -> socket.socket:
        c = socket.create_connection((host, port), timeout=10)
        c.settimeout(10)
        return c

    server = listen_in(server_ns, port, host)
    try:
        client = netns.run_in(client_ns, connect)
        server.settimeout(10)
        conn, _ = server.accept()
        conn.settimeout(10)
    finally:
        server.close()
    return client, conn


def exchange(a: socket.socket, b: socket.socket, size: int = 64) -> None:
    """`size` bytes each way over an established connection, checked (in pieces that
    fit the socket buffers, so one thread can do both ends)."""
    for offset in range(0, size, 1 << 16):
        data = os.urandom(min(1 << 16, size - offset))
        for src, dst in ((a, b), (b, a)):
            src.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = dst.recv(len(data) - len(got))
                assert chunk, "connection closed"
                got += chunk
            assert got == data


async def tcp_exchange(server_ns: str, client_ns: str, host: str, port: int = 7000) -> None:
    def run() -> None:
        client, conn = tcp_pair(server_ns, client_ns, host, port)
        with client, conn:
            exchange(client, conn)

    await asyncio.to_thread(run)


async def udp_ports(ns: str) -> set[int]:
    out = await netns.exec_in(ns, "ss", "-Hnlu")
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


# ---- the mesh -------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.root
async def test_machines_on_two_nodes_reach_each_other(mesh: Mesh) -> None:
    a, b = mesh.a, mesh.b
    assert await ping(a.machine, b.machine_ip)
    assert await ping(b.machine, a.machine_ip)
    assert await ping(a.ns, str(b.tunnel.ip))
    await tcp_exchange(b.machine, a.machine, b.machine_ip)

    # The same network on two nodes of one machine: `w-<netid>` in each node's own
    # namespace, created under names (and UAPI sockets) that differ.
    assert device_name(a.prefix, NETID) != device_name(b.prefix, NETID)
    for node in (a, b):
        status = await node.wg.status(NETID)
        assert status is not None
        assert status.name == f"w-{NETID}" and status.backend == mesh.backend
        assert status.public_key == node.public and status.listen_port == node.port
        assert links.exists(f"w-{NETID}", node.ns)
        assert links.addresses(f"w-{NETID}", node.ns) == [node.tunnel]
        # Its UDP socket lives on the node's public side, not in the network.
        assert node.port in await udp_ports(node.pub)
        assert node.port not in await udp_ports(node.ns)
        # Moved in and renamed: nothing of it is left on the public side.
        assert not links.exists(status.device, node.pub)
        if mesh.backend == USERSPACE:
            assert links.kind(f"w-{NETID}", node.ns) == "tun"  # wireguard-go's, moved
            assert (UAPI_DIR / f"{status.device}.sock").is_socket()
    assert not (UAPI_DIR / f"w-{NETID}.sock").exists()
    routes = await netns.exec_in(a.ns, "ip", "-4", "route", "show", "dev", f"w-{NETID}")
    assert f"{IP_RANGE} " in routes


@pytest.mark.netns
@pytest.mark.root
async def test_read_back_handshake_endpoint_bytes_and_ports(mesh: Mesh) -> None:
    a, b = mesh.a, mesh.b
    assert await ping(a.machine, b.machine_ip)
    status = await a.wg.status(NETID)
    assert status is not None
    peer = status.peer(b.public)
    assert peer is not None
    assert peer.latest_handshake > 0 and peer.rx_bytes > 0 and peer.tx_bytes > 0
    assert peer.endpoint == f"{b.ip}:{b.port}"
    assert set(peer.allowed_ips) == {str(b.subnet), f"{b.tunnel.ip}/32"}
    assert await a.wg.listen_ports() == [a.port]
    assert a.wg.netids() == [NETID]
    assert await a.wg.status("absent") is None


@pytest.mark.netns
@pytest.mark.root
async def test_peers_change_in_place_and_the_others_keep_their_session(mesh: Mesh) -> None:
    a, b = mesh.a, mesh.b
    pid = a.pid() if mesh.backend == USERSPACE else 0
    client, conn = await asyncio.to_thread(tcp_pair, b.machine, a.machine, b.machine_ip, 7001)
    with client, conn:
        await asyncio.to_thread(exchange, client, conn, 1 << 20)
        before = (await a.wg.status(NETID)).peer(b.public)  # type: ignore[union-attr]
        assert before is not None and before.latest_handshake > 0

        newcomer = Peer(public_key(new_key()), ["10.20.9.0/24"])  # dials in: no endpoint
        status = await a.wg.ensure(NETID, a.ns, a.config(b.peer(), newcomer))
        assert {p.public_key for p in status.peers} == {b.public, newcomer.public_key}
        await asyncio.to_thread(exchange, client, conn)

        status = await a.wg.ensure(NETID, a.ns, a.config(b.peer()))
        assert [p.public_key for p in status.peers] == [b.public]
        await asyncio.to_thread(exchange, client, conn)

    after = status.peer(b.public)
    assert after is not None
    # The same peer and session: its counters went on (a peer removed and added again
    # starts from zero, well below the MiB sent before, and without a handshake).
    assert after.latest_handshake >= before.latest_handshake
    assert after.tx_bytes > before.tx_bytes and after.rx_bytes > before.rx_bytes
    if pid:
        assert a.pid() == pid


@pytest.mark.netns
@pytest.mark.root
async def test_a_laptop_without_endpoint_dials_in_with_wg_quick(mesh: Mesh, tmp_path: Path) -> None:
    a, b = mesh.a, mesh.b
    lt_ns, lt_ip = mesh.lan.host("lt", 9)
    lt_key, lt_subnet = new_key(), IPv4Network("10.20.9.0/24")
    lt_tunnel = tunnel_address(lt_subnet).ip
    ifname = f"zl{os.getpid() % 100000}"
    conf = tmp_path / f"{ifname}.conf"
    # What `zos network access` will write (reference/network.md: the access node as peer).
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {lt_key}\n"
        f"Address = {lt_tunnel}/32\n"
        "[Peer]\n"
        f"PublicKey = {a.public}\n"
        f"Endpoint = {a.ip}:{a.port}\n"
        f"AllowedIPs = {IP_RANGE}, 100.64.0.0/16\n"
        "PersistentKeepalive = 25\n"
    )
    conf.chmod(0o600)
    laptop = Peer(public_key(lt_key), [str(lt_subnet), f"{lt_tunnel}/32"])  # no endpoint
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    try:
        # A is the access node: the laptop is its peer; B routes the laptop through A.
        await a.wg.ensure(NETID, a.ns, a.config(b.peer(), laptop))
        await b.wg.ensure(NETID, b.ns, b.config(a.peer(str(lt_subnet), f"{lt_tunnel}/32")))
        up = ["ip", "netns", "exec", lt_ns, "wg-quick", "up", str(conf)]
        done = subprocess.run(up, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

        assert await ping(lt_ns, a.machine_ip)
        assert await ping(lt_ns, b.machine_ip)
        await tcp_exchange(b.machine, lt_ns, b.machine_ip, 7002)
        seen = (await a.wg.status(NETID)).peer(laptop.public_key)  # type: ignore[union-attr]
        assert seen is not None and seen.latest_handshake > 0
        assert seen.endpoint.startswith(f"{lt_ip}:")  # learned from its packets

        # Dropped from the access node: the laptop reaches nothing, the nodes still do.
        await mesh.reset()
        assert not await ping(lt_ns, a.machine_ip, wait=2)
        assert await ping(a.machine, b.machine_ip)
    finally:
        down = ["ip", "netns", "exec", lt_ns, "wg-quick", "down", str(conf)]
        subprocess.run(down, env=env, capture_output=True)
        netns.delete(lt_ns)
        (UAPI_DIR / f"{ifname}.sock").unlink(missing_ok=True)
        await mesh.reset()


@pytest.mark.netns
@pytest.mark.root
async def test_traffic_not_from_a_configured_peer_never_enters(mesh: Mesh, tmp_path: Path) -> None:
    a, b = mesh.a, mesh.b
    # A rogue node that knows A's key and endpoint, but that A does not list.
    r_pub, r_ip = mesh.lan.host("r", 7)
    rogue = Node(
        "r", r_pub, r_ip, IPv4Network("10.20.7.0/24"), new_key(), 51820, tmp_path, a.backend
    )
    counter = f"""table inet zwgtest {{
        chain input {{
            type filter hook input priority 0; policy accept;
            ip saddr {r_ip} udp dport {a.port} counter
        }}
    }}"""
    sink = netns.run_in(a.machine, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        await netns.exec_in(a.pub, "nft", "-f", "-", input=counter.encode())
        await rogue.wg.ensure(NETID, rogue.ns, rogue.config(a.peer()))
        assert not await ping(rogue.ns, a.machine_ip, wait=2)
        listed = await netns.exec_in(a.pub, "nft", "list", "table", "inet", "zwgtest")
        arrived = re.search(r"counter packets (\d+)", listed)
        assert arrived and int(arrived[1]) > 0  # its handshakes reached A's socket...
        seen = (await rogue.wg.status(NETID)).peer(a.public)  # type: ignore[union-attr]
        assert seen is not None and seen.latest_handshake == 0 and seen.rx_bytes == 0
        status = await a.wg.status(NETID)
        assert status is not None and status.peer(rogue.public) is None  # ...and went nowhere

        # A configured peer's packets from a source outside its allowed IPs are dropped;
        # the same datagram from its own subnet arrives (after the spoofed one, in order).
        sink.bind((a.machine_ip, 7003))
        sink.settimeout(10)
        spoofed = "10.20.77.7"
        await netns.exec_in(b.ns, "ip", "addr", "add", f"{spoofed}/32", "dev", "lo")

        def send_from(src: str) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.sendto(src.encode(), (a.machine_ip, 7003))

        await asyncio.to_thread(netns.run_in, b.ns, lambda: send_from(spoofed))
        await asyncio.to_thread(netns.run_in, b.ns, lambda: send_from(str(b.subnet[1])))
        got, _ = await asyncio.to_thread(sink.recvfrom, 100)
        assert got == str(b.subnet[1]).encode()
        sink.setblocking(False)
        with pytest.raises(BlockingIOError):
            sink.recvfrom(100)
    finally:
        sink.close()
        await rogue.wg.remove(NETID)
        netns.delete(rogue.ns)
        netns.delete(r_pub)
        await netns.exec_in(a.pub, "nft", "delete", "table", "inet", "zwgtest")
        await netns.exec_in(b.ns, "ip", "addr", "flush", "dev", "lo", "to", "10.20.77.7/32")


@pytest.mark.netns
@pytest.mark.root
async def test_listen_port_clash_is_refused_naming_the_port(mesh: Mesh) -> None:
    a, b = mesh.a, mesh.b
    other = f"{NETID}p"
    other_ns = f"{a.prefix}n-{other}"
    device = device_name(a.prefix, other)
    with pytest.raises(PortInUse, match=f"listen_port: {a.port} is already in use"):
        await a.wg.ensure(other, other_ns, a.config(port=a.port))
    # Nothing of it was made.
    assert not netns.exists(other_ns)
    assert not (UAPI_DIR / f"{device}.sock").exists()
    assert not list(a.state.glob(f"{device}*"))
    assert a.wg.netids() == [NETID]

    # A port some other program holds on the public side: refused, the tunnel unchanged.
    holder = netns.run_in(a.pub, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with holder:
        holder.bind(("0.0.0.0", 0))
        taken = holder.getsockname()[1]
        with pytest.raises(PortInUse, match=f"listen_port: {taken} "):
            await a.wg.ensure(NETID, a.ns, a.config(b.peer(), port=taken))
    status = await a.wg.status(NETID)
    assert status is not None and status.listen_port == a.port
    assert a.port in await udp_ports(a.pub)
    assert await ping(a.machine, b.machine_ip)


@pytest.mark.netns
@pytest.mark.root
@pytest.mark.slow
async def test_rebuilt_after_a_reboot_and_kept_through_an_agent_kill(
    mesh: Mesh, tmp_path: Path
) -> None:
    a, b = mesh.a, mesh.b
    assert await ping(a.machine, b.machine_ip)
    # A reboot-like loss of node B: its WireGuard process and its network's namespace go
    # (a power cut leaves wireguard-go's socket and the agent's records behind).
    if mesh.backend == USERSPACE:
        os.kill(b.pid(), signal.SIGKILL)
    netns.delete(b.ns)
    assert await b.wg.status(NETID) is None

    # The next agent (a process of its own) rebuilds it with the same key. B speaks
    # first: A's session with the lost B is stale, and A itself would only try a new
    # handshake after WireGuard's rekey timeout (15 s without an answer).
    b.plug_machine()
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, json.dumps(agent_args(b, a.peer()))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        built = json.loads(agent.stdout.readline())
        assert built["public_key"] == b.public
        assert await ping(b.machine, a.machine_ip)
        assert await ping(a.machine, b.machine_ip)
        pid = b.pid() if mesh.backend == USERSPACE else 0
        started = start_time(pid) if pid else 0

        # ...and is killed: the tunnel goes on without it.
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    if pid:
        assert start_time(pid) == started
    client, conn = await asyncio.to_thread(tcp_pair, b.machine, a.machine, b.machine_ip, 7004)
    with client, conn:
        await asyncio.to_thread(exchange, client, conn, 1 << 18)
        before = (await b.wg.status(NETID)).peer(a.public)  # type: ignore[union-attr]

        # The agent after it finds the same interface and changes nothing.
        status = await b.agent().ensure(NETID, b.ns, b.config(a.peer()))
        assert status.public_key == b.public
        await asyncio.to_thread(exchange, client, conn)
        after = (await b.wg.status(NETID)).peer(a.public)  # type: ignore[union-attr]
    assert before is not None and after is not None
    assert after.latest_handshake >= before.latest_handshake
    assert after.tx_bytes > before.tx_bytes  # the same peer, not one built again
    if pid:
        assert b.pid() == pid and start_time(pid) == started


AGENT = """
import asyncio, json, sys
from pathlib import Path
from zos.primitives.wireguard import Config, Peer, WireGuard

args = json.loads(sys.argv[1])
peers = [Peer(p["public_key"], p["allowed_ips"], p["endpoint"]) for p in args["peers"]]
config = Config(args["key"], args["port"], args["address"], args["routes"], peers)
wg = WireGuard(Path(args["state"]), args["pub"], args["prefix"], args["backend"])
status = asyncio.run(wg.ensure(args["netid"], args["ns"], config))
print(json.dumps({"public_key": status.public_key}), flush=True)
sys.stdin.read()  # the agent keeps running until it is killed
"""


def agent_args(node: Node, *peers: Peer) -> dict[str, object]:
    return {
        "state": str(node.state),
        "pub": node.pub,
        "prefix": node.prefix,
        "backend": node.backend,
        "netid": NETID,
        "ns": node.ns,
        "key": node.key,
        "port": node.port,
        "address": str(node.tunnel),
        "routes": [str(IP_RANGE)],
        "peers": [
            {"public_key": p.public_key, "allowed_ips": list(p.allowed_ips), "endpoint": p.endpoint}
            for p in peers
        ],
    }


@pytest.mark.netns
@pytest.mark.root
async def test_removal_leaves_no_process_socket_link_or_file(mesh: Mesh) -> None:
    a = mesh.a
    other = f"{NETID}r"
    ns = f"{a.prefix}n-{other}"
    device = device_name(a.prefix, other)
    try:
        status = await a.wg.ensure(other, ns, a.config(port=a.port + 1))
        assert status.listen_port == a.port + 1
        assert await a.wg.listen_ports() == [a.port, a.port + 1]
        assert sorted(a.wg.netids()) == sorted([NETID, other])
        pid = 0
        if mesh.backend == USERSPACE:
            pid = json.loads((a.state / f"{device}.pid").read_text())["pid"]
            assert start_time(pid) and (UAPI_DIR / f"{device}.sock").is_socket()
        assert links.exists(f"w-{other}", ns)

        await a.wg.remove(other)
        if pid:
            assert not start_time(pid)
        assert not (UAPI_DIR / f"{device}.sock").exists()
        assert not links.exists(f"w-{other}", ns) and not links.exists(device, ns)
        assert not links.exists(device, a.pub)
        assert not list(a.state.glob(f"{device}*"))
        assert await a.wg.listen_ports() == [a.port]
        assert a.wg.netids() == [NETID]
        await a.wg.remove(other)  # gone already: nothing to do
    finally:
        await a.wg.remove(other)
        netns.delete(ns)


@pytest.mark.netns
@pytest.mark.root
async def test_kernel_backend_without_the_module_fails_clearly(tmp_path: Path) -> None:
    if await asyncio.to_thread(has_kernel_wireguard):
        pytest.skip("the kernel has WireGuard")
    pub, ns = f"{TAG}k-pub", f"{TAG}k-n-{NETID}"
    netns.create(pub)
    wg = WireGuard(tmp_path / "wg", pub, f"{TAG}k-", KERNEL)
    try:
        with pytest.raises(WireGuardError, match="kernel WireGuard link"):
            await wg.ensure(NETID, ns, cfg())
        assert not netns.exists(ns)  # it made that namespace, and removed it
        assert links.names(pub) == ["lo"]
        assert list((tmp_path / "wg").iterdir()) == []
    finally:
        netns.delete(ns)
        netns.delete(pub)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(WireGuardError, match="backend: 'boringtun'"):
        WireGuard(Path("/nonexistent"), None, "", "boringtun")  # type: ignore[arg-type]
