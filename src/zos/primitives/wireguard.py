"""WireGuard interfaces of private networks: the kernel's, or wireguard-go where the
kernel has none, behind one API (`WireGuard`).

A network's interface is created where the node's public side is (`public_ns`: its UDP
socket stays there, reachable from other nodes), then moved into the network's namespace
and renamed `w-<netid>` (reference/network.md). It is created under a name unique to the
node and the network (`device_name`), because the nodes of a local grid share one
machine and its `/var/run/wireguard/` (wireguard-go's UAPI sockets, named after the
interface at its creation) and may each build the same network. Both backends are
configured with `wg`: a wireguard-go device through its UAPI socket, by that unique name,
from anywhere; a kernel device over generic netlink, by `w-<netid>` inside the namespace.

wireguard-go runs detached (`zos.primitives.hostproc`): it outlives the agent, and the
next agent finds it by pid and start time. Nothing restarts it when it dies, because its
tun device dies with it: `ensure` builds the interface again, with the same key.

Peers are changed one by one, never replaced wholesale, so the others keep their
sessions. The API is async; netlink and socket work runs on worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Interface, IPv4Network, ip_network
from pathlib import Path
from typing import Literal

from nacl.bindings import crypto_scalarmult_base
from pyroute2.netlink.exceptions import NetlinkError

from zos.gridtypes.endpoint import split_ip_port
from zos.primitives import links, netns
from zos.primitives.command import CommandError
from zos.primitives.hostproc import HostProcess, HostProcessError, start_time
from zos.primitives.nat import TUNNEL_RANGE

Backend = Literal["kernel", "wireguard-go"]
KERNEL: Backend = "kernel"
USERSPACE: Backend = "wireguard-go"

UAPI_DIR = Path("/var/run/wireguard")
# wireguard-go refuses to start where it believes the kernel could do the job.
USERSPACE_ENV = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"
# wireguard-go learns that a link moved to another namespace went up by polling it
# once a second, and binds its port then.
BIND_TIMEOUT = 5.0
_NETID = re.compile(r"^[A-Za-z0-9_-]{1,13}$")  # w-<netid> fits IFNAMSIZ
_RTPROT_KERNEL = 2
_MAIN_TABLE = 254


class WireGuardError(Exception):
    """Bad configuration (naming the field) or a device that could not be built."""


class PortInUse(WireGuardError):
    def __init__(self, port: int) -> None:
        self.port = port
        super().__init__(f"listen_port: {port} is already in use on this node")


# ---- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    public_key: str  # base64
    allowed_ips: Sequence[str] = ()
    endpoint: str = ""  # "IP:PORT" or "[IPv6]:PORT"; empty: the peer dials us
    keepalive: int = 0  # seconds between keepalives; 0: none


@dataclass(frozen=True)
class Config:
    """What a network's interface should be; checked and normalised when made."""

    private_key: str  # base64, as in the `network` workload
    listen_port: int
    address: IPv4Interface  # 100.64.A.B/16 (`tunnel_address`)
    routes: Sequence[IPv4Network] = ()  # the network's ip_range
    peers: Sequence[Peer] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised once, here
        set_(self, "private_key", _key(self.private_key, "private_key"))
        if not isinstance(self.listen_port, int) or not 0 < self.listen_port < 65536:
            raise WireGuardError(f"listen_port: {self.listen_port!r} is not a port (1-65535)")
        try:
            set_(self, "address", IPv4Interface(self.address))
        except ValueError:
            raise WireGuardError(f"address: {self.address!r} is not an IPv4 address") from None
        routes = []
        for i, route in enumerate(self.routes):
            try:
                routes.append(IPv4Network(route, strict=False))
            except ValueError:
                raise WireGuardError(f"routes[{i}]: {route!r} is not an IPv4 network") from None
        set_(self, "routes", tuple(routes))
        own = public_key(self.private_key)
        peers: list[Peer] = []
        for i, peer in enumerate(self.peers):
            peers.append(_checked_peer(peer, f"peers[{i}]"))
            if peers[-1].public_key == own:
                raise WireGuardError(f"peers[{i}].public_key: is this interface's own key")
            if any(p.public_key == peers[-1].public_key for p in peers[:-1]):
                raise WireGuardError(f"peers[{i}].public_key: listed twice")
        set_(self, "peers", tuple(peers))


def _key(value: object, field: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)  # type: ignore[arg-type]
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise WireGuardError(f"{field}: must be a base64 WireGuard key (32 bytes)")
    return base64.b64encode(raw).decode()


def _endpoint(value: object, field: str) -> str:
    if value in ("", None):
        return ""
    parts = split_ip_port(str(value))
    if parts is None:
        raise WireGuardError(f"{field}: {value!r} must be IP:PORT (an IPv6 address in brackets)")
    ip, port, bracketed = parts
    if not 0 < int(port) < 65536:
        raise WireGuardError(f"{field}: port {port} is not a port (1-65535)")
    return f"[{ip}]:{int(port)}" if bracketed else f"{ip}:{int(port)}"


def _checked_peer(peer: Peer, field: str) -> Peer:
    if not isinstance(peer, Peer):
        raise WireGuardError(f"{field}: must be a Peer")
    allowed = []
    for j, net in enumerate(peer.allowed_ips):
        try:
            allowed.append(str(ip_network(str(net), strict=False)))
        except ValueError:
            msg = f"{field}.allowed_ips[{j}]: {net!r} is not an IP network"
            raise WireGuardError(msg) from None
    keepalive = peer.keepalive
    if not isinstance(keepalive, int) or not 0 <= keepalive < 65536:
        raise WireGuardError(f"{field}.keepalive: {keepalive!r} is not 0-65535 seconds")
    return Peer(
        public_key=_key(peer.public_key, f"{field}.public_key"),
        allowed_ips=tuple(dict.fromkeys(allowed)),
        endpoint=_endpoint(peer.endpoint, f"{field}.endpoint"),
        keepalive=keepalive,
    )


def public_key(private_key: str) -> str:
    """The base64 public key of a base64 private key (what `wg pubkey` prints)."""
    return base64.b64encode(crypto_scalarmult_base(base64.b64decode(private_key))).decode()


def _clamped(key: str) -> bytes:
    # The kernel keeps a private key clamped, wireguard-go as given: compare them clamped.
    raw = bytearray(base64.b64decode(key))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return bytes(raw)


def tunnel_address(subnet: IPv4Network | str) -> IPv4Interface:
    """A node's address on the network's tunnels: subnet 10.A.B.0/24 → 100.64.A.B/16."""
    net = IPv4Network(subnet, strict=False)
    a, b = net.network_address.packed[1:3]
    return IPv4Interface(f"{TUNNEL_RANGE[a * 256 + b]}/{TUNNEL_RANGE.prefixlen}")


def interface_name(netid: str) -> str:
    """The interface's name inside the network's namespace."""
    return f"w-{_netid(netid)}"


def device_name(prefix: str, netid: str) -> str:
    """The name the interface is created under (and its UAPI socket's), unique per node
    (`prefix`, the node's namespace prefix) and network on this machine."""
    digest = hashlib.sha256(f"{prefix}/{_netid(netid)}".encode()).digest()
    return "wg" + base64.b32encode(digest).decode().lower()[:13]


def _ns(ns: str) -> str:
    try:
        return netns.check_name(ns)
    except netns.NetnsError as exc:
        raise WireGuardError(f"ns: {exc}") from None


def _netid(netid: str) -> str:
    if not isinstance(netid, str) or not _NETID.match(netid):
        raise WireGuardError(f"netid: {netid!r} must be 1-13 of A-Za-z0-9_-")
    return netid


# ---- read back -----------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStatus:
    public_key: str
    endpoint: str  # where its packets come from (or the configured one); "" if unknown
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix time in seconds; 0: never
    rx_bytes: int
    tx_bytes: int
    keepalive: int


@dataclass(frozen=True)
class Status:
    name: str  # w-<netid>
    device: str  # the unique name it was created under
    backend: Backend
    public_key: str
    listen_port: int
    peers: tuple[PeerStatus, ...]

    def peer(self, public_key: str) -> PeerStatus | None:
        return next((p for p in self.peers if p.public_key == public_key), None)


@dataclass(frozen=True)
class _Dump:
    private_key: str
    status: Status


def _parse_dump(text: str, name: str, device: str, backend: Backend) -> _Dump:
    """`wg show IF dump`: the interface's line, then one line per peer (tab-separated)."""
    lines = [line.split("\t") for line in text.splitlines() if line]
    if not lines or len(lines[0]) < 4:
        raise WireGuardError(f"{name}: unreadable `wg show` output")
    private, public, port = lines[0][:3]
    peers = []
    for f in lines[1:]:
        key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = f[:8]
        peers.append(
            PeerStatus(
                public_key=key,
                endpoint="" if endpoint == "(none)" else endpoint,
                allowed_ips=() if allowed == "(none)" else tuple(allowed.split(",")),
                latest_handshake=int(handshake),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
                keepalive=0 if keepalive == "off" else int(keepalive),
            )
        )
    status = Status(name, device, backend, public, int(port), tuple(peers))
    return _Dump("" if private == "(none)" else private, status)


def _peer_args(peer: Peer) -> list[str]:
    args = ["peer", peer.public_key, "allowed-ips", ",".join(peer.allowed_ips)]
    args += ["persistent-keepalive", str(peer.keepalive) if peer.keepalive else "off"]
    return args + (["endpoint", peer.endpoint] if peer.endpoint else [])


def _changes(have: _Dump, want: Config) -> list[str]:
    """`wg set` arguments that turn `have` into `want`, touching only what differs.

    An endpoint is only set when one is wanted: without one, the peer dials us and
    WireGuard keeps the address it last came from.
    """
    args: list[str] = []
    if not have.private_key or _clamped(have.private_key) != _clamped(want.private_key):
        args += ["private-key", "/dev/stdin"]
    wanted = {p.public_key: p for p in want.peers}
    for peer in have.status.peers:
        if peer.public_key not in wanted:
            args += ["peer", peer.public_key, "remove"]
    for peer in want.peers:
        cur = have.status.peer(peer.public_key)
        if (
            cur is None
            or set(cur.allowed_ips) != set(peer.allowed_ips)
            or cur.keepalive != peer.keepalive
            or (peer.endpoint and cur.endpoint != peer.endpoint)
        ):
            args += _peer_args(peer)
    return args


# ---- the devices ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    """One network's interface, as recorded in `<state_dir>/<device>.json`."""

    netid: str
    ns: str
    name: str
    device: str
    backend: Backend


_probed: Backend | None = None


def probe(ns: str | None = None) -> Backend:
    """The kernel's WireGuard if it can make a wireguard link (in `ns`), else wireguard-go.

    Blocks (netlink): call it through `asyncio.to_thread` from a running loop.
    """
    global _probed
    if _probed is None:
        name = f"zwgprobe{os.getpid() % 10**7}"
        try:
            with links.ipr(ns) as sock:
                sock.link("add", ifname=name, kind="wireguard")
                sock.link("del", index=sock.link_lookup(ifname=name)[0])
            _probed = KERNEL
        except NetlinkError:
            if shutil.which("wireguard-go") is None:
                raise WireGuardError(
                    "no WireGuard: the kernel has no wireguard module and wireguard-go "
                    "is not installed"
                ) from None
            _probed = USERSPACE
    return _probed


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _binds(pid: int, port: int) -> bool:
    """Whether process `pid` holds a UDP socket on `port` (in its own namespace)."""
    try:
        inodes = _socket_inodes(pid)
        for table in ("udp", "udp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def _port_free(port: int) -> bool:
    """Whether a UDP socket could bind `port` here (IPv4, and IPv6 where there is one)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            if family == socket.AF_INET:
                raise
    return True


class WireGuard:
    """The WireGuard interfaces of one node's networks.

    `state_dir` keeps a small record per interface (and wireguard-go's pid and log);
    `public_ns` is where their UDP sockets live (None: the agent's own namespace);
    `prefix` tells this node's interfaces from other nodes' on the same machine (the
    node's namespace prefix); `backend` forces one (tests), else it is probed.
    """

    def __init__(
        self,
        state_dir: Path,
        public_ns: str | None = None,
        prefix: str = "",
        backend: Backend | None = None,
    ) -> None:
        if public_ns is not None:
            _ns(public_ns)
        if backend not in (None, KERNEL, USERSPACE):
            raise WireGuardError(f"backend: {backend!r} is not {KERNEL!r} or {USERSPACE!r}")
        self.state_dir = state_dir
        self.public_ns = public_ns
        self.prefix = prefix
        self._backend = backend
        self._locks: dict[str, asyncio.Lock] = {}
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # --- the API ----------------------------------------------------------------------

    async def ensure(self, netid: str, ns: str, config: Config) -> Status:
        """Make network `netid`'s interface in namespace `ns` what `config` says.

        A working interface is changed in place (only what differs: peers added,
        changed or removed one by one, so the others keep their sessions); a missing or
        broken one (after a reboot, its namespace gone) is built again. A listen port
        that another interface or program on the public side holds is refused with
        `PortInUse`, changing nothing.
        """
        if not isinstance(config, Config):
            raise WireGuardError("config: must be a wireguard.Config")
        dev = _Device(
            netid=netid,
            ns=_ns(ns),
            name=interface_name(netid),
            device=device_name(self.prefix, netid),
            backend=self._backend or await asyncio.to_thread(probe, self.public_ns),
        )
        async with self._locks.setdefault(netid, asyncio.Lock()):
            try:
                old = self._load(dev.device)
                if old is not None and old != dev:
                    await self._destroy(old)  # moved to another namespace or backend
                if old == dev and await self._present(dev):
                    await self._update(dev, config)
                else:
                    await self._destroy(dev)  # what a crash or a reboot left
                    await self._check_port(config.listen_port, netid)
                    await self._build(dev, config)
                return (await self._dump(dev)).status
            except (CommandError, HostProcessError, links.LinkError, NetlinkError, OSError) as e:
                raise WireGuardError(f"{dev.name}: {e}") from None

    async def status(self, netid: str) -> Status | None:
        """The interface as it runs (peers with handshake, endpoint, bytes); None if absent."""
        dev = self._load(device_name(self.prefix, netid))
        if dev is None or not await self._found(dev):
            return None
        try:
            return (await self._dump(dev)).status
        except CommandError:
            return None

    async def remove(self, netid: str, ns: str | None = None) -> None:
        """Remove the interface: no process, socket, link or file is left. A no-op if gone."""
        async with self._locks.setdefault(netid, asyncio.Lock()):
            device = device_name(self.prefix, netid)
            # Nothing recorded (a crash before the record): what `ns` and the public side hold.
            dev = self._load(device) or _Device(
                netid, _ns(ns) if ns else "", interface_name(netid), device, USERSPACE
            )
            try:
                await self._destroy(dev)
            except (HostProcessError, links.LinkError, NetlinkError, OSError) as e:
                raise WireGuardError(f"{dev.name}: {e}") from None

    async def listen_ports(self) -> list[int]:
        """The ports this node's interfaces listen on."""
        ports = set()
        for dev in self._records():
            if await self._found(dev):
                with contextlib.suppress(CommandError, WireGuardError):
                    ports.add((await self._dump(dev)).status.listen_port)
        return sorted(ports)

    def netids(self) -> list[str]:
        """The networks this node has (or had, before a loss) an interface for."""
        return sorted(dev.netid for dev in self._records())

    # --- records ----------------------------------------------------------------------

    def _path(self, device: str, suffix: str) -> Path:
        return self.state_dir / f"{device}{suffix}"

    def _load(self, device: str) -> _Device | None:
        try:
            return _Device(**json.loads(self._path(device, ".json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, dev: _Device) -> None:
        tmp = self._path(dev.device, ".json.tmp")
        tmp.write_text(json.dumps(asdict(dev)))
        os.replace(tmp, self._path(dev.device, ".json"))

    def _records(self) -> list[_Device]:
        devs = (self._load(p.name.removesuffix(".json")) for p in self.state_dir.glob("*.json"))
        return [d for d in devs if d is not None]

    def _process(self, dev: _Device) -> HostProcess:
        argv = ["env", USERSPACE_ENV]
        if self.public_ns is not None:
            argv += ["nsenter", f"--net={netns.path(self.public_ns)}", "--"]
        argv += ["wireguard-go", "--foreground", dev.device]
        return HostProcess(
            f"wireguard-go {dev.device}",
            argv,
            self._path(dev.device, ".pid"),
            self._path(dev.device, ".log"),
        )

    # --- building ---------------------------------------------------------------------

    async def _present(self, dev: _Device) -> bool:
        """Whether the interface is there and alive; a wireguard-go process an earlier
        agent started is checked by pid, start time and argv (and replaced if its
        settings differ)."""
        if not await self._found(dev):
            return False
        if dev.backend == USERSPACE:
            proc = self._process(dev)
            try:
                return await proc.adopt()
            finally:
                proc.close()  # watched by nobody: see the module's docstring
        return True

    async def _found(self, dev: _Device) -> bool:
        """Whether the interface's link is in its namespace (and its socket, if any, there)."""
        if not netns.exists(dev.ns):
            return False
        if dev.backend == USERSPACE and not (UAPI_DIR / f"{dev.device}.sock").is_socket():
            return False
        want = "tun" if dev.backend == USERSPACE else "wireguard"
        return await asyncio.to_thread(links.kind, dev.name, dev.ns) == want

    async def _check_port(self, port: int, netid: str) -> None:
        for other in self._records():
            if other.netid != netid and await self._found(other):
                with contextlib.suppress(CommandError):
                    if (await self._dump(other)).status.listen_port == port:
                        raise PortInUse(port)
        if self.public_ns is None:
            free = await asyncio.to_thread(_port_free, port)
        else:
            free = await asyncio.to_thread(netns.run_in, self.public_ns, lambda: _port_free(port))
        if not free:
            raise PortInUse(port)

    async def _build(self, dev: _Device, config: Config) -> None:
        self._save(dev)  # first, so that what a crash leaves is found and removed
        made_ns = not netns.exists(dev.ns)
        try:
            await asyncio.to_thread(netns.create, dev.ns)
            pid = 0
            if dev.backend == USERSPACE:
                pid = await self._spawn(dev)
            else:
                await asyncio.to_thread(self._add_kernel_link, dev.device)
            await asyncio.to_thread(self._place, dev)
            fresh = _Dump("", Status(dev.name, dev.device, dev.backend, "", 0, ()))
            args = ["listen-port", str(config.listen_port), *_changes(fresh, config)]
            await self._set(dev, args, config.private_key)
            try:
                await asyncio.to_thread(self._finish, dev, config)
            except NetlinkError as exc:
                if exc.code == errno.EADDRINUSE:  # the kernel binds when the link goes up
                    raise PortInUse(config.listen_port) from None
                raise
            if pid:
                await self._wait_bound(dev, pid, config.listen_port)
        except BaseException:
            await self._destroy(dev)
            if made_ns:
                await asyncio.to_thread(netns.delete, dev.ns)
            raise

    async def _spawn(self, dev: _Device) -> int:
        sock = UAPI_DIR / f"{dev.device}.sock"

        async def answers() -> bool:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(sock))
                except OSError:
                    return False
            return True

        proc = self._process(dev)
        try:
            return await proc.ensure(answers)
        finally:
            proc.close()

    def _add_kernel_link(self, device: str) -> None:
        with links.ipr(self.public_ns) as sock:
            try:
                sock.link("add", ifname=device, kind="wireguard")
            except NetlinkError as exc:
                raise WireGuardError(f"cannot create a kernel WireGuard link: {exc}") from None

    def _place(self, dev: _Device) -> None:
        """Move the new link from the public side into the network's namespace, renamed."""
        with links.ipr(self.public_ns) as sock:
            found = sock.link_lookup(ifname=dev.device)
            if not found:
                raise links.LinkError(f"{dev.device} vanished before it was moved")
            sock.link("set", index=found[0], net_ns_fd=dev.ns)
        links.delete(dev.name, dev.ns)  # a stale one of that name
        links.rename(dev.device, dev.name, dev.ns)

    def _finish(self, dev: _Device, config: Config) -> None:
        """Address, up, and exactly `config.routes` through the interface."""
        links.set_addresses(dev.name, [config.address], dev.ns)
        links.set_up(dev.name, dev.ns)
        wanted = {str(r) for r in config.routes}
        with links.ipr(dev.ns) as sock:
            idx = sock.link_lookup(ifname=dev.name)[0]
            for route in sock.get_routes(family=socket.AF_INET, table=_MAIN_TABLE):
                dst = f"{route.get('RTA_DST') or '0.0.0.0'}/{route['dst_len']}"
                if (
                    route.get("RTA_OIF") == idx
                    and route["proto"] != _RTPROT_KERNEL
                    and dst not in wanted
                ):
                    sock.route("del", dst=dst, oif=idx, table=_MAIN_TABLE)
            for dst in sorted(wanted):
                sock.route("replace", dst=dst, oif=idx, table=_MAIN_TABLE)

    async def _wait_bound(self, dev: _Device, pid: int, port: int) -> None:
        started = start_time(pid)
        deadline = time.monotonic() + BIND_TIMEOUT
        while not _binds(pid, port):
            if start_time(pid) != started or time.monotonic() > deadline:
                tail = self._process(dev).log_tail()
                if "address already in use" in tail:
                    raise PortInUse(port)
                raise WireGuardError(f"wireguard-go did not listen on {port}: {tail}")
            await asyncio.sleep(0.02)

    # --- changing in place ------------------------------------------------------------

    async def _update(self, dev: _Device, config: Config) -> None:
        have = await self._dump(dev)
        old_port = have.status.listen_port
        if old_port != config.listen_port:
            await self._check_port(config.listen_port, dev.netid)
            try:
                await self._set(dev, ["listen-port", str(config.listen_port)])
            except CommandError as exc:
                if "in use" not in exc.stderr:
                    raise
                # A failed bind leaves the interface with none: give it back the old port.
                await self._set(dev, ["listen-port", str(old_port)])
                raise PortInUse(config.listen_port) from None
        args = _changes(have, config)
        if args:
            await self._set(dev, args, config.private_key)
        await asyncio.to_thread(self._finish, dev, config)

    # --- talking to the device --------------------------------------------------------

    def _wg_target(self, dev: _Device) -> tuple[str | None, str]:
        """Where to run `wg` and the name to give it for this interface."""
        if dev.backend == USERSPACE:
            return None, dev.device  # its UAPI socket, reachable from any namespace
        if (UAPI_DIR / f"{dev.name}.sock").exists():
            # `wg` would talk to that socket instead of the kernel's interface.
            raise WireGuardError(f"{dev.name}: a wireguard-go socket of that name exists")
        return dev.ns, dev.name

    async def _set(self, dev: _Device, args: list[str], private_key: str = "") -> None:
        ns, name = self._wg_target(dev)
        key = private_key.encode() if "private-key" in args else None
        await netns.exec_in(ns, "wg", "set", name, *args, input=key)

    async def _dump(self, dev: _Device) -> _Dump:
        ns, name = self._wg_target(dev)
        text = await netns.exec_in(ns, "wg", "show", name, "dump")
        return _parse_dump(text, dev.name, dev.device, dev.backend)

    # --- removal ----------------------------------------------------------------------

    async def _destroy(self, dev: _Device) -> None:
        """Remove every piece of `dev` that exists (process, links, socket, files)."""
        await self._process(dev).stop()  # a no-op without a recorded process

        def unlink() -> None:
            if dev.ns and netns.exists(dev.ns):
                links.delete(dev.name, dev.ns)
                links.delete(dev.device, dev.ns)
            if self.public_ns is None or netns.exists(self.public_ns):
                links.delete(dev.device, self.public_ns)

        await asyncio.to_thread(unlink)
        (UAPI_DIR / f"{dev.device}.sock").unlink(missing_ok=True)  # left by a kill -9
        for suffix in (".json", ".json.tmp", ".pid", ".tmp", ".log", ".old"):
            self._path(dev.device, suffix).unlink(missing_ok=True)
