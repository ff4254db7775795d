"""What the node keeps for one deployment (a store row's body), typed.

`deployment` is the deployment as its owner asked, with each workload's result (the
wire form: it is what `get` answers and what the signature covers). `pending` holds
the steps left to do, by workload name; `restore` the names of workloads that ran
before a restart and could not be brought back (their data is kept, they are tried
again at every start). The JSON form is the one every earlier agent wrote, so rows
already on disk read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

Op = Literal["add", "update", "ensure", "remove"]
# add: provision; update: update from `previous`; ensure: provision again after a
# restart, keeping the state; remove: deprovision `previous` (a workload an update dropped).
OPS: tuple[Op, ...] = ("add", "update", "ensure", "remove")


class BodyError(ValueError):
    """A stored body that no agent wrote (the field is named)."""


@dataclass(frozen=True)
class Step:
    """One workload's pending step."""

    op: Op
    previous: dict[str, Any] | None = None  # the workload as it was (update, remove)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise BodyError(f"pending: unknown op {self.op!r}, expected one of {', '.join(OPS)}")
        if self.op in ("update", "remove") and not isinstance(self.previous, dict):
            raise BodyError(f"pending: a {self.op} step needs the previous workload")

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"op": self.op}
        if self.previous is not None:
            raw["previous"] = self.previous
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> Step:
        if not isinstance(raw, dict):
            raise BodyError(f"pending: a step must be an object, got {type(raw).__name__}")
        return cls(cast(Op, raw.get("op")), raw.get("previous"))


@dataclass
class DeploymentBody:
    deployment: dict[str, Any]
    pending: dict[str, Step] = field(default_factory=dict)
    restore: list[str] = field(default_factory=list)

    @property
    def workloads(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.deployment["workloads"])

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "deployment": self.deployment,
            "pending": {name: step.to_json() for name, step in self.pending.items()},
        }
        if self.restore:
            raw["restore"] = sorted(self.restore)
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> DeploymentBody:
        if not isinstance(raw, dict) or not isinstance(raw.get("deployment"), dict):
            raise BodyError("deployment: a stored body holds the deployment as an object")
        pending = raw.get("pending", {})  # older rows of a deleted deployment have none
        if not isinstance(pending, dict):
            raise BodyError("pending: must be an object of steps by workload name")
        return cls(
            deployment=raw["deployment"],
            pending={str(name): Step.from_json(step) for name, step in pending.items()},
            restore=[str(name) for name in raw.get("restore") or ()],
        )
