"""Helpers for node tests: an agent subprocess, a twin that deploys, leftover checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hangguard import HANG_GUARD
from zos.bus import BusClient, BusError
from zos.gridtypes import Deployment, SignatureRequest, SignatureRequirement, Workload
from zos.identity import Identity, load_key_file
from zos.nodeapi import NodeClient
from zos.primitives import filesystem, hostproc, loop
from zos.registry import RegistryClient

GiB = 1 << 30
ZOS = [sys.executable, "-m", "zos.cli"]
MiB = 1 << 20


@dataclass
class Farm:
    nats: str
    farmer: RegistryClient
    farm_id: int
    token: str
    registry_key: bytes


@dataclass
class NodeProcess:
    """One node agent as a subprocess; its data directory survives restarts."""

    farm: Farm
    data_dir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    node_id: int = 0
    twin_id: int = 0

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self) -> None:
        argv = [sys.executable, "-m", "zos.cli", "node", "run"]
        argv += ["--farm-id", str(self.farm.farm_id), "--nats", self.farm.nats]
        argv += ["--data-dir", str(self.data_dir), "--heartbeat", "1", *self.args]
        env = {**os.environ, "ZOS_JOIN_TOKEN": self.farm.token}  # never in argv
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    async def wait_ready(self, user: User, timeout: float = HANG_GUARD) -> None:
        """Until the node is registered and answers `zos.system.version` on the bus."""
        deadline = time.monotonic() + timeout
        key_file = self.data_dir / "node-key.json"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            if key_file.exists() and not self.twin_id:
                twin = await user.registry.twin_by_key(load_key_file(key_file).public_key)
                node = await user.registry.node_by_twin(twin.id) if twin else None
                if node is not None:
                    self.twin_id, self.node_id = twin.id, node.id
            if self.twin_id:
                with contextlib.suppress(BusError):
                    await user.node(self).version(timeout=1)
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"node not ready in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0


def owned_deployment(twin_id: int, workloads: list[dict[str, Any]], version: int = 0) -> Deployment:
    """A deployment of `twin_id` that only its owner signs (not signed yet)."""
    return Deployment(
        version=version,
        twin_id=twin_id,
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=twin_id, required=True, weight=1)],
            weight_required=1,
        ),
        workloads=[Workload.from_raw({"version": version, **w}) for w in workloads],
    )


@dataclass
class User:
    """A twin with a registry client and a bus client: what the SDK will be."""

    identity: Identity
    twin_id: int
    registry: RegistryClient
    bus: BusClient

    def deployment(self, workloads: list[dict[str, Any]], version: int = 0) -> Deployment:
        return owned_deployment(self.twin_id, workloads, version)

    async def deploy(self, node: NodeProcess, dep: Deployment) -> Deployment:
        """Create the node contract, sign, send; returns the deployment as sent."""
        contract = await self.registry.create_node_contract(node.node_id, dep.hash_hex())
        dep.contract_id = contract.id
        dep.sign(self.twin_id, self.identity)
        await self.node(node).deploy(dep)
        return dep

    async def update(self, node: NodeProcess, dep: Deployment) -> None:
        await self.registry.update_node_contract(dep.contract_id, dep.hash_hex())
        dep.sign(self.twin_id, self.identity)
        await self.node(node).update(dep)

    def node(self, node: NodeProcess) -> NodeClient:
        return NodeClient(self.bus, node.twin_id, timeout=20)

    async def call(self, node: NodeProcess, command: str, payload: Any = None) -> Any:
        """A command with a payload as given (the node's refusals of bad ones)."""
        return await self.node(node).call(command, payload)

    async def get(self, node: NodeProcess, contract_id: int) -> dict[str, Any]:
        return await self.node(node).get(contract_id)

    async def wait_states(
        self, node: NodeProcess, contract_id: int, want: dict[str, str], timeout: float = HANG_GUARD
    ) -> dict[str, Any]:
        """Poll `get` until each named workload has the wanted state."""
        deadline = time.monotonic() + timeout
        while True:
            dep = await self.get(node, contract_id)
            states = {wl["name"]: wl["result"]["state"] for wl in dep["workloads"]}
            if all(states.get(n) == s for n, s in want.items()):
                return dep
            if time.monotonic() > deadline:
                raise AssertionError(f"states {states}, wanted {want}\n{node.log()[-3000:]}")
            await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], what: str = "", timeout: float = HANG_GUARD) -> None:
    """Until `check()` holds: for a state the node reaches on its own, with no event to
    wait on (the bound only stops a test that would hang; it is not a timing)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what or check}")
        await asyncio.sleep(0.05)


def kill_zdb_server(data_dir: Path) -> None:
    """The node's zdb server outlives its agent on purpose: kill it (by its state file)."""
    try:
        raw = json.loads((data_dir / "zdb-server" / "state.json").read_text())
    except OSError:
        return
    if hostproc.start_time(raw["pid"]) == raw["start_time"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(raw["pid"], signal.SIGKILL)


async def remove_leftovers(directory: Path) -> None:
    for state in directory.glob("*/zdb-server/state.json"):
        kill_zdb_server(state.parent.parent)
    for m in reversed(filesystem.mounts_under(directory)):
        subprocess.run(["umount", "-l", str(m.target)], check=False, capture_output=True)
    for dev in loop.devices_under(directory):
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


def leftovers(data_dir: Path) -> dict[str, Any]:
    """Mounts, loop devices and files a node holds under its data directory's storage
    (files inside a mounted volume belong to the volume, not to the node)."""
    storage = data_dir / "storage"
    files = []
    if storage.exists():
        device = storage.stat().st_dev
        for root, dirs, names in os.walk(storage):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
            files += [str(Path(root, n).relative_to(storage)) for n in names]
    return {
        "mounts": [str(m.target) for m in filesystem.mounts_under(data_dir)],
        "loops": sorted(loop.devices_under(data_dir)),
        "files": sorted(files),
    }


async def victim_with_data(make_user, make_node) -> tuple[User, NodeProcess, int, Path]:  # type: ignore[no-untyped-def]
    """A tenant's volume on a node with a file in it: (user, node, contract id, file)."""
    user = await make_user()
    node = await make_node(user, "--disk", "2G")
    dep = user.deployment([{"name": "data", "type": "volume", "data": {"size": 64 * MiB}}])
    await user.deploy(node, dep)
    await user.wait_states(node, dep.contract_id, {"data": "ok"})
    volume = node.data_dir / "storage" / "volumes" / f"{user.twin_id}-{dep.contract_id}-data"
    (volume / "secret").write_text("the tenant's data")
    return user, node, dep.contract_id, volume / "secret"


def wipe(data_dir: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    """`zos node wipe` of a stopped node: what its workloads left goes."""
    return subprocess.run(
        [*ZOS, "node", "wipe", "--data-dir", str(data_dir), "--netns-prefix", prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
