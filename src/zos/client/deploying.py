"""Deploy and wait: send a signed deployment under a new contract, follow it until every
workload is ok (or one fails), and take one down until the node says it is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from zos.bus import BusError
from zos.client.errors import GridClientError, node_answers
from zos.client.views import DeploymentInfo, read_deployment
from zos.gridtypes import Deployment
from zos.identity import Identity
from zos.nodeapi import NodeClient
from zos.registry import RegistryClient

Progress = Callable[[str, str, str, str], None]  # workload name, type, state, message
POLL = 0.3  # seconds between two looks at a deployment's state


async def submit(
    registry: RegistryClient,
    identity: Identity,
    node_id: int,
    node: NodeClient,
    dep: Deployment,
    name: str,
    before: Callable[[NodeClient, int], Awaitable[None]] | None = None,
) -> int:
    """Contract `dep` on the node, sign it and send it; the contract id. `before(node,
    contract id)` runs first once the contract exists (the deployment's data key).
    A node that refuses either (or does not answer) leaves nothing: the contract is
    cancelled again."""
    try:
        contract = await registry.create_node_contract(node_id, dep.hash_hex())
    except BusError as e:
        raise GridClientError(
            f"registry refused the contract on node {node_id}: {e.message}"
        ) from None
    dep.contract_id = contract.id
    dep.sign(dep.twin_id, identity)
    try:
        with node_answers(node_id):
            if before is not None:
                await before(node, contract.id)
            await node.deploy(dep)
    except (BusError, GridClientError) as e:
        with contextlib.suppress(BusError):
            await registry.cancel_contract(contract.id)
        why = e.message if isinstance(e, BusError) else str(e)
        raise GridClientError(
            f"node {node_id} refused deployment '{name}': {why}. Nothing was deployed; "
            "fix the manifest and run it again"
        ) from None
    return contract.id


async def wait_ok(
    node: NodeClient,
    node_id: int,
    contract_id: int,
    name: str,
    progress: Progress | None,
    timeout: float,
) -> DeploymentInfo:
    """Until every workload is ok; GridClientError naming the first that failed, or
    what is still pending after `timeout`."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        with node_answers(node_id):
            info = read_deployment(await node.get(contract_id), node_id, [])
        for w in info.workloads:
            if seen.get(w.name) != w.state:
                seen[w.name] = w.state
                if progress:
                    progress(w.name, w.type, w.state, w.message)
        failed = [w for w in info.workloads if w.state == "error"]
        if failed:
            w = failed[0]
            raise GridClientError(
                f"deployment '{name}': {w.type} '{w.name}' failed on node {node_id}: "
                f"{w.message}. It is left as it is so you can look (`zos ps`, "
                f"`zos logs {name}`); fix the manifest and deploy again (it replaces it), "
                f"or `zos rm {name}`"
            )
        if info.state == "ok":
            return info
        if time.monotonic() > deadline:
            pending = ", ".join(f"{w.name}: {w.state}" for w in info.workloads if w.state != "ok")
            raise GridClientError(
                f"deployment '{name}' on node {node_id} not ready after {timeout:.0f}s "
                f"({pending}); `zos ps` shows it as it goes on"
            )
        await asyncio.sleep(POLL)


async def take_down(
    node: NodeClient, node_id: int, info: DeploymentInfo, timeout: float = 120
) -> None:
    """Ask the node to delete the deployment and wait until it is; a node that is down
    is left alone (cancelling the contract makes it remove it when it is back)."""
    try:
        with node_answers(node_id):
            await node.delete(info.contract_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = await node.get(info.contract_id)
                if read_deployment(raw, node_id, []).state == "deleted":
                    break
                await asyncio.sleep(POLL)
    except BusError as e:
        if e.code != "not_found":
            raise GridClientError(
                f"node {node_id} refused to remove '{info.name}': {e.message}"
            ) from None
    except GridClientError:
        pass
