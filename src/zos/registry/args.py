"""The bodies of registry transactions and the arguments of queries, as pydantic models.

Each refuses unknown fields; a value out of its rule is answered `invalid`, naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zos.registry.models import (
    CONTRACT_NAME,
    DEPLOYMENT_HASH,
    FARM_NAME,
    MAX_PUBLIC_IPS,
    Capacity,
    HexKey,
    Id,
    JoinToken,
    Location,
    PublicConfig,
)

MAX_LIST = 1000


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterTwinArgs(Args):
    public_key: HexKey


class CreateFarmArgs(Args):
    name: str = Field(pattern=FARM_NAME)


class RegisterNodeArgs(Args):
    farm_id: Id
    token: JoinToken
    capacity: Capacity
    location: Location = Field(default_factory=Location)
    public_config: PublicConfig = Field(default_factory=PublicConfig)


class HeartbeatArgs(Args):
    node_id: Id
    used: Capacity = Field(default_factory=Capacity)


class NodeIdArgs(Args):
    node_id: Id


class CreateNodeContractArgs(Args):
    node_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)
    public_ips: int = Field(default=0, ge=0, le=MAX_PUBLIC_IPS)


class UpdateNodeContractArgs(Args):
    contract_id: Id
    deployment_hash: str = Field(pattern=DEPLOYMENT_HASH)


class RotateKeyArgs(Args):
    new_key: HexKey
    proof: str = Field(pattern=r"^[0-9a-f]{128}$")  # the new key's signature of the rotation


class ContractIdArgs(Args):
    contract_id: Id


class NameArgs(Args):
    name: str = Field(pattern=CONTRACT_NAME)


class IdArgs(Args):
    id: Id


class KeyArgs(Args):
    public_key: HexKey


class FarmNameArgs(Args):
    name: str = Field(min_length=1, max_length=64)


class ListFarmsArgs(Args):
    owner_twin: int | None = None


class TwinIdArgs(Args):
    twin_id: Id


class ListNodesArgs(Args):
    farm_id: int | None = None
    status: Literal["up", "down"] | None = None
    free_cru: int = Field(default=0, ge=0)
    free_mru: int = Field(default=0, ge=0)
    free_sru: int = Field(default=0, ge=0)
    free_hru: int = Field(default=0, ge=0)
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_LIST)


class ListContractsArgs(Args):
    twin_id: int | None = None
    node_id: int | None = None
    state: Literal["created", "deleted"] | None = None
    type: Literal["node", "name"] | None = None
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=MAX_LIST, ge=1, le=MAX_LIST)


class ContractEventsArgs(Args):
    node_id: Id
    after_seq: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_LIST)
