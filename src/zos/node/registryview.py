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


async def _found(lookup: Awaitable[T]) -> T | None:
    """The registry's answer, or None where it says there is no such thing."""
    try:
        return await lookup
    except BusError as e:
        if e.code in ABSENT:
            return None
        raise


class SignedRegistry:
    def __init__(self, registry: RegistryClient, resolver: KeyResolver, node_id: int) -> None:
        self.registry = registry
        self.resolver = resolver
        self.node_id = node_id

    async def twin_key(self, twin_id: int) -> bytes | None:
        return await self.resolver(twin_id)

    async def node_contract(self, contract_id: int) -> ContractInfo | None:
        contract = await _found(self.registry.get_contract(contract_id))
        if not isinstance(contract, NodeContract):
            return None
        return ContractInfo(
            id=contract.id,
            node_id=contract.node_id,
            owner_twin=contract.owner_twin,
            deployment_hash=contract.deployment_hash,
            active=contract.state == "created",
        )

    async def name_contract(self, name: str) -> NameContractInfo | None:
        contract = await _found(self.registry.get_name_contract(name))
        if not isinstance(contract, NameContract):
            return None
        return NameContractInfo(
            id=contract.id,
            name=contract.name,
            owner_twin=contract.owner_twin,
            active=contract.state == "created",
        )

    async def public_config(self) -> PublicConfig | None:
        config = (await self.registry.get_node(self.node_id)).public_config
        return None if config == PublicConfig() else config
