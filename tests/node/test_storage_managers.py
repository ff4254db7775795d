"""The volume and zmount managers on real loop devices: idempotent, growing, never
shrinking, and leaving nothing behind, including what a crash left half built."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nodehelpers import MiB, leftovers, remove_leftovers

from zos.gridtypes import Deployment, Workload
from zos.node.store import Store
from zos.node.workloads import NodeServices, WorkloadContext, WorkloadError, default_managers
from zos.node.workloads.zmachine import MachineState, ZMachineManager
from zos.node.workloads.zmount import zmount_path
from zos.primitives import filesystem, loop
from zos.primitives.command import run

NOTHING = {"mounts": [], "loops": [], "files": []}


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[NodeServices]:
    yield NodeServices(data_dir=tmp_path)
    await remove_leftovers(tmp_path)


def ctx(services: NodeServices, wtype: str, size: int, contract: int = 7) -> WorkloadContext:
    wl = Workload.from_raw({"name": "w", "type": wtype, "data": {"size": size}})
    dep = Deployment(twin_id=3, contract_id=contract, workloads=[wl])
    return WorkloadContext(3, contract, dep, wl, services)


@pytest.mark.root
async def test_volume_is_idempotent_grows_and_never_shrinks(services: NodeServices) -> None:
    volumes = default_managers(services)["volume"]
    c = ctx(services, "volume", 32 * MiB)
    assert await volumes.provision(c) == {"id": "3-7-w"}
    assert await volumes.provision(c) == {"id": "3-7-w"}
    mount = services.data_dir / "storage/volumes/3-7-w"
    assert len([m for m in filesystem.mounts() if m.target == mount]) == 1
    assert len(loop.devices_under(services.data_dir)) == 1
    (mount / "f").write_text("x")

    bigger = ctx(services, "volume", 64 * MiB)
    await volumes.update(bigger, c.workload)
    st = os.statvfs(mount)
    assert st.f_blocks * st.f_frsize > 48 * MiB and (mount / "f").read_text() == "x"
    with pytest.raises(WorkloadError, match=r"data.size: cannot shrink from 67108864 to"):
        await volumes.update(c, bigger.workload)

    await volumes.deprovision(c)
    await volumes.deprovision(c)  # already gone: a no-op
    assert leftovers(services.data_dir) == NOTHING


@pytest.mark.root
async def test_cleanup_removes_what_a_crash_left(services: NodeServices) -> None:
    managers = default_managers(services)
    volumes, zmounts = managers["volume"], managers["zmount"]
    await volumes.provision(ctx(services, "volume", 16 * MiB, contract=1))
    await volumes.provision(ctx(services, "volume", 16 * MiB, contract=2))
    await zmounts.provision(ctx(services, "zmount", 16 * MiB, contract=3))
    vdir = services.storage_dir("volumes")
    # A crash mid-mkfs, mid-growth, and inside `mount` (a loop device, no mount yet).
    filesystem.create_sparse(vdir / "3-4-w.img.tmp", 16 * MiB)
    (vdir / "3-5-w.grow").touch()
    filesystem.create_sparse(vdir / "3-6-w.img", 16 * MiB)
    await loop.attach(vdir / "3-6-w.img")
    # A mount stacked twice on one volume (a `mount` that outlived a killed agent).
    await run("mount", "--bind", str(vdir / "3-1-w"), str(vdir / "3-1-w"))

    await volumes.cleanup({"3-2-w"})
    await zmounts.cleanup(set())
    assert leftovers(services.data_dir) == {
        "mounts": [str(vdir / "3-2-w")],
        "loops": sorted(loop.devices_for(vdir / "3-2-w.img")),
        "files": ["volumes/3-2-w.img"],
    }
    assert (vdir / "3-2-w").is_dir() and not (vdir / "3-1-w").exists()


@pytest.mark.root
async def test_zmount_grows_refuses_shrink_and_removal_while_in_use(
    services: NodeServices,
) -> None:
    zmounts = default_managers(services)["zmount"]
    c = ctx(services, "zmount", 16 * MiB)
    assert await zmounts.provision(c) == {"volume_id": "3-7-w"}
    image = services.data_dir / "storage/zmounts/3-7-w.img"
    image.write_bytes(b"boot")  # truncates; grow it back through the manager
    await zmounts.provision(c)
    assert image.stat().st_size == 16 * MiB and image.read_bytes()[:4] == b"boot"
    await zmounts.update(ctx(services, "zmount", 32 * MiB), c.workload)
    assert image.stat().st_size == 32 * MiB
    with pytest.raises(WorkloadError, match="cannot shrink"):
        await zmounts.update(c, c.workload)

    dev = await loop.attach(image)  # as a machine using the disk would
    with pytest.raises(WorkloadError, match="still in use"):
        await zmounts.deprovision(c)
    assert image.exists()
    await loop.detach(dev)
    await zmounts.deprovision(c)
    assert leftovers(services.data_dir) == NOTHING


async def test_a_zmount_a_vm_holds_is_not_removed(services: NodeServices) -> None:
    """A VM's drive is no loop device: the machine's state says who holds the disk."""
    zmounts = default_managers(services)["zmount"]
    c = ctx(services, "zmount", 16 * MiB)
    await zmounts.provision(c)
    image = zmount_path(services, "3-7-w")
    held = {"source": "", "destination": "/disk", "image": str(image)}
    vm = MachineState("3-7-vm", "n", "10.1.1.2", "", False, mounts=[held], runtime="vm")
    ZMachineManager(services)._save(vm)  # what provisioning the VM recorded
    with pytest.raises(
        WorkloadError,
        match=r"zmount 3-7-w: disk is still in use: zmachine 3-7-vm mounts it at /disk",
    ):
        await zmounts.deprovision(c)
    assert image.exists()
    (services.data_dir / "zmachines" / "3-7-vm" / "state.json").unlink()  # the VM went
    await zmounts.deprovision(c)
    assert leftovers(services.data_dir) == NOTHING


def test_store_survives_reopen_and_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.add(3, 9, {"deployment": {"v": 0}}, changed=[{"name": "a", "n": 1}])
    store.put(3, 9, {"deployment": {"v": 1}}, changed=[{"name": "a", "n": 2}], state="deleting")
    store.set_meta("seq", "42")
    with pytest.raises(Exception, match="contract_id 9 already exists"):
        store.add(4, 9, {})
    store.close()

    store = Store(path)
    rec = store.get(9)
    assert rec is not None and (rec.twin_id, rec.state, rec.body) == (
        3,
        "deleting",
        {"deployment": {"v": 1}},
    )
    assert store.changes(9) == [{"name": "a", "n": 1}, {"name": "a", "n": 2}]
    assert store.list() == [] and [r.contract_id for r in store.list(states=("deleting",))] == [9]
    assert store.meta("seq") == "42" and store.meta("none") is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_the_state_database_and_its_wal_are_private(tmp_path: Path) -> None:
    # Issue 12, finding 11: the -wal and -shm files of the state database were 0644 (the
    # database itself 0600): every deployment, as written, readable by any user.
    path = tmp_path / "state.db"
    store = Store(path)
    store.add(3, 9, {"deployment": {"secret": "env"}})
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("state.db*")}
    assert modes == {"state.db": "0o600", "state.db-wal": "0o600", "state.db-shm": "0o600"}
    store.close()
    # made before (0644 all round, as the old code left them): private again when opened
    for p in tmp_path.glob("state.db*"):
        p.chmod(0o644)
    store = Store(path)
    store.add(3, 10, {"deployment": {}})
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("state.db*")}
    assert set(modes.values()) == {"0o600"} and "state.db-wal" in modes
    store.close()
