"""The client's half of encryption at rest: make, send, open and share data keys.

One data key per deployment, made here (`give_new`) before the deployment is sent, and
sealed to the node in its own message (`zos.identity.datakey`); the node keeps a copy
sealed to the owner. To unlock after a reboot the client opens that copy (the node hands
it back, it cannot open it) and sends the key sealed to the node again. Sharing seals
the key to a teammate; the teammate unlocks with its own copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from zos.bus import BusError
from zos.client.errors import GridClientError
from zos.identity import Identity
from zos.identity.datakey import DataKeyError, new_data_key, open_copy, seal_copy, seal_for_node
from zos.nodeapi import NodeClient
from zos.nodeapi.commands import Encryption, Unlocked


class Registry(Protocol):
    async def get_twin(self, twin_id: int) -> Any: ...


class DataKeyRefused(Exception):
    """The client cannot do it (no copy for you, a copy it cannot open)."""


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """A refusal of a key operation (the node's, or a copy that does not open) as a
    GridClientError: `what: why`."""
    try:
        yield
    except (BusError, DataKeyError, DataKeyRefused) as e:
        why = e.message if isinstance(e, BusError) else str(e)
        raise GridClientError(f"{what}: {why}") from None


def _wipe(key: bytearray) -> None:
    key[:] = bytes(len(key))


class DataKeys:
    """One twin's side of its deployments' keys, on any node (its `NodeClient`)."""

    def __init__(self, identity: Identity, twin_id: int, registry: Registry) -> None:
        self.identity = identity
        self.twin_id = twin_id
        self.registry = registry

    async def _public_key(self, twin_id: int) -> bytes:
        return bytes((await self.registry.get_twin(twin_id)).public_key_bytes)

    async def send(
        self,
        node: NodeClient,
        contract_id: int,
        key: bytes | bytearray,
        copies: dict[int, str] | None = None,
    ) -> Unlocked:
        """Send `key` sealed to the node (`zos.deployment.unlock`)."""
        sealed = seal_for_node(
            self.identity,
            self.twin_id,
            node.twin_id,
            await self._public_key(node.twin_id),
            contract_id,
            key,
        )
        return await node.unlock(contract_id, sealed, copies)

    async def give_new(self, node: NodeClient, contract_id: int) -> None:
        """A new deployment's key: made here, sent before the deployment, a copy sealed to
        you kept by the node."""
        key = new_data_key()
        try:
            own = seal_copy(self.identity.public_key, contract_id, key)
            await self.send(node, contract_id, key, {self.twin_id: own})
        finally:
            _wipe(key)

    async def status(self, node: NodeClient, contract_id: int) -> Encryption:
        """Encrypted, locked, your sealed copy and (yours) who it is shared with, as the
        node tells it."""
        return await node.encryption(contract_id)

    async def _own_key(self, node: NodeClient, contract_id: int) -> tuple[bytearray, Encryption]:
        status = await self.status(node, contract_id)
        if not status.encrypted:
            raise DataKeyRefused(
                f"deployment {contract_id} is not encrypted (it was deployed without a key)"
            )
        if status.copy_ is None:
            raise DataKeyRefused(
                f"deployment {contract_id}: the node has no copy of its key for you"
            )
        return open_copy(self.identity, contract_id, status.copy_), status

    async def unlock(self, node: NodeClient, contract_id: int) -> bool:
        """Open your copy and send the key; whether the deployment was locked."""
        key, status = await self._own_key(node, contract_id)
        try:
            await self.send(node, contract_id, key)
        finally:
            _wipe(key)
        return status.locked

    async def share(self, node: NodeClient, contract_id: int, twin: int) -> None:
        """Let `twin` unlock the deployment: the key sealed to it, kept by the node."""
        key, _ = await self._own_key(node, contract_id)
        try:
            copy = seal_copy(await self._public_key(twin), contract_id, key)
        finally:
            _wipe(key)
        await node.share(contract_id, twin, copy)

    async def unshare(self, node: NodeClient, contract_id: int, twin: int) -> None:
        await node.unshare(contract_id, twin)
