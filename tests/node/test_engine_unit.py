"""The provision engine alone: its checks, one at a time, and its capacity race.

The engine is the unit under test, with its real store (sqlite in tmp_path), real
deployments, signatures and capacity offer. Its two collaborators are small fakes: a
registry view (`Grid`: twin keys and node contracts, answering after a turn of the
event loop as a bus round trip would) and a manager that records what it is asked to
build. Each refusal test breaks exactly one rule with everything else valid, so no
other check refuses first; the end-to-end refusals are in test_node_refusals.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import machine, network_data
from nodehelpers import owned_deployment

from zos.gridtypes import Capacity, Deployment, Workload
from zos.identity import Identity
from zos.node.capacity import Offer
from zos.node.engine import ContractInfo, Engine, EngineError
from zos.node.store import Store
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext

NODE = 1
MiB = 1 << 20
FREE = 100 * MiB  # disk the node offers


@dataclass
class FakeGrid:
    """The registry as the engine sees it: what tests register, nothing more."""

    keys: dict[int, bytes] = field(default_factory=dict)
    contracts: dict[int, ContractInfo] = field(default_factory=dict)

    async def twin_key(self, twin_id: int) -> bytes | None:
        await asyncio.sleep(0)  # a bus round trip: other requests run meanwhile
        return self.keys.get(twin_id)

    async def node_contract(self, contract_id: int) -> ContractInfo | None:
        await asyncio.sleep(0)
        return self.contracts.get(contract_id)


class Recorder(Manager):
    """A zmount manager that builds nothing and records what it was asked."""

    type = "zmount"
    updatable = True

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self.built: list[str] = []
        self.removed: list[str] = []

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        self.built.append(ctx.workload_id)
        return {"volume_id": ctx.workload_id}

    async def update(self, ctx: WorkloadContext, previous: Workload) -> dict[str, Any]:
        return await self.provision(ctx)

    async def deprovision(self, ctx: WorkloadContext) -> None:
        self.removed.append(ctx.workload_id)


class NetworkRecorder(Recorder):
    """The same, for `network` workloads (they cost no capacity, but are bounded)."""

    type = "network"


@dataclass
class Twin:
    id: int
    identity: Identity


@dataclass
class Setup:
    engine: Engine
    grid: FakeGrid
    manager: Recorder
    owner: Twin
    other: Twin
    next_contract: int = 100

    def deployment(self, size: int, twin: Twin | None = None, version: int = 0) -> Deployment:
        disk = {"name": "disk", "type": "zmount", "data": {"size": size}}
        return owned_deployment((twin or self.owner).id, [disk], version)

    def contract(self, dep: Deployment, **changes: Any) -> ContractInfo:
        """A node contract for `dep` (this node, its owner, its hash, active), then
        `changes`; `dep` gets its id and is signed by its owner."""
        self.next_contract += 1
        info = ContractInfo(
            id=self.next_contract,
            node_id=NODE,
            owner_twin=dep.twin_id,
            deployment_hash=dep.hash_hex(),
            active=True,
        )
        info = replace(info, **changes)
        self.grid.contracts[info.id] = info
        dep.contract_id = info.id
        self.sign(dep)
        return info

    def sign(self, dep: Deployment, twin: Twin | None = None) -> None:
        twin = twin or (self.owner if dep.twin_id == self.owner.id else self.other)
        dep.sign(dep.twin_id, twin.identity)

    def rehash(self, dep: Deployment) -> None:
        """The owner updates its contract to the deployment's new hash, and signs."""
        info = self.grid.contracts[dep.contract_id]
        self.grid.contracts[dep.contract_id] = replace(info, deployment_hash=dep.hash_hex())
        self.sign(dep)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    owner, other = Twin(7, Identity.generate()), Twin(8, Identity.generate())
    grid = FakeGrid(keys={7: owner.identity.public_key, 8: other.identity.public_key})
    services = NodeServices(tmp_path / "node")
    manager = Recorder(services)
    offer = Offer(total=Capacity(cru=4, mru=1 << 30, sru=FREE), system=Capacity())
    store = Store(tmp_path / "state.db")
    managers = {"zmount": manager, "network": NetworkRecorder(services)}
    engine = Engine(store, managers, services, offer, grid, NODE)
    await engine.start()
    try:
        yield Setup(engine, grid, manager, owner, other)
    finally:
        await engine.close()
        store.close()


async def refused(call: Any, code: str, message: str) -> None:
    with pytest.raises(EngineError) as e:
        await call
    assert (e.value.code, e.value.message) == (code, message)


async def deploy_refused(s: Setup, dep: Deployment, code: str, message: str) -> None:
    """The owner sends `dep`; it is refused, and nothing is held or built."""
    await refused(s.engine.deploy(s.owner.id, dep.to_dict()), code, message)
    nothing_held(s)


def nothing_held(s: Setup) -> None:
    assert s.engine.active_contracts() == []
    assert s.engine.used() == Capacity()
    assert s.manager.built == []


# --- deploy: each rule alone -------------------------------------------------------------


async def test_a_valid_deployment_is_accepted_and_built(setup: Setup) -> None:
    dep = setup.deployment(10 * MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    await setup.engine.wait_idle()
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert got["workloads"][0]["result"]["state"] == "ok"
    assert setup.manager.built == [f"7-{dep.contract_id}-disk"]
    assert setup.engine.used() == Capacity(sru=10 * MiB)


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"node_id": NODE + 1}, "invalid", "contract_id {id}: is for node 2, not this node (1)"),
        ({"active": False}, "invalid", "contract_id {id}: the contract is cancelled"),
        ({"owner_twin": 8}, "forbidden", "contract_id {id}: owned by twin 8, not 7"),
        (
            {"deployment_hash": "00" * 16},
            "invalid",
            "deployment hash {hash} does not match the hash of contract {id} ({zeros})",
        ),
    ],
    ids=["for another node", "cancelled", "of another twin", "for another hash"],
)
async def test_a_contract_that_is_not_for_this_deployment_is_refused(
    setup: Setup, changes: dict[str, Any], code: str, message: str
) -> None:
    """The owner's signed deployment on a contract right in everything but one field."""
    dep = setup.deployment(MiB)
    info = setup.contract(dep, **changes)
    expected = message.format(id=info.id, hash=dep.hash_hex(), zeros="00" * 16)
    await deploy_refused(setup, dep, code, expected)


async def test_an_uppercase_contract_hash_is_the_same_hash(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep, deployment_hash=dep.hash_hex().upper())
    await setup.engine.deploy(setup.owner.id, dep.to_dict())


async def test_no_contract_is_refused(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep)
    del setup.grid.contracts[dep.contract_id]
    await deploy_refused(
        setup,
        dep,
        "invalid",
        f"contract_id {dep.contract_id}: no such node contract",
    )
    dep.contract_id = 0
    setup.sign(dep)
    await deploy_refused(
        setup,
        dep,
        "invalid",
        "contract_id: must be the id of a node contract",
    )


async def test_another_twins_deployment_is_refused(setup: Setup) -> None:
    """Twin 8 sends twin 7's deployment, signed by 7, on 7's contract: not 8's to send."""
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await refused(
        setup.engine.deploy(setup.other.id, dep.to_dict()),
        "forbidden",
        "twin_id: the deployment belongs to twin 7, but twin 8 sent it",
    )
    nothing_held(setup)


async def test_signatures_are_checked_with_registered_keys(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep)
    setup.sign(dep, setup.other)  # twin 7's signature made with twin 8's key
    await deploy_refused(
        setup,
        dep,
        "bad_signature",
        "signature_requirement: signature of twin 7 (ed25519) does not verify against its "
        "public key",
    )
    setup.sign(dep)
    del setup.grid.keys[setup.owner.id]
    await deploy_refused(
        setup,
        dep,
        "invalid",
        "signature_requirement: twin 7 is not registered",
    )


async def test_a_new_deployment_is_version_0_and_only_once(setup: Setup) -> None:
    dep = setup.deployment(MiB, version=1)
    setup.contract(dep)
    await deploy_refused(
        setup,
        dep,
        "invalid",
        "version: must be 0 for a new deployment",
    )
    await refused(
        setup.engine.deploy(setup.owner.id, [dep.to_dict()]),
        "invalid",
        "deployment: expected a JSON object",
    )
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    await refused(
        setup.engine.deploy(setup.owner.id, dep.to_dict()),
        "conflict",
        f"contract_id {dep.contract_id}: a deployment already exists",
    )


async def test_capacity_fits_exactly_and_not_one_byte_more(setup: Setup) -> None:
    first = setup.deployment(FREE - MiB)
    setup.contract(first)
    await setup.engine.deploy(setup.owner.id, first.to_dict())
    over = setup.deployment(MiB + 1)
    setup.contract(over)
    await refused(
        setup.engine.deploy(setup.owner.id, over.to_dict()),
        "capacity",
        f"not enough capacity on this node: disk: needs {MiB + 1} bytes, {MiB} free",
    )
    exact = setup.deployment(MiB)
    setup.contract(exact)
    await setup.engine.deploy(setup.owner.id, exact.to_dict())
    assert setup.engine.used() == Capacity(sru=FREE)


async def test_a_workload_needing_more_cores_than_the_node_has_is_refused(setup: Setup) -> None:
    """Cores are not summed like memory: one machine may not ask for more than the
    node has at all (4 here), however little else is running."""
    big = machine("big", "http://hub.invalid/x.fl", "10.69.1.2")
    big["data"]["compute_capacity"]["cpu"] = 8
    dep = owned_deployment(setup.owner.id, [big])
    setup.contract(dep)
    await deploy_refused(
        setup,
        dep,
        "capacity",
        "workload 'big': compute_capacity.cpu: needs 8 cores, this node has 4",
    )


# --- the race for the last free capacity ---------------------------------------------------


async def test_concurrent_deploys_for_the_last_capacity_exactly_one_wins(setup: Setup) -> None:
    """Twenty deployments that each need more than half of what is free, sent at once:
    their checks interleave (every registry look-up lets the others run), yet from the
    capacity check to the store write nothing may wait, so exactly one gets it."""
    deps = [setup.deployment(FREE // 2 + MiB) for _ in range(20)]
    for dep in deps:
        setup.contract(dep)
    results = await asyncio.gather(
        *(setup.engine.deploy(setup.owner.id, d.to_dict()) for d in deps),
        return_exceptions=True,
    )
    won = [d for d, r in zip(deps, results, strict=True) if r is None]
    lost = [r for r in results if r is not None]
    assert len(won) == 1, results
    assert all(isinstance(r, EngineError) and r.code == "capacity" for r in lost), lost
    assert setup.engine.active_contracts() == [won[0].contract_id]
    assert setup.engine.used() == Capacity(sru=FREE // 2 + MiB)
    await setup.engine.wait_idle()
    assert setup.manager.built == [f"7-{won[0].contract_id}-disk"]


async def test_concurrent_updates_for_the_last_capacity_exactly_one_wins(setup: Setup) -> None:
    """The same race through update: ten deployments each grow into what is left."""
    deps = [setup.deployment(MiB) for _ in range(10)]
    for dep in deps:
        setup.contract(dep)
        await setup.engine.deploy(setup.owner.id, dep.to_dict())
    free = FREE - 10 * MiB
    for dep in deps:
        dep.version = dep.workloads[0].version = 1
        dep.workloads[0].data.size = MiB + free // 2 + 1
        setup.rehash(dep)
    results = await asyncio.gather(
        *(setup.engine.update(setup.owner.id, d.to_dict()) for d in deps),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1, results
    assert all(r is None or r.code == "capacity" for r in results), results
    assert setup.engine.used() == Capacity(sru=10 * MiB + free // 2 + 1)


# --- update, delete, reads ----------------------------------------------------------------


async def test_update_rules(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    cid = dep.contract_id

    dep.version = 2
    setup.rehash(dep)
    await refused(
        setup.engine.update(setup.owner.id, dep.to_dict()),
        "invalid",
        "version: must be 1 (the current version is 0), got 2",
    )
    dep.version = 1
    dep.workloads[0].data.size = 2 * MiB  # changed, but its own version stays 0
    setup.rehash(dep)
    await refused(
        setup.engine.update(setup.owner.id, dep.to_dict()),
        "invalid",
        "workload 'disk': version: changed without being raised to 1",
    )
    dep.workloads[0].version = 1
    setup.rehash(dep)
    await refused(
        setup.engine.update(setup.other.id, dep.to_dict()),
        "not_found",
        f"contract_id {cid}: twin 8 has no such deployment",
    )
    info = setup.grid.contracts[cid]
    setup.grid.contracts[cid] = replace(info, active=False)
    await refused(
        setup.engine.update(setup.owner.id, dep.to_dict()),
        "invalid",
        f"contract_id {cid}: the contract is cancelled",
    )
    setup.grid.contracts[cid] = replace(info, node_id=NODE + 1)
    await refused(
        setup.engine.update(setup.owner.id, dep.to_dict()),
        "invalid",
        f"contract_id {cid}: is for node 2, not this node (1)",
    )
    setup.grid.contracts[cid] = info
    await setup.engine.update(setup.owner.id, dep.to_dict())
    got = await setup.engine.get(setup.owner.id, cid)
    assert got["workloads"][0]["result"]["state"] == "init"  # until the node has done it
    await setup.engine.wait_idle()
    got = await setup.engine.get(setup.owner.id, cid)
    assert got["version"] == 1 and got["workloads"][0]["data"]["size"] == 2 * MiB
    assert got["workloads"][0]["result"]["state"] == "ok"


async def test_only_the_owner_reads_changes_or_deletes(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    await setup.engine.wait_idle()
    cid = dep.contract_id
    for call in (setup.engine.get, setup.engine.changes, setup.engine.delete):
        await refused(
            call(setup.other.id, cid),
            "not_found",
            f"contract_id {cid}: twin 8 has no such deployment",
        )
    assert await setup.engine.list(setup.other.id) == []
    assert setup.manager.removed == []
    assert [c["name"] for c in await setup.engine.changes(setup.owner.id, cid)] == ["disk", "disk"]

    await setup.engine.delete(setup.owner.id, cid)
    await setup.engine.wait_idle()
    assert setup.manager.removed == [f"7-{cid}-disk"]
    got = await setup.engine.get(setup.owner.id, cid)
    assert got["workloads"][0]["result"]["state"] == "deleted"
    assert setup.engine.used() == Capacity()
    await refused(
        setup.engine.delete(setup.owner.id, cid),
        "not_found",
        f"contract_id {cid}: twin 7 has no such deployment",
    )


async def test_results_are_the_nodes_not_the_senders(setup: Setup) -> None:
    """A deployment arriving with results already filled in (a forged `ok` with data)
    is stored as `init` until the node itself reports."""
    dep = setup.deployment(MiB)
    raw_wl = dep.workloads[0].to_dict()
    raw_wl["result"] = {"created": 1, "state": "ok", "message": "", "data": {"forged": True}}
    dep.workloads[0] = Workload.from_raw(raw_wl)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert got["workloads"][0]["result"]["state"] == "init"
    assert got["workloads"][0]["result"]["data"] is None
    stats = setup.engine.statistics()
    assert stats["users"]["deployments"] == 1 and stats["users"]["last_deployment_timestamp"] > 0


async def test_update_adds_changes_keeps_and_removes_workloads(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    dep.workloads.append(Workload.from_raw(
        {"version": 0, "name": "keep", "type": "zmount", "data": {"size": MiB}}
    ))  # fmt: skip
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    await setup.engine.wait_idle()
    kept = (await setup.engine.get(setup.owner.id, dep.contract_id))["workloads"][1]["result"]

    dep.version = 1
    dep.workloads[0] = Workload.from_raw(
        {"version": 1, "name": "new", "type": "zmount", "data": {"size": 2 * MiB}}
    )
    setup.rehash(dep)
    history = len(await setup.engine.changes(setup.owner.id, dep.contract_id))
    await setup.engine.update(setup.owner.id, dep.to_dict())
    recorded = (await setup.engine.changes(setup.owner.id, dep.contract_id))[history:]
    assert [c["name"] for c in recorded] == ["new"]  # what changed, not what was kept
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert [(w["name"], w["result"]["state"]) for w in got["workloads"]] == [
        ("new", "init"),
        ("keep", "ok"),
    ]
    await setup.engine.wait_idle()
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert [w["result"]["state"] for w in got["workloads"]] == ["ok", "ok"]
    assert got["workloads"][1]["result"] == kept  # untouched: not even re-stamped
    cid = dep.contract_id
    assert setup.manager.built == [f"7-{cid}-disk", f"7-{cid}-keep", f"7-{cid}-new"]
    assert setup.manager.removed == [f"7-{cid}-disk"]
    assert setup.engine.used() == Capacity(sru=3 * MiB)


async def test_update_cannot_change_a_workloads_type(setup: Setup) -> None:
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    dep.version = 1
    dep.workloads[0] = Workload.from_raw(
        {"version": 1, "name": "disk", "type": "volume", "data": {"size": MiB}}
    )
    setup.rehash(dep)
    await refused(
        setup.engine.update(setup.owner.id, dep.to_dict()),
        "invalid",
        "workload 'disk': type: cannot change from zmount to volume",
    )


async def deployed_then_grown(setup: Setup) -> Deployment:
    """A 1 MiB deployment, deployed; returned as its version-1 update to 2 MiB (unsent)."""
    dep = setup.deployment(MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    dep.version = dep.workloads[0].version = 1
    dep.workloads[0].data.size = 2 * MiB
    setup.rehash(dep)
    return dep


async def test_one_update_sent_twice_at_once_is_applied_once(setup: Setup) -> None:
    """The same version-1 update twice at once (a retry, a replay): both pass their
    checks while the other waits on the registry; the second to write finds the
    deployment at version 1 already."""
    dep = await deployed_then_grown(setup)
    results = await asyncio.gather(
        *(setup.engine.update(setup.owner.id, dep.to_dict()) for _ in range(2)),
        return_exceptions=True,
    )
    assert results[0] is None, results
    assert isinstance(results[1], EngineError) and (results[1].code, results[1].message) == (
        "conflict",
        "version: the deployment changed meanwhile; retry",
    )
    assert (await setup.engine.get(setup.owner.id, dep.contract_id))["version"] == 1


async def test_a_deployment_deleted_while_an_update_is_checked_stays_deleted(
    setup: Setup,
) -> None:
    dep = await deployed_then_grown(setup)
    update = asyncio.create_task(setup.engine.update(setup.owner.id, dep.to_dict()))
    await asyncio.sleep(0)  # the update is now waiting on the registry
    await setup.engine.delete(setup.owner.id, dep.contract_id)
    with pytest.raises(EngineError) as e:
        await update
    assert e.value.code == "not_found"
    await setup.engine.wait_idle()
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert got["version"] == 0 and got["workloads"][0]["result"]["state"] == "deleted"


async def test_a_workload_a_manager_reports_failed_is_an_error_and_stays_one(setup: Setup) -> None:
    """`Engine.fail` (a gateway whose name contract went): the workload's result is an
    error saying why, in its history too; another twin's id, or an unknown one, changes
    nothing; the next start does not build it again."""
    dep = setup.deployment(10 * MiB)
    setup.contract(dep)
    await setup.engine.deploy(setup.owner.id, dep.to_dict())
    await setup.engine.wait_idle()
    wid = f"7-{dep.contract_id}-disk"
    await setup.engine.fail(f"8-{dep.contract_id}-disk", "not yours")
    await setup.engine.fail(f"7-{dep.contract_id + 1}-disk", "no such contract")
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    assert got["workloads"][0]["result"]["state"] == "ok"
    await setup.engine.fail(wid, "name: gone; the route is removed")
    got = await setup.engine.get(setup.owner.id, dep.contract_id)
    result = got["workloads"][0]["result"]
    assert (result["state"], result["message"]) == ("error", "name: gone; the route is removed")
    changes = await setup.engine.changes(setup.owner.id, dep.contract_id)
    assert changes[-1]["result"]["state"] == "error"
    # A restart: the failed workload is not built again (the start's cleanup is told it
    # is not to be kept).
    built = list(setup.manager.built)
    again = Engine(
        setup.engine.store, {"zmount": setup.manager}, setup.manager.node,
        setup.engine.offer, setup.grid, NODE,
    )  # fmt: skip
    await again.start()
    await again.wait_idle()
    assert setup.manager.built == built
    state = (await again.get(setup.owner.id, dep.contract_id))["workloads"][0]["result"]["state"]
    assert state == "error"
    await again.close()


# --- bounds on what costs no capacity -----------------------------------------------------


def disks(count: int) -> list[dict[str, Any]]:
    return [{"name": f"d{i}", "type": "zmount", "data": {"size": MiB}} for i in range(count)]


def networks(names: range) -> list[dict[str, Any]]:
    return [
        {"name": f"n{i}", "type": "network", "data": network_data(f"10.68.{i}.0/24")} for i in names
    ]


async def test_workloads_per_deployment_are_bounded(setup: Setup) -> None:
    """64 workloads in one deployment are taken; 65 are refused whole, on deploy and on
    update (each a kernel object, whatever capacity it declares)."""
    over = owned_deployment(setup.owner.id, disks(65))
    setup.contract(over)
    await deploy_refused(setup, over, "invalid", "workloads: 65 in one deployment, at most 64")
    most = owned_deployment(setup.owner.id, disks(64))
    setup.contract(most)
    await setup.engine.deploy(setup.owner.id, most.to_dict())
    most.version = 1
    most.workloads.append(Workload.from_raw({"version": 1, **disks(65)[64]}))
    setup.rehash(most)
    await refused(
        setup.engine.update(setup.owner.id, most.to_dict()),
        "invalid",
        "workloads: 65 in one deployment, at most 64",
    )
    got = await setup.engine.get(setup.owner.id, most.contract_id)
    assert got["version"] == 0 and len(got["workloads"]) == 64


async def test_networks_per_twin_on_the_node_are_bounded(setup: Setup) -> None:
    """A twin's networks on this node are counted by name over all its deployments: 16
    are taken, a 17th is refused (by a new deployment or by an update), one it already
    has is shared; another twin's networks are its own."""
    owner = setup.owner.id
    first = owned_deployment(owner, networks(range(16)))
    setup.contract(first)
    await setup.engine.deploy(owner, first.to_dict())
    too_many = f"networks: twin {owner} would have 17 networks on this node, at most 16"
    over = owned_deployment(owner, networks(range(16, 17)))
    setup.contract(over)
    await refused(setup.engine.deploy(owner, over.to_dict()), "capacity", too_many)
    shared = owned_deployment(owner, networks(range(3, 4)))
    setup.contract(shared)
    await setup.engine.deploy(owner, shared.to_dict())
    shared.version = 1
    shared.workloads.append(Workload.from_raw({"version": 1, **networks(range(16, 17))[0]}))
    setup.rehash(shared)
    await refused(setup.engine.update(owner, shared.to_dict()), "capacity", too_many)
    assert sorted(setup.engine.active_contracts()) == [first.contract_id, shared.contract_id]
    theirs = owned_deployment(setup.other.id, networks(range(16, 17)))
    setup.contract(theirs)
    await setup.engine.deploy(setup.other.id, theirs.to_dict())
