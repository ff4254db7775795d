"""The engine's order comes from its managers' ranks, and rows an older agent wrote
are read and finished as they are.

No NATS and no root: the engine with its real store (sqlite in tmp_path) and small
fake managers that record what they are asked. A row is written into the store as
an agent that crashed mid-way left it, in the JSON every earlier agent wrote; the
engine's `start` must carry out exactly its pending steps, in rank order.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from zos.gridtypes import Capacity, Deployment, Workload
from zos.node.body import BodyError, DeploymentBody, Step
from zos.node.capacity import Offer
from zos.node.engine import Engine
from zos.node.services import ContractInfo
from zos.node.store import Store
from zos.node.workloads import INSTALL_ORDER, default_managers, install_order, register
from zos.node.workloads.base import LAST_RANK, Manager, NodeServices, WorkloadContext

TWIN, CONTRACT = 7, 101
MiB = 1 << 20


class NoGrid:
    """Start-up asks the registry nothing."""

    async def twin_key(self, twin_id: int) -> bytes | None:
        raise AssertionError("start-up must not ask for twin keys")

    async def node_contract(self, contract_id: int) -> ContractInfo | None:
        raise AssertionError("start-up must not ask for contracts")


class Recording(Manager):
    """Builds nothing; appends (what, workload name) to the log all fakes share."""

    log: list[tuple[str, str]]

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        self.log.append((f"provision {self.type}", ctx.workload.name))
        return {"built": ctx.workload.name}

    async def deprovision(self, ctx: WorkloadContext) -> None:
        self.log.append((f"remove {self.type}", ctx.workload.name))


def fakes(log: list[tuple[str, str]], services: NodeServices) -> dict[str, Manager]:
    """A network ranked before a zmount: the reverse of zos's own order, so only the
    ranks the managers declare can put them in this order."""

    class Net(Recording):
        type = "network"
        rank = 5

    class Disk(Recording):
        type = "zmount"
        rank = 50

    return managers_of((Disk, Net), log, services)


def managers_of(
    classes: tuple[type[Recording], ...], log: list[tuple[str, str]], services: NodeServices
) -> dict[str, Manager]:
    """One manager of each class, all writing to `log`, by type."""
    made: dict[str, Manager] = {}
    for cls in classes:
        manager = cls(services)
        manager.log = log
        made[cls.type] = manager
    return made


NETWORK = {
    "ip_range": "10.0.0.0/8",
    "subnet": "10.80.1.0/24",
    "wireguard_private_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "wireguard_listen_port": 51820,
    "peers": [],
}


def workload(name: str, wtype: str, state: str = "init") -> dict[str, Any]:
    data: dict[str, Any] = NETWORK if wtype == "network" else {"size": 8 * MiB}
    if wtype == "zdb":
        data = {"size": 8 * MiB, "mode": "user", "password": "", "public": False}
    raw = Workload.from_raw({"version": 0, "name": name, "type": wtype, "data": data}).to_dict()
    raw["result"] = {"created": 1, "state": state, "message": "", "data": None}
    return raw


def deployment(workloads: list[dict[str, Any]]) -> dict[str, Any]:
    raw = {"version": 0, "twin_id": TWIN, "contract_id": CONTRACT, "workloads": workloads}
    return Deployment.from_dict(raw).to_dict()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Store, NodeServices]]:
    store = Store(tmp_path / "state.db")
    try:
        yield store, NodeServices(tmp_path / "node")
    finally:
        store.close()


async def restart(
    store: Store, services: NodeServices, log: list[tuple[str, str]]
) -> dict[str, Any]:
    """An agent starts on `store`, does what is pending, and stops; the row as stored."""
    offer = Offer(total=Capacity(cru=4, mru=1 << 30, sru=1 << 30), system=Capacity())
    engine = Engine(store, fakes(log, services), services, offer, NoGrid(), 1)
    await engine.start()
    await engine.wait_idle()
    await engine.close()
    rec = store.get(CONTRACT)
    assert rec is not None
    return rec.body


def test_install_order_is_the_managers_ranks(tmp_path: Path) -> None:
    assert INSTALL_ORDER == (
        "zmount",
        "volume",
        "zdb",
        "network",
        "zmachine",
        "gateway-name-proxy",
        "gateway-fqdn-proxy",
    )
    managers = default_managers(NodeServices(tmp_path))
    assert list(managers) == list(INSTALL_ORDER)
    assert install_order(fakes([], NodeServices(tmp_path))) == ["network", "zmount"]


def test_a_manager_for_an_unknown_or_taken_type_is_refused() -> None:
    class Stranger(Recording):
        type = "teleporter"

    class Second(Recording):
        type = "zmount"

    with pytest.raises(ValueError, match=re.escape("teleporter is not a type of zos.gridtypes")):
        register(Stranger)
    with pytest.raises(ValueError, match="zmount already has a manager"):
        register(Second)


async def test_an_older_agents_row_is_finished_in_rank_order(
    node: tuple[Store, NodeServices],
) -> None:
    store, services = node
    # As an older agent left it, crashed after accepting: every workload pending "add",
    # no "restore" key; a zdb this engine has no manager for.
    old = {
        "deployment": deployment(
            [workload("disk", "zmount"), workload("db", "zdb"), workload("net", "network")]
        ),
        "pending": {"disk": {"op": "add"}, "db": {"op": "add"}, "net": {"op": "add"}},
    }
    store.add(TWIN, CONTRACT, old)
    log: list[tuple[str, str]] = []
    body = await restart(store, services, log)
    # network (rank 5) before zmount (rank 50); the type without a manager comes last
    assert log == [("provision network", "net"), ("provision zmount", "disk")]
    assert set(body) == {"deployment", "pending"} and body["pending"] == {}
    results = {w["name"]: w["result"] for w in body["deployment"]["workloads"]}
    assert (results["net"]["state"], results["net"]["data"]) == ("ok", {"built": "net"})
    assert (results["disk"]["state"], results["disk"]["data"]) == ("ok", {"built": "disk"})
    assert results["db"]["state"] == "error"
    assert results["db"]["message"] == "workload type zdb is not supported on this node"


async def test_removals_run_first_in_reverse_rank_and_restore_is_kept(
    node: tuple[Store, NodeServices],
) -> None:
    store, services = node
    # An update was half done: two workloads it dropped are still to be removed, one
    # that failed to come back after a restart ("restore") is to be ensured.
    gone_disk, gone_net = workload("olddisk", "zmount", "ok"), workload("oldnet", "network", "ok")
    old = {
        "deployment": deployment([workload("disk", "zmount", "error")]),
        "pending": {
            "oldnet": {"op": "remove", "previous": gone_net},
            "olddisk": {"op": "remove", "previous": gone_disk},
        },
        "restore": ["disk"],
    }
    store.add(TWIN, CONTRACT, old)
    log: list[tuple[str, str]] = []
    body = await restart(store, services, log)
    # removals in reverse rank (the zmount, 50, before the network, 5), then the ensure
    assert log == [
        ("remove zmount", "olddisk"),
        ("remove network", "oldnet"),
        ("provision zmount", "disk"),
    ]
    assert body["pending"] == {} and "restore" not in body  # brought back: not kept
    (disk,) = body["deployment"]["workloads"]
    assert (disk["name"], disk["result"]["state"]) == ("disk", "ok")
    # what the removals report went to the change log, as the workloads were
    changes = store.changes(CONTRACT)
    removed = {c["name"]: c["result"]["state"] for c in changes if c["name"].startswith("old")}
    assert removed == {"olddisk": "deleted", "oldnet": "deleted"}


def test_the_typed_body_reads_and_writes_the_stored_json() -> None:
    raw = {
        "deployment": deployment([workload("disk", "zmount")]),
        "pending": {
            "disk": {"op": "update", "previous": workload("disk", "zmount", "ok")},
            "x": {"op": "ensure"},
        },
        "restore": ["x", "a"],
    }
    body = DeploymentBody.from_json(json.loads(json.dumps(raw)))
    assert body.pending["x"] == Step("ensure") and body.pending["disk"].op == "update"
    assert body.restore == ["x", "a"]
    assert body.to_json() == {**raw, "restore": ["a", "x"]}
    # a deleted deployment's row from an older agent: no pending steps at all
    assert DeploymentBody.from_json({"deployment": {"workloads": []}}).pending == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pending": {}}, "deployment: a stored body holds the deployment as an object"),
        ({"deployment": {}, "pending": []}, "pending: must be an object of steps"),
        ({"deployment": {}, "pending": {"a": "add"}}, "pending: a step must be an object"),
        ({"deployment": {}, "pending": {"a": {"op": "frob"}}}, "pending: unknown op 'frob'"),
        ({"deployment": {}, "pending": {"a": {"op": "remove"}}}, "needs the previous workload"),
    ],
)
def test_a_body_no_agent_wrote_is_refused_by_name(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BodyError, match=message):
        DeploymentBody.from_json(raw)


def test_a_type_without_a_manager_ranks_last(tmp_path: Path) -> None:
    services = NodeServices(tmp_path)
    offer = Offer(total=Capacity(), system=Capacity())
    store = Store(tmp_path / "state.db")
    try:
        engine = Engine(store, fakes([], services), services, offer, NoGrid(), 1)
        ranks = [engine.install_rank(t) for t in ("network", "zmount", "ipv4")]
        assert ranks == [5, 50, LAST_RANK]
    finally:
        store.close()


async def test_networks_other_deployments_use_come_back_first(
    node: tuple[Store, NodeServices],
) -> None:
    # A reboot: a machine's deployment (stored first) attaches to a network another
    # deployment of the twin holds. The network deployment must be whole before the
    # other one starts, even though building the network takes several turns of the loop.
    store, services = node
    log: list[tuple[str, str]] = []

    class SlowNet(Recording):
        type = "network"
        rank = 40
        shared = True

        async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
            for _ in range(20):
                await asyncio.sleep(0)
            return await super().provision(ctx)

    class Disk(Recording):
        type = "zmount"
        rank = 10

    managers = managers_of((Disk, SlowNet), log, services)
    for contract, wl in (
        (CONTRACT, workload("disk", "zmount", "ok")),
        (CONTRACT + 1, workload("net", "network", "ok")),
    ):
        raw = deployment([wl]) | {"contract_id": contract}
        store.add(TWIN, contract, {"deployment": Deployment.from_dict(raw).to_dict()})
    offer = Offer(total=Capacity(cru=4, mru=1 << 30, sru=1 << 30), system=Capacity())
    engine = Engine(store, managers, services, offer, NoGrid(), 1)
    await engine.start()
    await engine.wait_idle()
    await engine.close()
    assert log == [("provision network", "net"), ("provision zmount", "disk")]
