"""The zmachine manager's runtimes by name: which one a machine runs under, and that
the manager asks that one (no root: a small fake runtime stands in for runc)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from zos.node.runtimes import RUNTIMES, MachinePlan, MachineStats, RuncRuntime, register
from zos.node.services import NodeServices
from zos.node.workloads.base import WorkloadError
from zos.node.workloads.zmachine import MachineState, ZMachineManager


class FakeRuntime:
    """Machines it "runs" are names in a set; it records what it is asked."""

    name = "fake"
    interface_kind = "veth"

    def __init__(self, node: NodeServices) -> None:
        self.node = node
        self.running = {"7-1-orphan"}  # left by an earlier agent, in no machine's state
        self.stopped: list[str] = []
        self.closed = False

    async def ensure(self, plan: MachinePlan) -> None:
        self.running.add(plan.workload_id)

    async def stop(self, workload_id: str) -> None:
        self.stopped.append(workload_id)
        self.running.discard(workload_id)

    async def list(self) -> list[str]:
        return sorted(self.running)

    def logs(self, workload_id: str) -> Path:
        return self.node.data_dir / "fake-logs" / workload_id

    async def stats(self, workload_id: str) -> MachineStats | None:
        return MachineStats(running=True, pid=42) if workload_id in self.running else None

    async def idle(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node knows one runtime, the fake (runc's cleanup would run the real runc)."""
    monkeypatch.delitem(RUNTIMES, RuncRuntime.name)
    monkeypatch.setitem(RUNTIMES, FakeRuntime.name, FakeRuntime)


def state(wid: str, runtime: str) -> MachineState:
    return MachineState(wid=wid, netid="n", ip="10.1.1.2", tree="/t", cached=False, runtime=runtime)


async def test_a_machine_is_asked_of_the_runtime_it_records(
    tmp_path: Path, fake_only: None
) -> None:
    zm = ZMachineManager(NodeServices(tmp_path, machine_runtime="fake"))
    zm._save(state("7-1-kept", "fake"))
    fake = zm.runtime("fake")
    assert isinstance(fake, FakeRuntime)
    fake.running.add("7-1-kept")
    # leftovers: what the runtime runs and no state names is stopped; the rest is kept
    await zm.cleanup({"7-1-kept"})
    assert fake.stopped == ["7-1-orphan"] and fake.running == {"7-1-kept"}
    assert await zm.stats("7-1-kept") == MachineStats(running=True, pid=42)
    with pytest.raises(WorkloadError, match="no zmachine 7-1-gone on this node"):
        await zm.stats("7-1-gone")
    # a new machine gets the node's choice; one that ran keeps the runtime it ran under
    assert zm.runtime_for(NO_CHOICE, None) is fake  # type: ignore[arg-type]
    zm.node.machine_runtime = "runc"
    assert zm.runtime_for(NO_CHOICE, state("7-1-kept", "fake")) is fake  # type: ignore[arg-type]
    await zm.close()
    assert fake.closed


# A new machine that asks for no runtime of its own (`runtime:` unset).
NO_CHOICE = SimpleNamespace(workload=SimpleNamespace(data=SimpleNamespace(runtime="")))


def test_a_runtime_the_node_has_not_is_refused_by_name(tmp_path: Path) -> None:
    zm = ZMachineManager(NodeServices(tmp_path, machine_runtime="nope"))
    with pytest.raises(WorkloadError, match="zmachine: runtime 'nope' is not available"):
        zm.runtime_for(NO_CHOICE, None)  # type: ignore[arg-type]
    assert isinstance(zm.runtime(), RuncRuntime)  # the default: runc, built on first use
    with pytest.raises(ValueError, match="runtime runc is already registered"):
        register("runc", FakeRuntime)
