"""`zmount`: a raw disk attached to a zmachine."""

from __future__ import annotations

from typing import ClassVar

from zos.gridtypes.base import ValidationContext, WorkloadData
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.gojson import Uint64


class SizedDisk(WorkloadData):
    """A disk of `size` bytes on the node's SSD pool (zmount and volume)."""

    size: Uint64 = 0

    def challenge(self) -> str:
        return str(self.size)

    def capacity(self) -> Capacity:
        return Capacity(sru=self.size)

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if self.size == 0:
            raise ctx.fail("size", "must be more than 0")


class ZMount(SizedDisk):
    type: ClassVar[str] = "zmount"
