"""`zlogs`: stream a zmachine's logs to a URL."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from zos.gridtypes.base import ValidationContext, WorkloadData

LOG_SCHEMES = ("redis", "ws", "wss", "http", "https")


class ZLogs(WorkloadData):
    type: ClassVar[str] = "zlogs"

    zmachine: str = ""
    output: str = ""

    def challenge(self) -> str:
        return self.zmachine + self.output

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        target = ctx.get(self.zmachine)
        if target is None or target.type != "zmachine":
            raise ctx.fail("zmachine", f"no zmachine named '{self.zmachine}' in the deployment")
        try:
            scheme = urlsplit(self.output).scheme
        except ValueError as e:
            raise ctx.fail("output", f"invalid url: {e}") from None
        if scheme not in LOG_SCHEMES:
            raise ctx.fail("output", f"scheme must be one of {', '.join(LOG_SCHEMES)}")
