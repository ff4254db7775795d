"""The provision engine: policy only. What must exist, in which order, and what it reports.

A request is checked and accepted (or refused whole, with nothing changed) in one
step; the work it implies is written into the store as *pending operations* on the
deployment, then carried out by a job that reads the store afresh before every
step. So a crash (`kill -9`) at any point leaves a store that says exactly what is
left to do, and `start()` simply runs every job again: managers are idempotent.

Pending steps, by workload name (`zos.node.body`): `add` (provision), `update`
(update from `previous`), `ensure` (provision again after a restart, keeping the
state), `remove` (deprovision `previous`, a workload an update dropped). Removals run
first, in reverse install order, then the rest in install order; the order is each
manager's `rank` (a type without a manager comes last and fails). A failed `add` is
removed again (nothing half-built stays); a failed `ensure` is not: it ran before,
and its data (a volume, a zdb namespace) is kept until a later start restores it.
A deployment whose data key the kernel lost (a reboot) is *locked*: its steps wait,
untouched, until the key is given again (`resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from zos.gridtypes import Capacity, Deployment, GridTypeError, Result, Workload, validate
from zos.node.body import DeploymentBody, Step
from zos.node.capacity import Offer
from zos.node.errors import Refused
from zos.node.services import ContractInfo
from zos.node.store import ACTIVE, DELETED, DELETING, DiskFull, Record, Store
from zos.node.workloads.base import (
    LAST_RANK,
    Manager,
    NodeServices,
    WorkloadContext,
    WorkloadError,
)

log = logging.getLogger(__name__)

MAX_PARALLEL_JOBS = 16
# Workloads that cost no capacity (a network) are still kernel objects: bounded, so one
# twin cannot fill a node with them. A request past a bound is refused whole.
MAX_WORKLOADS = 64  # per deployment
MAX_NETWORKS = 16  # per twin on one node (a network shared by several deployments is one)
NETWORK_TYPES = ("network", "network-light")

OK, ERROR, INIT, DELETED_STATE, UNCHANGED = "ok", "error", "init", "deleted", "unchanged"


class EngineError(Refused):
    """A refused deployment request."""


class Grid(Protocol):
    """The registry as the engine sees it (a part of `zos.node.services.RegistryView`)."""

    async def twin_key(self, twin_id: int) -> bytes | None: ...

    async def node_contract(self, contract_id: int) -> ContractInfo | None: ...


@runtime_checkable
class HasLogs(Protocol):
    """A manager whose workloads have output (a zmachine's)."""

    async def logs_since(self, wid: str, offset: int, wait: float) -> tuple[bytes, int]: ...


@contextlib.contextmanager
def _recorded() -> Iterator[None]:
    """A request's store write; a full disk refuses it whole (the write is all or nothing)."""
    try:
        yield
    except DiskFull:
        raise EngineError(
            "capacity",
            "the node's data disk is full: there is no room to record this request, "
            "so nothing was changed; try another node or later",
        ) from None


def _result(state: str, message: str = "", data: Any = None) -> dict[str, Any]:
    return {"created": int(time.time()), "state": state, "message": message, "data": data}


def _body(rec: Record) -> DeploymentBody:
    return DeploymentBody.from_json(rec.body)


def _usage(body: DeploymentBody) -> Capacity:
    """Capacity a stored deployment holds: every workload not failed or deleted (one
    that failed to come back after a restart still holds its kept data)."""
    total = Capacity()
    restore = set(body.restore)
    for wl in Deployment.from_dict(body.deployment).workloads:
        if wl.result.state not in (ERROR, DELETED_STATE) or wl.name in restore:
            total = total + wl.capacity()
    return total


class Engine:
    def __init__(
        self,
        store: Store,
        managers: Mapping[str, Manager],
        services: NodeServices,
        offer: Offer,
        grid: Grid,
        node_id: int,
    ) -> None:
        self.store = store
        self.managers = dict(managers)
        self.services = services
        self.offer = offer
        self.grid = grid
        self.node_id = node_id
        self._locks: dict[int, asyncio.Lock] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        # Bounds how many deployments are built at once (a burst, or a restart of many).
        self._slots = asyncio.Semaphore(MAX_PARALLEL_JOBS)
        self._used: dict[int, Capacity] = {}
        self._last_deployment = 0
        for rec in store.list(states=(ACTIVE, DELETING)):
            self._used[rec.contract_id] = _usage(_body(rec))
            self._last_deployment = max(self._last_deployment, int(rec.created))

    # --- start-up -------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove leftovers, then bring every deployment back to what its owner asked.

        Leftovers first and before any new request is accepted: `cleanup` removes
        anything not in the store, which must not race a deployment being built.
        """
        keep: dict[str, set[str]] = {t: set() for t in self.managers}
        for rec in self.store.list(states=(ACTIVE, DELETING)):
            body = _body(rec)
            dep = Deployment.from_dict(body.deployment)
            for wl in dep.workloads:
                if wl.type in keep and (
                    wl.result.state != ERROR or wl.name in body.pending or wl.name in body.restore
                ):
                    keep[wl.type].add(dep.workload_id(wl.name))
            for step in body.pending.values():
                prev = step.previous
                if step.op == "remove" and prev and prev["type"] in keep:
                    keep[prev["type"]].add(dep.workload_id(prev["name"]))
        # Reverse install order: a leftover machine lets go of its network and disks first.
        for wtype in sorted(self.managers, key=lambda t: -self.install_rank(t)):
            try:
                await self.managers[wtype].cleanup(keep[wtype])
            except Exception:
                log.exception("cleanup of %s leftovers failed", wtype)
        # Deployments with a shared workload (a network) first: a machine in another
        # deployment that attaches to it would otherwise find it missing after a reboot.
        first: list[asyncio.Task[None]] = []
        later: list[int] = []
        for rec in self.store.list(states=(ACTIVE,)):
            body = _body(rec)
            for wl in body.workloads:
                state = wl["result"]["state"]
                if wl["name"] not in body.pending and (
                    state in (OK, INIT, UNCHANGED) or wl["name"] in body.restore
                ):
                    body.pending[wl["name"]] = Step("ensure")
            self.store.put(rec.twin_id, rec.contract_id, body.to_json())
            if any(self._shared(wl["type"]) for wl in body.workloads):
                first.append(self._schedule(rec.contract_id))
            else:
                later.append(rec.contract_id)
        if later:
            self._track(self._after(first, later))
        for rec in self.store.list(states=(DELETING,)):
            self._schedule(rec.contract_id)

    def _shared(self, wtype: str) -> bool:
        manager = self.managers.get(wtype)
        return manager is not None and manager.shared

    async def _after(self, first: list[asyncio.Task[None]], later: list[int]) -> None:
        await asyncio.gather(*first, return_exceptions=True)
        for contract_id in later:
            self._schedule(contract_id)

    async def wait_idle(self) -> None:
        """Wait until no job is running (tests, shutdown)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*list(self._jobs), return_exceptions=True)

    # --- checks shared by deploy and update -------------------------------------------------

    def _parse(self, raw: Any) -> Deployment:
        if not isinstance(raw, dict):
            raise EngineError("invalid", "deployment: expected a JSON object")
        try:
            dep = Deployment.from_dict(raw)
            validate(dep)
        except GridTypeError as e:
            raise EngineError("invalid", str(e)) from None
        if len(dep.workloads) > MAX_WORKLOADS:
            raise EngineError(
                "invalid",
                f"workloads: {len(dep.workloads)} in one deployment, at most {MAX_WORKLOADS}",
            )
        return dep

    def _check_networks(self, dep: Deployment) -> None:
        """A twin's networks on this node (by name, over all its deployments) stay bounded."""
        names = {wl.name for wl in dep.workloads if wl.type in NETWORK_TYPES}
        for rec in self.store.list(twin_id=dep.twin_id, states=(ACTIVE,)):
            if rec.contract_id == dep.contract_id:
                continue
            for wl in _body(rec).workloads:
                if wl["type"] in NETWORK_TYPES and wl["result"]["state"] != DELETED_STATE:
                    names.add(wl["name"])
        if len(names) > MAX_NETWORKS:
            raise EngineError(
                "capacity",
                f"networks: twin {dep.twin_id} would have {len(names)} networks on this node, "
                f"at most {MAX_NETWORKS}",
            )

    async def _check_signed_and_contracted(self, sender: int, dep: Deployment) -> None:
        if dep.twin_id != sender:
            raise EngineError(
                "forbidden",
                f"twin_id: the deployment belongs to twin {dep.twin_id}, but twin {sender} sent it",
            )
        if dep.contract_id == 0:
            raise EngineError("invalid", "contract_id: must be the id of a node contract")
        keys: dict[int, bytes] = {}
        for request in dep.signature_requirement.requests:
            key = await self.grid.twin_key(request.twin_id)
            if key is None:
                raise EngineError(
                    "invalid", f"signature_requirement: twin {request.twin_id} is not registered"
                )
            keys[request.twin_id] = key
        try:
            dep.verify(keys)
        except GridTypeError as e:
            raise EngineError("bad_signature", f"signature_requirement: {e}") from None
        contract = await self.grid.node_contract(dep.contract_id)
        cid = dep.contract_id
        if contract is None:
            raise EngineError("invalid", f"contract_id {cid}: no such node contract")
        if contract.owner_twin != dep.twin_id:
            raise EngineError(
                "forbidden",
                f"contract_id {cid}: owned by twin {contract.owner_twin}, not {dep.twin_id}",
            )
        if contract.node_id != self.node_id:
            raise EngineError(
                "invalid",
                f"contract_id {cid}: is for node {contract.node_id}, not this node "
                f"({self.node_id})",
            )
        if not contract.active:
            raise EngineError("invalid", f"contract_id {cid}: the contract is cancelled")
        if contract.deployment_hash.lower() != dep.hash_hex():
            raise EngineError(
                "invalid",
                f"deployment hash {dep.hash_hex()} does not match the hash of contract {cid} "
                f"({contract.deployment_hash})",
            )

    def _check_capacity(self, wanted: Capacity, contract_id: int, dep: Deployment) -> None:
        for wl in dep.workloads:
            why = self.offer.too_many_cores(wl.capacity().cru)
            if why is not None:
                raise EngineError("capacity", f"workload '{wl.name}': compute_capacity.cpu: {why}")
        used = sum((c for cid, c in self._used.items() if cid != contract_id), start=Capacity())
        short = self.offer.shortfall(used, wanted)
        if short:
            raise EngineError("capacity", "not enough capacity on this node: " + "; ".join(short))

    def _owned(self, sender: int, contract_id: int, states: tuple[str, ...] = (ACTIVE,)):
        rec = self.store.get(contract_id)
        if rec is None or rec.twin_id != sender or rec.state not in states:
            raise EngineError(
                "not_found", f"contract_id {contract_id}: twin {sender} has no such deployment"
            )
        return rec

    # --- requests -------------------------------------------------------------------------

    async def deploy(self, sender: int, raw: Any) -> None:
        dep = self._parse(raw)
        if dep.version != 0:
            raise EngineError("invalid", "version: must be 0 for a new deployment")
        await self._check_signed_and_contracted(sender, dep)
        # From here to the store write nothing awaits, so two requests cannot both fit.
        if self.store.get(dep.contract_id) is not None:
            raise EngineError(
                "conflict", f"contract_id {dep.contract_id}: a deployment already exists"
            )
        self._check_networks(dep)
        wanted = dep.capacity()
        self._check_capacity(wanted, dep.contract_id, dep)
        for wl in dep.workloads:
            wl.result = Result.from_raw(_result(INIT))
        body = DeploymentBody(dep.to_dict(), {wl.name: Step("add") for wl in dep.workloads})
        with _recorded():
            self.store.add(dep.twin_id, dep.contract_id, body.to_json(), changed=body.workloads)
        self._used[dep.contract_id] = wanted
        self._last_deployment = int(time.time())
        self._schedule(dep.contract_id)

    async def update(self, sender: int, raw: Any) -> None:
        new = self._parse(raw)
        rec = self._owned(sender, new.contract_id)
        old = Deployment.from_dict(_body(rec).deployment)
        if new.version != old.version + 1:
            raise EngineError(
                "invalid",
                f"version: must be {old.version + 1} (the current version is "
                f"{old.version}), got {new.version}",
            )
        await self._check_signed_and_contracted(sender, new)
        rec = self._owned(sender, new.contract_id)  # it may have gone while we checked
        current = _body(rec)
        old = Deployment.from_dict(current.deployment)
        if new.version != old.version + 1:
            raise EngineError("conflict", "version: the deployment changed meanwhile; retry")
        pending = dict(current.pending)
        old_by_name = {wl.name: wl for wl in old.workloads}
        for wl in new.workloads:
            before = old_by_name.get(wl.name)
            if before is None:
                wl.result = Result.from_raw(_result(INIT))
                pending[wl.name] = Step("add")
                continue
            if before.type != wl.type:
                raise EngineError(
                    "invalid",
                    f"workload '{wl.name}': type: cannot change from {before.type} to {wl.type}",
                )
            if wl.version == new.version:
                wl.result = Result.from_raw(_result(INIT))
                failed = before.result.state in (ERROR, DELETED_STATE)
                pending[wl.name] = Step("add") if failed else Step("update", before.to_dict())
            elif wl.raw_data() != before.raw_data() or wl.version != before.version:
                raise EngineError(
                    "invalid",
                    f"workload '{wl.name}': version: changed without being raised to {new.version}",
                )
            else:
                wl.result = before.result
        names = {wl.name for wl in new.workloads}
        for before in old.workloads:
            if before.name not in names and before.result.state != DELETED_STATE:
                pending[before.name] = Step("remove", before.to_dict())
        body = DeploymentBody(new.to_dict(), pending)
        self._check_networks(new)
        wanted = _usage(body)
        self._check_capacity(wanted, new.contract_id, new)
        changed = [wl.to_dict() for wl in new.workloads if wl.name in pending]
        with _recorded():
            self.store.put(rec.twin_id, rec.contract_id, body.to_json(), changed=changed)
        self._used[new.contract_id] = wanted
        self._schedule(new.contract_id)

    async def delete(self, sender: int, contract_id: int) -> None:
        self._owned(sender, contract_id)
        await self.cancel(contract_id)

    async def cancel(self, contract_id: int) -> None:
        """Take a deployment down (its owner asked, or its contract was cancelled)."""
        rec = self.store.get(contract_id)
        if rec is None or rec.state != ACTIVE:
            return
        with _recorded():
            self.store.put(rec.twin_id, contract_id, rec.body, state=DELETING)
        self._schedule(contract_id)

    async def get(self, sender: int, contract_id: int) -> dict[str, Any]:
        rec = self._owned(sender, contract_id, (ACTIVE, DELETING, DELETED))
        return _body(rec).deployment

    async def list(self, sender: int) -> list[dict[str, Any]]:
        return [_body(rec).deployment for rec in self.store.list(twin_id=sender)]

    async def changes(self, sender: int, contract_id: int) -> list[dict[str, Any]]:
        self._owned(sender, contract_id, (ACTIVE, DELETING, DELETED))
        return self.store.changes(contract_id)

    async def logs(
        self, sender: int, contract_id: int, wtype: str, name: str, offset: int, wait: float
    ) -> tuple[bytes, int]:
        """Output of the sender's workload `name` of type `wtype` from `offset` (HasLogs)."""
        dep = Deployment.from_dict(
            _body(self._owned(sender, contract_id, (ACTIVE, DELETING, DELETED))).deployment
        )
        manager = self.managers.get(wtype)
        if not any(w.name == name and w.type == wtype for w in dep.workloads) or not isinstance(
            manager, HasLogs
        ):
            raise EngineError("not_found", f"name: no {wtype} '{name}' in the deployment")
        try:
            return await manager.logs_since(dep.workload_id(name), offset, wait)
        except WorkloadError as e:
            raise EngineError("not_found", str(e)) from None

    def active_contracts(self) -> list[int]:
        return [rec.contract_id for rec in self.store.list(states=(ACTIVE,))]

    def used(self) -> Capacity:
        """What deployments hold plus what the system keeps back (what zos reports as used)."""
        return sum(self._used.values(), start=self.offer.system)

    def statistics(self) -> dict[str, Any]:
        records = self.store.list(states=(ACTIVE,))
        workloads = sum(
            1
            for rec in records
            for wl in _body(rec).workloads
            if wl["result"]["state"] != DELETED_STATE
        )
        return {
            "total": self.offer.total.as_dict(),
            "used": self.used().as_dict(),
            "system": self.offer.system.as_dict(),
            "users": {
                "deployments": len(records),
                "workloads": workloads,
                "last_deployment_timestamp": self._last_deployment,
            },
        }

    # --- jobs -----------------------------------------------------------------------------

    def _locked(self, contract_id: int) -> bool:
        keys = self.services.keys
        return keys is not None and keys.locked(contract_id)

    async def fail(self, workload_id: str, message: str) -> None:
        """A manager removed a running workload that can no longer be (a gateway whose
        name contract went): its result becomes an error saying why. It stays failed
        after a restart (not ensured again, so the next start's cleanup sees it gone)."""
        twin, contract, name = workload_id.split("-", 2)
        contract_id = int(contract)
        async with self._locks.setdefault(contract_id, asyncio.Lock()):
            rec = self.store.get(contract_id)
            if rec is None or rec.state != ACTIVE or rec.twin_id != int(twin):
                return
            body = _body(rec)
            changed = []
            for wl in body.workloads:
                if wl["name"] == name and wl["result"]["state"] in (OK, UNCHANGED):
                    wl["result"] = _result(ERROR, message)
                    changed.append(wl)
            if changed:
                self.store.put(rec.twin_id, contract_id, body.to_json(), changed=changed)
                self._used[contract_id] = _usage(body)

    def resume(self, contract_id: int) -> None:
        """The deployment's key is back (it was locked): do what it has pending."""
        self._schedule(contract_id)

    def _schedule(self, contract_id: int) -> asyncio.Task[None]:
        return self._track(self._job(contract_id))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        job = asyncio.create_task(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _job(self, contract_id: int) -> None:
        # One lock per contract, kept: dropping it while a job waits would let two run.
        async with self._locks.setdefault(contract_id, asyncio.Lock()), self._slots:
            try:
                await self._work(contract_id)
            except Exception:
                log.exception("deployment %s: job failed", contract_id)

    async def _work(self, contract_id: int) -> None:
        while True:
            rec = self.store.get(contract_id)
            if rec is None or rec.state == DELETED:
                return
            if rec.state == DELETING:
                await self._teardown(contract_id)
                return
            if self._locked(contract_id):
                return  # its pending steps wait for the key (`resume`); nothing is removed
            found = self._next_step(_body(rec))
            if found is None:
                return
            name, step = found
            await self._run_op(rec.twin_id, contract_id, name, step)

    def install_rank(self, wtype: str) -> int:
        """Where `wtype` comes in a deployment's install order (its manager's rank)."""
        manager = self.managers.get(wtype)
        return manager.rank if manager is not None else LAST_RANK

    def _next_step(self, body: DeploymentBody) -> tuple[str, Step] | None:
        if not body.pending:
            return None
        types = {wl["name"]: wl["type"] for wl in body.workloads}

        def key(item: tuple[str, Step]) -> tuple[int, int]:
            name, step = item
            if step.op == "remove" and step.previous is not None:
                return (0, -self.install_rank(step.previous["type"]))
            return (1, self.install_rank(types.get(name, "")))

        return min(body.pending.items(), key=key)

    def _ctx(self, dep: Deployment, wl: Workload) -> WorkloadContext:
        return WorkloadContext(
            twin_id=dep.twin_id,
            contract_id=dep.contract_id,
            deployment=dep,
            workload=wl,
            node=self.services,
        )

    async def _run_op(self, twin: int, contract_id: int, name: str, step: Step) -> None:
        rec = self.store.get(contract_id)
        assert rec is not None
        dep = Deployment.from_dict(_body(rec).deployment)
        kind = step.op
        if kind == "remove":
            prev = Workload.from_raw(step.previous)
            message = await self._deprovision(self._ctx(dep, prev))
            prev.result = Result.from_raw(
                _result(ERROR if message else DELETED_STATE, message or "")
            )
            self._finish(contract_id, name, step, None, prev.to_dict())
            return
        wl = dep.get(name)
        manager = self.managers.get(wl.type)
        ctx = self._ctx(dep, wl)
        old_state = wl.result.state
        try:
            if manager is None:
                raise WorkloadError(f"workload type {wl.type} is not supported on this node")
            if kind == "update":
                data = await manager.update(ctx, Workload.from_raw(step.previous))
            else:
                data = await manager.provision(ctx)
            state = OK if kind != "ensure" or old_state != UNCHANGED else UNCHANGED
            message = wl.result.message if state == UNCHANGED else ""
            result = _result(state, message, data)
        except Exception as e:
            if not isinstance(e, WorkloadError):
                log.exception("workload %s: %s failed", ctx.workload_id, kind)
            text = str(e) or type(e).__name__
            if kind == "update":
                result = _result(UNCHANGED, f"update failed, the previous version runs: {text}")
            elif kind == "ensure":
                # It ran before the restart: removing it now would destroy its data
                # (a volume, a zdb namespace) over what may be a passing fault.
                result = _result(
                    ERROR,
                    f"could not be brought back after a restart: {text} "
                    "(its data is kept; tried again at the next start)",
                )
            else:
                result = _result(ERROR, text)
                if manager is not None:
                    await self._deprovision(ctx)  # do not leave half of it behind
        same = (
            kind == "ensure" and result["state"] == old_state and result["data"] == wl.result.data
        )
        if same:
            result["created"] = wl.result.created
        self._finish(contract_id, name, step, result, None if same else True)

    async def _deprovision(self, ctx: WorkloadContext) -> str | None:
        """Remove a workload; the error text if that failed (the leftover is retried at start)."""
        manager = self.managers.get(ctx.workload.type)
        if manager is None:
            return None
        try:
            await manager.deprovision(ctx)
        except Exception as e:
            log.warning("workload %s: removal failed: %s", ctx.workload_id, e)
            return f"removal failed: {e}"
        return None

    def _finish(
        self,
        contract_id: int,
        name: str,
        step: Step,
        result: dict[str, Any] | None,
        change: dict[str, Any] | bool | None,
    ) -> None:
        """Write a step's outcome, unless a newer request replaced that step meanwhile."""
        rec = self.store.get(contract_id)
        if rec is None or rec.state != ACTIVE:
            return
        body = _body(rec)
        if body.pending.get(name) != step:
            return  # an update re-planned this workload; its own step will report
        del body.pending[name]
        if step.op == "ensure" and result is not None:
            restore = set(body.restore)
            if result["state"] == ERROR:
                restore.add(name)
            else:
                restore.discard(name)
            body.restore = sorted(restore)
        changed: list[dict[str, Any]] = []
        if result is not None:
            for wl in body.workloads:
                if wl["name"] == name:
                    wl["result"] = result
                    if change:
                        changed.append(wl)
        elif isinstance(change, dict):
            changed.append(change)
        self.store.put(rec.twin_id, contract_id, body.to_json(), changed=changed)
        self._used[contract_id] = _usage(body)

    async def _teardown(self, contract_id: int) -> None:
        rec = self.store.get(contract_id)
        assert rec is not None
        body = _body(rec)
        dep = Deployment.from_dict(body.deployment)
        extra = [
            Workload.from_raw(step.previous)
            for step in body.pending.values()
            if step.op == "remove"
        ]
        order = sorted(dep.workloads + extra, key=lambda w: -self.install_rank(w.type))
        changed = []
        for wl in order:
            if wl.result.state == DELETED_STATE:
                continue
            message = await self._deprovision(self._ctx(dep, wl))
            wl.result = Result.from_raw(_result(DELETED_STATE, message or ""))
            changed.append(wl.to_dict())
        # the key goes before the record says deleted: whoever sees "deleted" sees no key
        if self.services.keys is not None:
            self.services.keys.forget(contract_id)
        done = DeploymentBody(dep.to_dict())
        self.store.put(rec.twin_id, contract_id, done.to_json(), changed=changed, state=DELETED)
        self._used.pop(contract_id, None)
