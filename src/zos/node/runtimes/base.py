"""What a zmachine runtime is: the part of a machine that runs it (runc now, a VM later).

The zmachine manager makes the plan, `MachinePlan`: it checks the workload, prepares
the machine's root tree, mounts its volumes and disks on the node, asks the node's
networks service for its interfaces (of the runtime's `interface_kind`) and works out
its process. A runtime only runs that plan and answers for the machines it runs.

A runtime is built once per zmachine manager from the node's services
(`runtime(node)`, see `zos.node.runtimes.RUNTIMES`); building it does no work. Every
method is idempotent: `ensure` finds a machine an earlier agent started and watches it
again; `stop` of a machine that is not there is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from zos.node.networks import Attachment


class MachineRuntimeError(Exception):
    """A runtime could not run or stop a machine (the manager reports it to the user)."""


@dataclass(frozen=True)
class Mount:
    """A directory of the node at `destination` inside the machine."""

    source: Path
    destination: str
    readonly: bool = False
    # A zmount: the raw disk whose file system the node has mounted at `source`.
    image: Path | None = None


@dataclass(frozen=True)
class MachinePlan:
    """One machine, ready to run: everything on the node it needs is in place."""

    workload_id: str
    hostname: str
    # The machine's own directory on the node: the runtime keeps its files there (gone
    # with the machine).
    workdir: Path
    # Its root file system, mounted read-write (the flist's tree under its own layer).
    rootfs: Path
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    cpu: int  # cores
    memory: int  # bytes
    mounts: tuple[Mount, ...] = ()
    # Small files the machine sees read-only at these absolute paths (/etc/hostname, ...).
    files: dict[str, str] = field(default_factory=dict)
    # Its interfaces, made by the networks service with the runtime's interface kind.
    interfaces: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class MachineStats:
    """What a running machine uses, as its runtime sees it."""

    running: bool
    pid: int | None = None  # its main process on the node (a container's init, a QEMU)
    restarts: int = 0  # since this agent started watching it
    memory: int | None = None  # bytes in use
    cpu_ns: int | None = None  # CPU time used


class MachineRuntime(Protocol):
    """Runs machines from their plans; one per node and runtime name."""

    # The name a machine's state records (which runtime to ask after a restart).
    name: ClassVar[str]
    # The kind of network attachment its machines get ("veth": a namespace of their
    # own; "tap": a tap device for a VM's NIC).
    interface_kind: ClassVar[str]

    async def ensure(self, plan: MachinePlan) -> None:
        """Running and watched: found again if it runs, (re)started if not; a crash of
        its process is restarted with the node's back-off."""
        ...

    async def stop(self, workload_id: str) -> None:
        """Stopped and forgotten: its processes and the runtime's state of it are gone
        (its logs are kept until the manager removes them)."""
        ...

    async def list(self) -> list[str]:
        """Workload ids of the machines this runtime has on the node, running or not
        (the manager removes those it has no plan for)."""
        ...

    def logs(self, workload_id: str) -> Path:
        """The directory of the machine's output (`zos.primitives.logd` ring files)."""
        ...

    async def stats(self, workload_id: str) -> MachineStats | None:
        """What the machine uses; None if the runtime has no such machine."""
        ...

    async def idle(self) -> None:
        """The node has no machine of this runtime any more: let go of what the runtime
        keeps for all of them (a log daemon, a state directory)."""
        ...

    def close(self) -> None:
        """The agent is stopping: stop watching, leave every machine running."""
        ...
