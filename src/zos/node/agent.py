"""The node agent: identity, registration, heartbeat, the bus API and the contract watch.

Settings come only from flags or the environment (see `zos node run`). The agent
opens no listening socket: it connects out to NATS with its own key, registers its twin
and node in the registry, serves signed requests on its twin's subject and follows the
registry's contract events for this node. It trusts the registry key named in the
farm's join token at its first join, pinned in its data directory ever after: every
registry answer and event must be signed by that key, and a deployment is removed for a
cancelled contract only once a signed `get_contract` says it is cancelled. Every
workload type has its manager (`zos.node.workloads.MANAGERS`); zmachines take their root
file systems from a node-wide flist cache under the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from zos.bus import BusClient, BusError, Connection, connect
from zos.bus.subjects import node_events_subject, twin_subject
from zos.gridtypes import Capacity as GridCapacity
from zos.identity import Identity, load_key_file, write_key_file
from zos.node.api import node_router
from zos.node.api_keys import keys_router
from zos.node.api_network import network_router
from zos.node.capacity import Offer
from zos.node.engine import Engine
from zos.node.gatewayproxy import AcmeSettings, NodeProxy
from zos.node.keystore import KeyStore
from zos.node.registryview import SignedRegistry
from zos.node.services import RegistryView
from zos.node.store import Store
from zos.node.workloads import NodeServices, close_managers, default_managers, install_order
from zos.primitives.proxy import LETS_ENCRYPT
from zos.primitives.signals import stop_on_signals
from zos.registry import (
    HEARTBEAT_PERIOD,
    Capacity,
    ContractEvent,
    JoinToken,
    Node,
    RegistryClient,
)

log = logging.getLogger(__name__)

KEY_FILE = "node-key.json"
REGISTRY_KEY_FILE = "registry-key"
STATE_DB = "state.db"
CONTRACT_SEQ = "contract_event_seq"
FLIST_CACHE = "flist-cache"
PROXY_DIR = "proxy"
# The flist cache by default: a tenth of the data disk, at most this much.
CACHE_CAP = 4 << 30
# Registry errors worth waiting out (it is starting, or busy) rather than giving up on.
TRANSIENT = ("unavailable", "timeout", "internal", "busy")
# Seconds between catch-ups of contract events (a backstop for a push that was lost).
CATCH_UP_EVERY = 30.0


@dataclass
class Settings:
    farm_id: int
    nats: str
    data_dir: Path
    join_token: str | None = None
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    # Of the disk, bytes offered as HDD units (hru: zdb); the rest is SSD (sru).
    hdd: int | None = None
    heartbeat: float = HEARTBEAT_PERIOD
    # Bytes the flist cache may hold (None: `default_cache_size`).
    cache_size: int | None = None
    # Block stores every flist is fetched from (empty: the routes each flist names).
    stores: list[str] = field(default_factory=list)
    # Put before every namespace name the node makes, so several nodes share one machine.
    netns_prefix: str = ""
    # Where the node's zdb server listens: "HOST:PORT" or ":PORT" (HOST: the node's address).
    zdb_listen: str = ""
    # The ACME directory gateway certificates come from, and the CA its TLS is checked
    # with (None: the system's; a local pebble's own certificate in the local grid).
    acme_url: str = LETS_ENCRYPT
    acme_ca: Path | None = None


def default_cache_size(data_dir: Path) -> int:
    """A tenth of the disk holding the data directory, at most CACHE_CAP."""
    return min(shutil.disk_usage(data_dir).total // 10, CACHE_CAP)


def load_or_create_identity(data_dir: Path) -> Identity:
    """The node's key: created on first start (mode 0600), the same ever after."""
    path = data_dir / KEY_FILE
    if path.exists():
        return load_key_file(path)
    identity = Identity.generate()
    write_key_file(path, identity)
    return identity


def registry_key_to_trust(data_dir: Path, join_token: str | None) -> str:
    """The registry key (hex) this node trusts: the one pinned at its first join, else
    the one its join token names (pinned by `pin_registry_key` once the join worked)."""
    named = None
    if join_token:
        try:
            named = JoinToken.decode(join_token).registry_key
        except ValueError as e:
            raise RuntimeError(f"--join-token: {e}") from None
    path = data_dir / REGISTRY_KEY_FILE
    if path.exists():
        pinned = path.read_text().strip()
        if named is not None and named != pinned:
            raise RuntimeError(
                f"the join token names registry key {named[:16]}..., but this node trusts "
                f"{pinned[:16]}... (pinned in {path} at its first join); a node moves to "
                "another grid only with a new data directory"
            )
        return pinned
    if named is None:
        raise RuntimeError("first start needs a farm join token (--join-token or ZOS_JOIN_TOKEN)")
    return named


def pin_registry_key(data_dir: Path, key_hex: str) -> None:
    path = data_dir / REGISTRY_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_hex + "\n")


def _registry_capacity(c: GridCapacity) -> Capacity:
    return Capacity(cru=c.cru, mru=c.mru, sru=c.sru, hru=c.hru)


def node_services(settings: Settings, registry: RegistryView | None = None) -> NodeServices:
    """What the managers share, built once: the node-wide flist cache and its fetch
    policy, the control plane, the registry, the namespace prefix, where zdb listens."""
    from zos.flist.cache import FlistCache
    from zos.flist.policy import FetchPolicy
    from zos.node.controlplane import control_plane
    from zos.primitives import links

    s = settings
    size = s.cache_size if s.cache_size is not None else default_cache_size(s.data_dir)
    # Walled off from tenants, whatever their address (the uplink rules), and never where
    # a tenant's flist is fetched from unless it is a configured store.
    control = tuple(control_plane(s.nats, s.stores))
    policy = FetchPolicy(s.stores, control, local=lambda: [a.ip for a in links.all_addresses()])
    cache = FlistCache(s.data_dir / FLIST_CACHE, size, list(s.stores) or None, policy)
    return NodeServices(
        data_dir=s.data_dir,
        netns_prefix=s.netns_prefix,
        flist_cache=cache,
        fetch_policy=policy,
        control_plane=control,
        registry=registry,
        zdb_listen=s.zdb_listen,
        proxy=NodeProxy(s.data_dir / PROXY_DIR, AcmeSettings(s.acme_url, s.acme_ca)),
    )


async def wipe(settings: Settings) -> None:
    """Remove every workload this node made (containers, mounts, loop devices, network
    namespaces, images, data keys in the kernel), as when a machine leaves the grid.
    Needs no NATS: it works from the data directory alone, with each manager's own
    clean-up of leftovers."""
    services = node_services(settings)
    managers = default_managers(services)
    try:
        for wtype in reversed(install_order(managers)):
            await managers[wtype].cleanup(set())
        if isinstance(services.proxy, NodeProxy):
            await services.proxy.stop()
        keys = KeyStore(settings.data_dir)
        keys.forget_all()
        keys.close()
    finally:
        await close_managers(managers)
        services.close()


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.twin_id = 0
        self.node_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._checked_all = False

    async def start(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.identity = load_or_create_identity(self.data_dir)
        registry_key = registry_key_to_trust(self.data_dir, s.join_token)
        self.offer = Offer.measure(self.data_dir, s.cores, s.memory, s.disk, s.hdd)
        self.conn: Connection = await connect(s.nats, self.identity, name="zos-node")
        self.registry = RegistryClient(
            self.conn, self.identity, registry_key=bytes.fromhex(registry_key)
        )
        await self.registry.connect()
        await self._register()
        pin_registry_key(self.data_dir, registry_key)
        self.store = Store(self.data_dir / STATE_DB)
        resolver = await self.registry.key_resolver()
        grid = SignedRegistry(self.registry, resolver, self.node_id)
        self.services = node_services(self.settings, grid)
        self.keys = self.services.keys = KeyStore(self.data_dir)
        self.engine = Engine(
            self.store,
            default_managers(self.services),
            self.services,
            self.offer,
            grid,
            self.node_id,
        )
        self.services.report_failure = self.engine.fail
        await self.engine.start()
        self._tasks.append(asyncio.create_task(self._start_proxy(grid)))
        self.bus = BusClient(self.conn, self.identity, self.twin_id, resolver)
        router = node_router(self.engine)
        router.include(
            keys_router(self.engine, self.keys, grid, self.identity, self.twin_id, self.node_id)
        )
        router.include(network_router(self.services.networks, grid))
        await self.bus.serve(router)
        self._events: asyncio.Queue[ContractEvent | None] = asyncio.Queue()
        await self.registry.subscribe_contract_events(self.node_id, self._events.put)
        await self._check_permitted()
        self.conn.on_reconnect(self._catch_up_soon)
        self._tasks += [
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._follow_contracts()),
        ]
        log.info("node %s (twin %s) serving on the bus", self.node_id, self.twin_id)

    async def _start_proxy(self, grid: SignedRegistry) -> None:
        """A node with a public config serves gateways: its proxy runs from the start
        (otherwise the first gateway workload starts it)."""
        try:
            config = await grid.public_config()
            if config is not None and self.services.proxy is not None:
                await self.services.proxy.ensure(config)
        except Exception as e:  # a gateway workload tries again, and says why
            log.warning("the reverse proxy did not start: %s", e)

    async def _register(self) -> None:
        """Register twin and node, retrying while the registry is not there yet."""
        delay = 0.2
        while True:
            try:
                twin = await self.registry.ensure_twin()
                self.twin_id = twin.id
                node = await self.registry.node_by_twin(twin.id)
                if node is not None and node.farm_id != self.settings.farm_id:
                    raise RuntimeError(
                        f"this node is node {node.id} of farm {node.farm_id}, "
                        f"not of farm {self.settings.farm_id}"
                    )
                if node is None:
                    if not self.settings.join_token:
                        raise RuntimeError(
                            "this node is not registered (any more): its first start needs a "
                            "farm join token (ZOS_JOIN_TOKEN or --join-token-file)"
                        )
                    node = await self._join()
                elif self.settings.join_token:
                    # Refresh the registered capacity; a token that expired since the first
                    # start must not keep a registered node from coming back.
                    try:
                        node = await self._join()
                    except BusError as e:
                        if e.code in TRANSIENT:
                            raise
                        log.warning("node record not refreshed: %s", e.message)
                self.node_id = node.id
                await self.registry.heartbeat(self.node_id, _registry_capacity(self.offer.system))
                return
            except BusError as e:
                if e.code not in TRANSIENT:
                    raise RuntimeError(f"registration refused: {e.message}") from None
                log.warning("registry not ready (%s); retrying", e.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _join(self) -> Node:
        assert self.settings.join_token
        return await self.registry.register_node(
            self.settings.farm_id,
            self.settings.join_token,
            _registry_capacity(self.offer.total),
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await self.registry.heartbeat(self.node_id, _registry_capacity(self.engine.used()))
            except Exception as e:  # the bus reconnects by itself; keep beating
                log.warning("heartbeat failed: %s", e)

    async def _check_permitted(self) -> None:
        """nats-server must let us serve our subject and hear our events; if it does not,
        the role we connected with is stale (a registration another server has not seen
        yet): reconnect until it does."""
        subjects = [twin_subject(self.twin_id), node_events_subject(self.node_id)]
        for attempt in range(10):
            await self.conn.settle()
            refused = [s for s in subjects if self.conn.refused(s, "subscription")]
            if not refused:
                return
            log.warning("nats-server does not (yet) let this node use %s", ", ".join(refused))
            await asyncio.sleep(0.2 * attempt)
            await self.conn.renew()
        raise RuntimeError("nats-server does not let this node serve its subject")

    async def _catch_up_soon(self) -> None:
        await self._events.put(None)  # after a reconnect: pushed events may have been lost

    async def _follow_contracts(self) -> None:
        """Take down deployments whose contract was cancelled, now and while we were away:
        catch up from the last event handled (at start, after a reconnect, and every
        CATCH_UP_EVERY seconds), then handle events as the registry pushes them."""
        catch_up = True
        while True:
            try:
                if catch_up:
                    await self._catch_up()
                    catch_up = False
                try:
                    event = await asyncio.wait_for(self._events.get(), CATCH_UP_EVERY)
                except TimeoutError:
                    event = None
                if event is None:
                    catch_up = True
                elif event.seq > self._last_seq():
                    await self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("contract events interrupted (%s); catching up again", e)
                catch_up = True
                await asyncio.sleep(1.0)

    def _last_seq(self) -> int:
        seq = self.store.meta(CONTRACT_SEQ)
        return int(seq) if seq else 0

    async def _catch_up(self) -> None:
        if not self._checked_all:  # once per start: events older than the stream's age
            for contract_id in self.engine.active_contracts():
                await self._confirm_cancelled(contract_id)
            self._checked_all = True
        while True:
            events = await self.registry.contract_events(self.node_id, self._last_seq())
            for event in events:
                await self._on_event(event)
            if len(events) < 100:
                return

    async def _on_event(self, event: ContractEvent) -> None:
        if event.kind == "cancelled":
            await self._confirm_cancelled(event.contract.id)
        self.store.set_meta(CONTRACT_SEQ, str(event.seq))

    async def _confirm_cancelled(self, contract_id: int) -> None:
        """Delete a deployment only when a signed answer of the registry says its
        contract is cancelled (or gone): never on an event alone."""
        if contract_id not in self.engine.active_contracts():
            return
        info = await self.engine.grid.node_contract(contract_id)
        if info is None or not info.active:
            log.info("contract %s is cancelled or gone: deleting its deployment", contract_id)
            await self.engine.cancel(contract_id)
        else:
            log.warning(
                "contract %s: an event said cancelled, the registry says it is not", contract_id
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.bus.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.engine.wait_idle(), timeout=10)
        await self.engine.close()
        await close_managers(self.engine.managers)
        self.services.close()
        self.store.close()
        self.keys.close()
        await self.conn.close()

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop."""
        stop_on_signals(self._stopped)
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()
