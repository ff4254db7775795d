"""The runc runtime: a zmachine as a container, detached and supervised.

Container `zm-<wid>` runs from an OCI bundle in the machine's directory (`bundle/`),
in the namespace of its veth attachment, with the plan's files under `etc/` bind-mounted
read-only. `zos.primitives.supervisor` restarts it when it exits (it outlives the agent,
which finds it again by id); its output goes to bounded log files (`zos.primitives.logd`)
under `<data>/logs/zmachines/`. runc's own state is on /run (gone on reboot, as the
containers are), one directory per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import ClassVar

from zos.node.runtimes.base import MachinePlan, MachineRuntimeError, MachineStats
from zos.node.services import NodeServices
from zos.primitives import cgroups, logd, netns
from zos.primitives.runc import BindMount, ContainerSpec, Runc, RuncError, write_bundle
from zos.primitives.supervisor import Supervisor

PREFIX = "zm-"


def container_id(wid: str) -> str:
    return f"{PREFIX}{wid}"


def _write_files(workdir: Path, files: dict[str, str]) -> list[BindMount]:
    mounts = []
    for destination, text in files.items():
        path = workdir / destination.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        mounts.append(BindMount(path, destination, readonly=True))
    return mounts


class RuncRuntime:
    name: ClassVar[str] = "runc"
    interface_kind: ClassVar[str] = "veth"

    def __init__(self, node: NodeServices) -> None:
        key = hashlib.sha256(str(node.data_dir.resolve()).encode()).hexdigest()[:12]
        self.runc = Runc(Path(f"/run/zos/runc-{key}"))
        self.logs_root = node.data_dir / "logs" / "zmachines"
        self.supervisor = Supervisor(self.runc, self.logs_root, node.backoff)

    async def ensure(self, plan: MachinePlan) -> None:
        cid = container_id(plan.workload_id)
        if any(i.kind != self.interface_kind for i in plan.interfaces) or len(plan.interfaces) > 1:
            raise MachineRuntimeError("a container has at most one veth interface")
        files = await asyncio.to_thread(_write_files, plan.workdir, plan.files)
        spec = ContainerSpec(
            id=cid,
            rootfs=plan.rootfs,
            args=list(plan.args),
            env=dict(plan.env),
            cwd=plan.cwd,
            hostname=plan.hostname,
            netns=netns.path(plan.interfaces[0].namespace) if plan.interfaces else None,
            cpu=plan.cpu,
            memory=plan.memory,
            mounts=[*files, *(BindMount(m.source, m.destination, m.readonly) for m in plan.mounts)],
        )
        bundle = plan.workdir / "bundle"
        try:
            await asyncio.to_thread(write_bundle, bundle, spec)
            await self.supervisor.ensure(cid, bundle)
        except RuncError as exc:
            raise MachineRuntimeError(str(exc)) from None

    async def stop(self, workload_id: str) -> None:
        try:
            await self.supervisor.stop(container_id(workload_id))
        except RuncError as exc:
            raise MachineRuntimeError(str(exc)) from None

    async def list(self) -> list[str]:
        ids = (c.get("id", "") for c in await self.runc.list())
        return [cid[len(PREFIX) :] for cid in ids if cid.startswith(PREFIX)]

    def logs(self, workload_id: str) -> Path:
        return self.supervisor.log_dir(container_id(workload_id))

    async def stats(self, workload_id: str) -> MachineStats | None:
        cid = container_id(workload_id)
        state = await self.runc.state(cid)
        if state is None:
            return None
        running = state.get("status") == "running"
        pid = int(state.get("pid") or 0) or None
        memory = cpu_ns = None
        if running and pid:
            with contextlib.suppress(cgroups.CgroupError, OSError, ValueError):
                use = await asyncio.to_thread(cgroups.usage, pid)
                memory, cpu_ns = use.memory, use.cpu_ns
        return MachineStats(running, pid, self.supervisor.restarts(cid), memory, cpu_ns)

    async def idle(self) -> None:
        if self.supervisor.watched():
            return
        await asyncio.to_thread(logd.stop_daemon, self.logs_root)
        with contextlib.suppress(OSError):
            self.runc.root.rmdir()

    def close(self) -> None:
        self.supervisor.close()
