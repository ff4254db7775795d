"""Capacity units a deployment reserves on a node, as zos counts them (in bytes)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zos.gridtypes.deployment import Deployment

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class Capacity:
    """cru: cores; mru: memory bytes; sru: SSD bytes; hru: HDD bytes; ipv4u: public IPv4s."""

    cru: int = 0
    mru: int = 0
    sru: int = 0
    hru: int = 0
    ipv4u: int = 0

    def __add__(self, other: Capacity) -> Capacity:
        if not isinstance(other, Capacity):
            return NotImplemented
        return Capacity(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Capacity) -> Capacity:
        if not isinstance(other, Capacity):
            return NotImplemented
        return Capacity(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def is_zero(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def fits_in(self, other: Capacity) -> bool:
        """Every unit of self is at most the same unit of other."""
        return all(getattr(self, f.name) <= getattr(other, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def capacity(deployment: Deployment, include_deleted: bool = False) -> Capacity:
    """What the deployment reserves: the sum over its workloads.

    Workloads whose result state is `deleted` reserve nothing and are skipped unless
    `include_deleted`. A workload of an unknown type raises GridTypeError.
    """
    total = Capacity()
    for wl in deployment.workloads:
        if not include_deleted and wl.result.state == "deleted":
            continue
        total = total + wl.capacity()
    return total
