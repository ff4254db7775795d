"""Every refusal comes back as a clear error naming the rule, and changes nothing."""

from __future__ import annotations

import pytest
from nodehelpers import GiB, MiB, leftovers

from zos.bus import BusError
from zos.gridtypes import Capacity
from zos.identity import Identity
from zos.node.capacity import Offer
from zos.nodeapi import commands as api
from zos.registry import RegistryClient

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]

NOTHING = {"mounts": [], "loops": [], "files": []}


async def _refused(call, code: str, *words: str) -> BusError:
    with pytest.raises(BusError) as e:
        await call
    assert e.value.code == code, e.value
    for word in words:
        assert word in e.value.message, e.value.message
    return e.value


async def test_other_twins_cannot_read_change_or_delete(make_user, make_node) -> None:
    owner, other = await make_user(), await make_user()
    node = await make_node(owner)
    dep = owner.deployment([{"name": "v", "type": "volume", "data": {"size": 32 * MiB}}])
    await owner.deploy(node, dep)
    before = await owner.wait_states(node, dep.contract_id, {"v": "ok"})
    files = leftovers(node.data_dir)
    arg = {"contract_id": dep.contract_id}

    for command in (api.GET, api.CHANGES, api.DELETE):
        await _refused(other.call(node, command, arg), "not_found", f"twin {other.twin_id}")
    assert await other.node(node).list() == []

    # The owner's signed update, replayed by another twin: the sender is not the owner.
    dep.version = 1
    dep.workloads[0].version = 1
    dep.workloads[0].data.size = 64 * MiB
    await owner.registry.update_node_contract(dep.contract_id, dep.hash_hex())
    dep.sign(owner.twin_id, owner.identity)
    await _refused(other.node(node).update(dep), "not_found")
    # ... and as a new deployment under another twin's name.
    await _refused(other.node(node).deploy(dep), "invalid", "version")
    dep.version, dep.workloads[0].version = 0, 0
    await _refused(other.node(node).deploy(dep), "forbidden", "twin_id")

    assert await owner.get(node, dep.contract_id) == before
    assert leftovers(node.data_dir) == files


async def test_bad_signature_and_hash_mismatch_change_nothing(farm, make_user, make_node) -> None:
    user, other = await make_user(), await make_user()
    node = await make_node(user)
    dep = user.deployment([{"name": "v", "type": "volume", "data": {"size": 32 * MiB}}])
    contract = await user.registry.create_node_contract(node.node_id, dep.hash_hex())
    dep.contract_id = contract.id

    # Signed by another key than the owner's.
    dep.sign(user.twin_id, other.identity)
    await _refused(
        user.node(node).deploy(dep),
        "bad_signature",
        f"twin {user.twin_id}",
        "does not verify",
    )
    # No signature at all.
    dep.signature_requirement.signatures = []
    await _refused(user.node(node).deploy(dep), "bad_signature", "missing")
    # Properly signed, but not what the contract was made for.
    dep.workloads[0].data.size = 48 * MiB
    dep.sign(user.twin_id, user.identity)
    await _refused(
        user.node(node).deploy(dep),
        "invalid",
        "does not match the hash of contract",
    )

    async def on_contract(contract_id: int, code: str, words: str) -> None:
        """The same deployment, properly signed, sent on another contract: refused."""
        dep.contract_id = contract_id
        dep.sign(user.twin_id, user.identity)
        await _refused(user.node(node).deploy(dep), code, words)

    # Someone else's contract.
    theirs = await other.registry.create_node_contract(node.node_id, dep.hash_hex())
    await on_contract(theirs.id, "forbidden", f"owned by twin {other.twin_id}")
    # The user's own contract with the right hash, but cancelled in the registry...
    cancelled = await user.registry.create_node_contract(node.node_id, dep.hash_hex())
    await user.registry.cancel_contract(cancelled.id)
    await on_contract(
        cancelled.id, "invalid", f"contract_id {cancelled.id}: the contract is cancelled"
    )
    # ... or made for another node of the grid (registered, its agent not needed here).
    elsewhere = RegistryClient(farm.nats, Identity.generate(), registry_key=farm.registry_key)
    await elsewhere.connect()
    try:
        await elsewhere.register_twin()
        other_node = await elsewhere.register_node(
            farm.farm_id, farm.token, {"cru": 1, "mru": GiB, "sru": GiB}
        )
    finally:
        await elsewhere.close()
    for_other = await user.registry.create_node_contract(other_node.id, dep.hash_hex())
    await on_contract(
        for_other.id, "invalid", f"contract_id {for_other.id}: is for node {other_node.id}, not"
    )
    # Malformed requests name the field.
    await _refused(user.call(node, api.DEPLOY, [1, 2]), "invalid", "JSON object")
    bad = dep.to_dict()
    bad["workloads"][0]["name"] = "no spaces allowed"
    await _refused(user.call(node, api.DEPLOY, bad), "invalid", "name")
    await _refused(user.call(node, api.GET, {"contract_id": "x"}), "invalid", "contract_id")

    assert await user.node(node).list() == []
    assert leftovers(node.data_dir) == NOTHING


async def test_deployment_larger_than_free_capacity_is_refused_whole(make_user, make_node) -> None:
    user = await make_user()
    node = await make_node(user, "--disk", "1G")
    too_big = user.deployment(
        [
            {"name": "a", "type": "zmount", "data": {"size": 512 * MiB}},
            {"name": "b", "type": "volume", "data": {"size": 768 * MiB}},
        ]
    )
    err = await _refused(user.deploy(node, too_big), "capacity", "disk", str(1280 * MiB))
    assert "1073741824 free" in err.message
    assert await user.node(node).list() == []
    assert leftovers(node.data_dir) == NOTHING

    first = user.deployment([{"name": "a", "type": "zmount", "data": {"size": 700 * MiB}}])
    await user.deploy(node, first)
    await user.wait_states(node, first.contract_id, {"a": "ok"})
    second = user.deployment([{"name": "a", "type": "zmount", "data": {"size": 400 * MiB}}])
    await _refused(user.deploy(node, second), "capacity", "disk", str(324 * MiB))

    # Growing past the free space is refused too, and the old version stays.
    first.version = 1
    first.workloads[0].version = 1
    first.workloads[0].data.size = 2 * GiB
    await _refused(user.update(node, first), "capacity", "disk")
    got = await user.get(node, first.contract_id)
    assert got["version"] == 0 and got["workloads"][0]["data"]["size"] == 700 * MiB
    assert [d["contract_id"] for d in await user.node(node).list()] == [first.contract_id]


async def test_shrink_unsupported_type_and_bad_versions(make_user, make_node) -> None:
    user = await make_user()
    node = await make_node(user)
    dep = user.deployment(
        [
            {"name": "v", "type": "volume", "data": {"size": 64 * MiB}},
            {"name": "pub", "type": "ip", "data": {"v6": True}},
        ]
    )
    await user.deploy(node, dep)
    got = await user.wait_states(node, dep.contract_id, {"v": "ok", "pub": "error"})
    pub = next(wl for wl in got["workloads"] if wl["name"] == "pub")
    assert pub["result"]["message"] == "workload type ip is not supported on this node"

    # Shrinking a volume is refused for that workload; the old one keeps running.
    dep.version = 1
    dep.workloads[0].version = 1
    dep.workloads[0].data.size = 32 * MiB
    await user.update(node, dep)
    got = await user.wait_states(node, dep.contract_id, {"v": "unchanged"})
    message = got["workloads"][0]["result"]["message"]
    assert "cannot shrink" in message and "data.size" in message
    image = node.data_dir / "storage" / "volumes" / f"{user.twin_id}-{dep.contract_id}-v.img"
    assert image.stat().st_size == 64 * MiB

    # Versions: an update must be exactly one more; a changed workload must bump its own.
    dep.version = 5
    await _refused(user.update(node, dep), "invalid", "version: must be 2")
    dep.version = 2
    dep.workloads[1].data.v4 = True  # changed but still version 0
    await _refused(user.update(node, dep), "invalid", "'pub'", "version")
    assert (await user.get(node, dep.contract_id))["version"] == 1


def test_offer_names_what_is_short(tmp_path) -> None:
    offer = Offer.measure(tmp_path, cores=2, memory=4 * GiB, disk=10 * GiB, hdd=4 * GiB)
    assert offer.usable == Capacity(cru=2, mru=4 * GiB, sru=6 * GiB, hru=4 * GiB)
    used = Capacity(mru=3 * GiB, sru=4 * GiB, hru=2 * GiB)
    assert offer.shortfall(used, Capacity(mru=GiB, sru=2 * GiB, hru=2 * GiB)) == []
    assert offer.shortfall(used, Capacity(cru=64, mru=2 * GiB, sru=3 * GiB, hru=5 * GiB)) == [
        f"memory: needs {2 * GiB} bytes, {GiB} free",
        f"disk: needs {3 * GiB} bytes, {2 * GiB} free",
        f"hdd: needs {5 * GiB} bytes, {2 * GiB} free",
    ]
    # Issue 12, finding 8: capacity a node does not offer at all is refused, naming it.
    ssd_only = Offer.measure(tmp_path, cores=2, memory=4 * GiB, disk=10 * GiB)
    assert ssd_only.shortfall(Capacity(), Capacity(hru=1, ipv4u=1)) == [
        "hru: this node offers no HDD capacity (what zdb takes)",
        "ipv4u: this node offers no public IPv4 addresses",
    ]
    assert offer.too_many_cores(8) == "needs 8 cores, this node has 2"
    assert offer.too_many_cores(2) is None
    with pytest.raises(ValueError, match="hdd: offered"):
        Offer.measure(tmp_path, disk=10 * GiB, hdd=11 * GiB)
    measured = Offer.measure(tmp_path)
    assert measured.system.mru >= 2 * GiB  # the system reserve
    with pytest.raises(ValueError, match="memory: offered"):
        Offer.measure(tmp_path, memory=1 << 60)
