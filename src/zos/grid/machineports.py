"""A local grid's host ports for a deployment's machines (the `ports:` of a manifest).

The client adds them to `forwards.json` on deploy and drops them on remove; the grid's
forwarder (`zos.grid.forward`) listens on each host port and connects inside the
machine's network namespace. Only a grid on this machine can do that, so this lives
with the local grid, not in the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from zos.grid.natsserver import free_port
from zos.grid.state import Forward, GridState, edit_forwards, load_forwards
from zos.gridtypes.names import workload_id

LISTEN_HOST = "127.0.0.1"
READY_WAIT = 10.0  # the forwarder reads forwards.json every half second


@dataclass(frozen=True)
class MachinePorts:
    name: str  # the machine's workload name
    ip: str  # its address in its private network
    ports: list[int]


def machine_netns(netns_prefix: str, wid: str) -> str:
    """The namespace a node gives a machine: its prefix, `c-` and the workload id (as
    `zos.node.workloads.zmachine` names it)."""
    return f"{netns_prefix}c-{wid}"


def forwards(grid: GridState) -> list[Forward]:
    return load_forwards(Path(grid.state_dir))


async def expose(
    grid: GridState,
    node_id: int,
    twin_id: int,
    deployment: str,
    contract_id: int,
    machines: list[MachinePorts],
) -> list[Forward]:
    """Forward a free host port to each machine port; the forwards, once they listen
    (none when the node is not one of this grid's)."""
    entry = next((n for n in grid.nodes if n.node_id == node_id), None)
    if entry is None:
        return []
    new = [
        Forward(
            deployment=deployment,
            machine=mach.name,
            contract_id=contract_id,
            listen_host=LISTEN_HOST,
            listen_port=free_port(),
            netns=machine_netns(entry.netns_prefix, workload_id(twin_id, contract_id, mach.name)),
            ip=mach.ip,
            port=port,
        )
        for mach in machines
        for port in mach.ports
    ]
    if not new:
        return []
    edit_forwards(Path(grid.state_dir), lambda fs: [*fs, *new])
    deadline = time.monotonic() + READY_WAIT
    for f in new:
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((f.listen_host, f.listen_port), timeout=0.2),
            ):
                break
            await asyncio.sleep(0.1)
    return new


def unexpose(grid: GridState, contract_id: int) -> None:
    """Drop the forwards of a removed deployment."""
    edit_forwards(Path(grid.state_dir), lambda fs: [f for f in fs if f.contract_id != contract_id])
