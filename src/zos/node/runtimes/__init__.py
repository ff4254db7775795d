"""Zmachine runtimes by name: what runs a machine's plan (`base.MachineRuntime`).

A machine records the name of the runtime that runs it, so a later agent asks the
same one. A new runtime (a VM) is one module with a class of that shape and one line
in `RUNTIMES` (or a call to `register`).
"""

from __future__ import annotations

from collections.abc import Callable

from zos.node.runtimes.base import (
    MachinePlan,
    MachineRuntime,
    MachineRuntimeError,
    MachineStats,
    Mount,
)
from zos.node.runtimes.runc import RuncRuntime
from zos.node.runtimes.vm import VmRuntime
from zos.node.services import NodeServices

# What a machine runs under when nothing asks for another runtime.
DEFAULT_RUNTIME = RuncRuntime.name

RUNTIMES: dict[str, Callable[[NodeServices], MachineRuntime]] = {
    RuncRuntime.name: RuncRuntime,
    VmRuntime.name: VmRuntime,
}


def register(name: str, factory: Callable[[NodeServices], MachineRuntime]) -> None:
    """Add a runtime under `name` (a second one for the same name is a bug)."""
    if RUNTIMES.get(name, factory) is not factory:
        raise ValueError(f"runtime {name} is already registered")
    RUNTIMES[name] = factory


__all__ = [
    "DEFAULT_RUNTIME",
    "RUNTIMES",
    "MachinePlan",
    "MachineRuntime",
    "MachineRuntimeError",
    "MachineStats",
    "Mount",
    "RuncRuntime",
    "VmRuntime",
    "register",
]
