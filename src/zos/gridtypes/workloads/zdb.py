"""`zdb`: a 0-db namespace."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData, go_bool
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.gojson import Uint64

ZDB_MODES = ("user", "seq")
# 0-db takes an NSSET value of at most 63 bytes; "*" there means "no password".
ZDB_PASSWORD = re.compile(r"[!-~]{1,63}")


class ZDB(WorkloadData):
    type: ClassVar[str] = "zdb"

    size: Uint64 = 0
    mode: str = ""
    password: str = ""
    public: bool = False

    def challenge(self) -> str:
        return f"{self.size}{self.mode}{self.password}{go_bool(self.public)}"

    def capacity(self) -> Capacity:
        return Capacity(hru=self.size)

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if self.size == 0:
            raise ctx.fail("size", "must be more than 0")
        if self.mode not in ZDB_MODES:
            raise ctx.fail("mode", f"must be 'user' or 'seq', not {self.mode!r}")
        if self.password and (not ZDB_PASSWORD.fullmatch(self.password) or self.password == "*"):
            raise ctx.fail(
                "password",
                "at most 63 printable ASCII characters without spaces, and not '*'",
            )


class ZDBResult(GoModel):
    """Result data of a zdb workload (zos writes these keys capitalised)."""

    namespace: str = ""
    ips: list[str] = Field(default_factory=list)
    port: Uint64 = 0

    def _go_encode(self) -> dict:
        return {"Namespace": self.namespace, "IPs": list(self.ips), "Port": self.port}
