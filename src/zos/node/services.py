"""What the managers of one node share: typed fields, built once by the agent.

`zos.node.agent.node_services` fills them from the node's settings; a test builds one
with just a data directory and the fields it needs. Nothing here does any work: each
field is a service or a setting a manager reads.

The registry is seen through `RegistryView` (every answer signed by the registry key
the node pinned). The reverse proxy (gateways) and the key store (encryption at rest)
are small protocols; None when the node has none (no key store in `wipe`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from zos.node.networks import Networks
from zos.primitives.supervisor import Backoff

if TYPE_CHECKING:
    from zos.flist.cache import FlistCache
    from zos.flist.policy import FetchPolicy
    from zos.primitives.fscrypt import KeyringKey
    from zos.registry.models import PublicConfig


@dataclass(frozen=True)
class ContractInfo:
    """What the node needs to know about a node contract in the registry."""

    id: int
    node_id: int
    owner_twin: int
    deployment_hash: str
    active: bool


@dataclass(frozen=True)
class NameContractInfo:
    """A name contract: who owns the name (a gateway name proxy must be its owner's)."""

    id: int
    name: str
    owner_twin: int
    active: bool


class RegistryView(Protocol):
    """The registry as the node sees it; every answer is signed by the pinned key.

    None from a lookup: no such twin, contract or name (or not the kind asked for).
    """

    async def twin_key(self, twin_id: int) -> bytes | None: ...

    async def node_contract(self, contract_id: int) -> ContractInfo | None: ...

    async def name_contract(self, name: str) -> NameContractInfo | None: ...

    async def public_config(self) -> PublicConfig | None:
        """This node's public config as the registry has it (None: it has none)."""
        ...


class ReverseProxy(Protocol):
    """The node's one reverse proxy, for gateway workloads (`zos.node.gatewayproxy`)."""

    netns: str | None  # the namespace it runs in (None: the agent's own)

    async def ensure(self, config: PublicConfig | None) -> Any:
        """Running with the settings the node's public config asks for."""
        ...

    async def set_route(self, route: Any, timeout: float = ...) -> None: ...

    async def remove_route(self, name: str, timeout: float = ...) -> bool: ...

    def routes(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class KeyStore(Protocol):
    """Data keys of deployments, for encryption at rest: given by their owners, held by
    the kernel, never kept by the node (`zos.node.keystore.KeyStore` has this shape)."""

    def kernel_key(self, contract_id: int) -> KeyringKey | None:
        """The deployment's key as the kernel holds it (None: the deployment has no key,
        its data is not encrypted); raises `zos.node.keystore.Locked` when the kernel
        lost it (a reboot)."""
        ...

    def locked(self, contract_id: int) -> bool: ...

    def forget(self, contract_id: int) -> None:
        """The deployment is gone: drop its key and its record."""
        ...


@dataclass
class NodeServices:
    """The node's data directory and everything its managers share."""

    data_dir: Path
    # Put before every network namespace name the node makes (several nodes, one machine).
    netns_prefix: str = ""
    # The node-wide cache of verified flist blocks and prepared trees (None: no flists).
    flist_cache: FlistCache | None = None
    # Where a tenant's flist may make the node connect (the cache enforces it).
    fetch_policy: FetchPolicy | None = None
    # The grid's NATS servers and configured stores: walled off from every tenant.
    control_plane: tuple[IPv4Address, ...] = ()
    # The registry (None when the node runs without the bus: `zos node wipe`).
    registry: RegistryView | None = None
    # "[HOST]:PORT" the node's zdb server listens on ("": the node's address, port 9900).
    zdb_listen: str = ""
    # Directories a zmachine's flist may be a local path under (tests, benchmarks).
    local_flists: tuple[Path, ...] = ()
    # How supervised processes (containers, later VMs) are restarted when they exit.
    backoff: Backoff = field(default_factory=Backoff)
    # The runtime a new zmachine runs under (a name in `zos.node.runtimes.RUNTIMES`).
    machine_runtime: str = "runc"
    proxy: ReverseProxy | None = None
    keys: KeyStore | None = None
    # A manager tells the engine that a workload it built can no longer be (by workload
    # id, with why): a gateway whose name contract went (`Engine.fail`).
    report_failure: Callable[[str, str], Awaitable[None]] | None = None
    _networks: Networks | None = field(default=None, init=False, repr=False, compare=False)

    def storage_dir(self, kind: str) -> Path:
        path = self.data_dir / "storage" / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def networks(self) -> Networks:
        """The node's networks: what they are made of and what is attached to them."""
        if self._networks is None:
            self._networks = Networks(self.data_dir, self.netns_prefix, self.control_plane)
        return self._networks

    def close(self) -> None:
        """The agent is stopping: the flist cache lets go of its database, the proxy's
        watch ends."""
        if self.flist_cache is not None:
            self.flist_cache.close()
        if self.proxy is not None:
            self.proxy.close()  # it keeps serving
