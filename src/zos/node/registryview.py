"""The registry as a node sees it (`zos.node.services.RegistryView`), over the bus.

Every answer comes through the node's `RegistryClient`, which refuses one not signed by
the registry key the node pinned at its first join. Twin keys are cached (and forgotten
when the registry announces a key change); contracts and names are asked afresh.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from zos.bus import BusError
from zos.bus.resolver import KeyResolver
from zos.node.services import ContractInfo, NameContractInfo
from zos.registry import NameContract, NodeContract, PublicConfig, RegistryClient

# A lookup of something that is not there (or not of the kind asked for).
ABSENT = ("not_found", "invalid")
T = TypeVar("T")


async def _found(lookup: Awaitable[object], kind: type[T]) -> T | None:
    """The registry's answer if it is a `kind`, or None where there is no such thing."""
    try:
        found = await lookup
    except BusError as e:
        if e.code in ABSENT:
            return None
        raise
    return found if isinstance(found, kind) else None


def _active(contract: NodeContract | NameContract) -> bool:
    """A contract binds until it is deleted (its state is then `deleted`)."""
    return contract.state == "created"


def _contract_info(contract: NodeContract) -> ContractInfo:
    return ContractInfo(
        id=contract.id,
        node_id=contract.node_id,
        owner_twin=contract.owner_twin,
        deployment_hash=contract.deployment_hash,
        active=_active(contract),
    )


def _name_info(contract: NameContract) -> NameContractInfo:
    return NameContractInfo(
        id=contract.id,
        name=contract.name,
        owner_twin=contract.owner_twin,
        active=_active(contract),
    )


class SignedRegistry:
    def __init__(self, registry: RegistryClient, resolver: KeyResolver, node_id: int) -> None:
        self.registry = registry
        self.resolver = resolver
        self.node_id = node_id

    async def twin_key(self, twin_id: int) -> bytes | None:
        return await self.resolver(twin_id)

    async def node_contract(self, contract_id: int) -> ContractInfo | None:
        contract = await _found(self.registry.get_contract(contract_id), NodeContract)
        return None if contract is None else _contract_info(contract)

    async def name_contract(self, name: str) -> NameContractInfo | None:
        contract = await _found(self.registry.get_name_contract(name), NameContract)
        return None if contract is None else _name_info(contract)

    async def public_config(self) -> PublicConfig | None:
        config = (await self.registry.get_node(self.node_id)).public_config
        return None if config == PublicConfig() else config
