"""The registry's entities, as pydantic models (the JSON stored in KV and sent to clients).

Times are unix seconds. Capacity is counted as ThreeFold does: `cru` virtual cores,
`mru`/`sru`/`hru` bytes of memory, SSD and HDD. A node's `status` is derived when it is
read: `up` while its last heartbeat is at most `down_after` seconds old (by default
HEARTBEAT_PERIOD * MISSED_HEARTBEATS), `down` after.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zos.bus.errors import describe_error
from zos.identity import Identity, verify_ed25519

# What `zos.registry` re-exports (the rest is for the registry's own modules).
__all__ = [
    "DOWN_AFTER",
    "HEARTBEAT_PERIOD",
    "MISSED_HEARTBEATS",
    "Capacity",
    "ContractEvent",
    "Farm",
    "JoinToken",
    "KeyChange",
    "Location",
    "NameContract",
    "Node",
    "NodeContract",
    "PublicConfig",
    "Twin",
]

HEARTBEAT_PERIOD = 10.0  # seconds between a node's heartbeats
MISSED_HEARTBEATS = 3  # a node is down after this many heartbeats are missed
DOWN_AFTER = HEARTBEAT_PERIOD * MISSED_HEARTBEATS

Id = Annotated[int, Field(ge=1, lt=1 << 53)]
Amount = Annotated[int, Field(ge=0, lt=1 << 60)]
HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

FARM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{2,39}$"
CONTRACT_NAME = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
DEPLOYMENT_HASH = r"^[0-9a-f]{32,128}$"
MAX_PUBLIC_IPS = 64
# A domain a farmer sets: two or more lowercase labels, none starting or ending in '-'.
_LABEL = r"[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?"
DOMAIN = rf"(?=.{{1,253}}$)({_LABEL}\.)+{_LABEL}"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Capacity(Model):
    cru: Amount = 0
    mru: Amount = 0
    sru: Amount = 0
    hru: Amount = 0

    def minus(self, other: Capacity) -> Capacity:
        return Capacity(
            cru=max(0, self.cru - other.cru),
            mru=max(0, self.mru - other.mru),
            sru=max(0, self.sru - other.sru),
            hru=max(0, self.hru - other.hru),
        )

    def covers(self, other: Capacity) -> bool:
        return (
            self.cru >= other.cru
            and self.mru >= other.mru
            and self.sru >= other.sru
            and self.hru >= other.hru
        )


class Location(Model):
    country: str = Field(default="", max_length=64)
    city: str = Field(default="", max_length=64)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class PublicConfig(Model):
    """A node's public network config; empty strings mean unset."""

    ipv4: str = ""  # address with prefix, e.g. 185.1.2.3/24
    gw4: str = ""
    ipv6: str = ""
    gw6: str = ""
    domain: str = Field(default="", max_length=253, pattern=r"^([A-Za-z0-9.\-]*)$")

    @field_validator("ipv4", "ipv6")
    @classmethod
    def _interface(cls, v: str, info: object) -> str:
        if v:
            iface = ipaddress.ip_interface(v)  # ValueError names the bad address
            want = 4 if getattr(info, "field_name", "") == "ipv4" else 6
            if iface.version != want:
                raise ValueError(f"not an IPv{want} address with prefix")
        return v

    @field_validator("gw4", "gw6")
    @classmethod
    def _address(cls, v: str, info: object) -> str:
        if v:
            addr = ipaddress.ip_address(v)
            want = 4 if getattr(info, "field_name", "") == "gw4" else 6
            if addr.version != want:
                raise ValueError(f"not an IPv{want} address")
        return v

    @property
    def gateway(self) -> bool:
        """Whether the node can serve gateways to the web: a public IPv4 and a domain."""
        return bool(self.ipv4 and self.domain)

    def check_complete(self) -> None:
        """For a config a farmer sets: none at all (every field empty), or an IPv4 with
        its gateway, optionally an IPv6 with its own, and optionally a domain (a DNS
        name). ValueError naming the field otherwise."""
        if self == PublicConfig():
            return
        for addr, gw in (("ipv4", "gw4"), ("ipv6", "gw6")):
            iface, gateway = getattr(self, addr), getattr(self, gw)
            if addr == "ipv4" and not iface:
                raise ValueError("ipv4: a public config needs an IPv4 address (with prefix)")
            if bool(iface) != bool(gateway):
                raise ValueError(f"{gw}: {addr} and {gw} go together")
            if not iface:
                continue
            network = ipaddress.ip_interface(iface).network
            if ipaddress.ip_address(gateway) not in network:
                raise ValueError(f"{gw}: {gateway} is not in {addr}'s network {network}")
            if ipaddress.ip_address(gateway) == ipaddress.ip_interface(iface).ip:
                raise ValueError(f"{gw}: is {addr}'s own address")
        if self.domain and not re.fullmatch(DOMAIN, self.domain):
            raise ValueError(
                f"domain: {self.domain!r} is not a DNS name (lowercase labels of a-z, 0-9 "
                "and '-', at least two)"
            )


class Twin(Model):
    id: Id
    public_key: HexKey
    created: float

    @property
    def public_key_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key)


class Farm(Model):
    id: Id
    name: str = Field(pattern=FARM_NAME)
    owner_twin: Id
    created: float


class Node(Model):
    id: Id
    farm_id: Id
    twin_id: Id
    capacity: Capacity
    used: Capacity = Field(default_factory=Capacity)
    location: Location = Field(default_factory=Location)
    public_config: PublicConfig = Field(default_factory=PublicConfig)
    created: float
    last_heartbeat: float
    status: Literal["up", "down"] = "down"  # derived on read, never trusted from storage

    @property
    def free(self) -> Capacity:
        return self.capacity.minus(self.used)

    def with_status(self, now: float, down_after: float = DOWN_AFTER) -> Node:
        status: Literal["up", "down"] = "up" if now - self.last_heartbeat <= down_after else "down"
        return self.model_copy(update={"status": status})


class NodeContract(Model):
    type: Literal["node"] = "node"
    id: Id
    node_id: Id
    owner_twin: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)
    public_ips: int = Field(default=0, ge=0, le=MAX_PUBLIC_IPS)
    state: Literal["created", "deleted"] = "created"
    created: float
    updated: float


class NameContract(Model):
    type: Literal["name"] = "name"
    id: Id
    name: str = Field(pattern=CONTRACT_NAME)
    owner_twin: Id
    state: Literal["created", "deleted"] = "created"
    created: float
    updated: float


Contract = Annotated[NodeContract | NameContract, Field(discriminator="type")]


class ContractEvent(Model):
    """A change to a node contract, as stored on the registry's event stream and pushed,
    signed, to the contract's node."""

    kind: Literal["created", "updated", "cancelled"]
    contract: NodeContract
    at: float
    seq: int = 0  # its stream sequence (0 in the stream itself: known once stored)


class KeyChange(Model):
    """A twin's key was rotated: everyone caching `old_key` for this twin forgets it."""

    twin_id: Id
    old_key: HexKey
    new_key: HexKey
    at: float
    seq: int = 0


def rotation_message(twin_id: int, old_key: str, new_key: str) -> bytes:
    """What the new key signs to show its holder asked for it (a rotate_key proof)."""
    return json.dumps(["zos-key-rotation-1", twin_id, old_key, new_key]).encode()


class JoinToken(Model):
    """A farm owner's permission for a node twin (or any twin: 0) to join the farm, and
    the registry key the node is to trust: the node pins it at its first join, so it is
    told whom to trust by its farmer, never by the bus.

    Signed by the owner's ed25519 key over the canonical JSON of every other field.
    Passed around as `encode()`: base64url of its JSON.
    """

    farm_id: Id
    node_twin: int = Field(ge=0, lt=1 << 53)  # 0: any twin may use it
    expires: float
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    registry_key: HexKey
    signature: str = Field(default="", pattern=r"^([0-9a-f]{128})?$")

    def signing_bytes(self) -> bytes:
        fields = [
            "zos-join-token-2",
            self.farm_id,
            self.node_twin,
            self.expires,
            self.nonce,
            self.registry_key,
        ]
        return json.dumps(fields, separators=(",", ":")).encode()

    def signed(self, owner: Identity) -> JoinToken:
        return self.model_copy(update={"signature": owner.sign(self.signing_bytes()).hex()})

    def verify(self, owner_public_key: bytes) -> bool:
        if not self.signature:
            return False
        return verify_ed25519(owner_public_key, self.signing_bytes(), bytes.fromhex(self.signature))

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        text = text.strip()
        if not re.match(r"^[A-Za-z0-9_\-]{1,4000}$", text):
            raise ValueError("join token: not base64url text")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return cls.model_validate_json(raw)
        except (ValueError, ValidationError) as e:
            raise ValueError(f"join token: not a valid token ({_first_error(e)})") from None


def _first_error(e: Exception) -> str:
    return describe_error(e) if isinstance(e, ValidationError) else str(e)
