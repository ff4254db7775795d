"""The node's bus API: every command a node serves, its request and its answer.

Both sides read this module: the node registers its handlers under these names
(`zos.node.api`) and checks payloads with these models; clients (`NodeClient`, the SDK,
the tests' helpers, the benchmarks, the local grid) send them. It imports nothing of the
node. Deployments travel as zos JSON (reference/gridtypes.md): the node's engine checks
them (`zos.gridtypes.Deployment.from_dict` reads them back).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from zos.bus.errors import BusError, describe_error
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.names import MAX_NAME_LENGTH, NAME_PATTERN
from zos.identity.datakey import MAX_SEALED

DEPLOY = "zos.deployment.deploy"  # a signed deployment, version 0 -> None
UPDATE = "zos.deployment.update"  # the deployment with version + 1 -> None
GET = "zos.deployment.get"  # ContractArgs -> a deployment with each workload's result
LIST = "zos.deployment.list"  # None -> the sender's deployments
CHANGES = "zos.deployment.changes"  # ContractArgs -> every workload state change, oldest first
DELETE = "zos.deployment.delete"  # ContractArgs -> None
STATISTICS = "zos.statistics.get"  # None -> Statistics
VERSION = "zos.system.version"  # None -> Version
ZMACHINE_LOGS = "zos.zmachine.logs"  # LogsArgs -> LogsChunk
# A deployment's data key (encryption at rest; the node's side is zos.node.api_keys).
UNLOCK = "zos.deployment.unlock"  # UnlockArgs -> Unlocked
SHARE = "zos.deployment.share"  # ShareArgs -> None (owner only)
UNSHARE = "zos.deployment.unshare"  # UnshareArgs -> None (owner only)
ENCRYPTION = "zos.deployment.encryption"  # ContractArgs -> Encryption
# The node's networking, for clients that plan networks across nodes (reference/network.md;
# the node's side is zos.node.api_network).
LIST_WG_PORTS = "zos.network.list_wg_ports"  # None -> [port]: listen ports taken here
PUBLIC_CONFIG = "zos.network.public_config_get"  # None -> PublicConfig; not_found: none
INTERFACES = "zos.network.interfaces"  # None -> Interfaces
LIST_PRIVATE_IPS = "zos.network.list_private_ips"  # NetworkArgs -> [ip]: the sender's machines
WG_PEERS = "zos.network.wg_peers"  # NetworkArgs -> {public key: latest handshake, unix s}

ENGINE_COMMANDS = (DEPLOY, UPDATE, GET, LIST, CHANGES, DELETE, STATISTICS, VERSION, ZMACHINE_LOGS)
KEY_COMMANDS = (UNLOCK, SHARE, UNSHARE, ENCRYPTION)
NETWORK_COMMANDS = (LIST_WG_PORTS, PUBLIC_CONFIG, INTERFACES, LIST_PRIVATE_IPS, WG_PEERS)
COMMANDS = ENGINE_COMMANDS + KEY_COMMANDS + NETWORK_COMMANDS

# A followed log request with nothing new waits this long on the node (a long poll);
# one answer carries at most MAX_LOG_CHUNK bytes of output.
FOLLOW_WAIT = 20.0
MAX_LOG_CHUNK = 256 * 1024

U64 = 1 << 64
MAX_COPIES = 32  # twins one deployment's key may be sealed to (its owner and teammates)
Args = TypeVar("Args", bound=BaseModel)


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContractArgs(Request):
    contract_id: int = Field(ge=1, lt=U64)


class LogsArgs(Request):
    contract_id: int = Field(ge=1, lt=U64)
    name: str = Field(min_length=1, max_length=36, pattern=r"^[a-zA-Z0-9_]+$")
    offset: int = Field(default=0, ge=0)
    follow: bool = False


class UnlockArgs(Request):
    """`key`: a key message sealed to the node (`zos.identity.datakey.seal_for_node`);
    `copies` (the first key only): twin -> the key sealed to that twin, the owner's at least."""

    contract_id: int = Field(ge=1, lt=U64)
    key: str = Field(min_length=1, max_length=2 * MAX_SEALED)
    copies: dict[int, str] = Field(default_factory=dict, max_length=MAX_COPIES)


class UnshareArgs(Request):
    contract_id: int = Field(ge=1, lt=U64)
    twin: int = Field(ge=1, lt=1 << 32)


class ShareArgs(UnshareArgs):
    copy_: str = Field(alias="copy", min_length=1, max_length=2 * MAX_SEALED)


class NetworkArgs(Request):
    """One of the sender's networks, by the name its workloads give it."""

    network_name: str = Field(
        min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN.pattern
    )


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LogsChunk(Answer):
    """Output from the offset asked for; ask again from `offset` for what comes next."""

    data: str = ""
    offset: int = 0


class Users(Answer):
    deployments: int = 0
    workloads: int = 0
    last_deployment_timestamp: int = 0


class Statistics(Answer):
    total: Capacity
    used: Capacity  # what deployments hold plus `system`
    system: Capacity  # what the node keeps back for itself
    users: Users


class Version(Answer):
    zos: str
    zinit: str = ""


class Unlocked(Answer):
    contract_id: int
    encrypted: bool
    locked: bool


class Encryption(Answer):
    """`copy`: the asker's sealed copy of the key; `shared` (for the owner only): the
    twins it is shared with."""

    contract_id: int
    owner: int
    encrypted: bool
    locked: bool
    copy_: str | None = Field(default=None, alias="copy")
    shared: list[int] = Field(default_factory=list)


class PublicConfig(Answer):
    """The node's public interface, as zos reports it: addresses with their prefix
    (CIDR), gateways bare; "" for what is not set. `type` is always zos's "macvlan"."""

    type: str = "macvlan"
    ipv4: str = ""
    ipv6: str = ""
    gw4: str = ""
    gw6: str = ""
    domain: str = ""


class Interfaces(Answer):
    """The node's addresses: `zos`, its public side (where other nodes reach its
    WireGuard ports); `ygg`, its Yggdrasil overlay's (none here)."""

    zos: list[str] = Field(default_factory=list)
    ygg: list[str] = Field(default_factory=list)


class Ports(RootModel[list[int]]):
    pass


class PrivateIps(RootModel[list[str]]):
    pass


class Handshakes(RootModel[dict[str, int]]):
    """Per peer public key, the unix time of its latest handshake (0: never)."""


def parse(model: type[Args], payload: Any, *, code: str = "invalid") -> Args:
    """`payload` read as `model`, or a BusError naming the first field that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise BusError(code, describe_error(e, root="payload")) from None
