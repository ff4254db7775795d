"""`ip` (public IPv4 and/or IPv6 for a zmachine) and the deprecated `ipv4`."""

from __future__ import annotations

from typing import ClassVar

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData, go_bool
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.gojson import IPNetStr, IPStr


class PublicIP(WorkloadData):
    type: ClassVar[str] = "ip"

    v4: bool = False
    v6: bool = False

    def challenge(self) -> str:
        return go_bool(self.v4) + go_bool(self.v6)

    def capacity(self) -> Capacity:
        return Capacity(ipv4u=1 if self.v4 else 0)

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if not self.v4 and not self.v6:
            raise ctx.fail("v4", "at least one of v4 and v6 must be true")


class PublicIPv4(WorkloadData):
    """Deprecated `ipv4` type: no data, one public IPv4."""

    type: ClassVar[str] = "ipv4"

    def challenge(self) -> str:
        return ""

    def capacity(self) -> Capacity:
        return Capacity(ipv4u=1)


class PublicIPResult(GoModel):
    ip: IPNetStr = ""
    ip6: IPNetStr = ""
    gateway: IPStr = ""
