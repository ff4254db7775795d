"""Base classes shared by the gridtypes models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zos.gridtypes.capacity import Capacity
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.gojson import decode_model, dumps, encode_model, parse_json

if TYPE_CHECKING:
    from zos.gridtypes.deployment import Deployment
    from zos.gridtypes.workload import Workload


def go_bool(value: bool) -> str:
    """Go's %t."""
    return "true" if value else "false"


def _from_pydantic(cls: type, e: ValidationError) -> GridTypeError:
    """One GridTypeError line from a pydantic ValidationError (keeps our own messages)."""
    parts = []
    for err in e.errors(include_url=False):
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, GridTypeError):
            return inner
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", "invalid"))
    return GridTypeError(f"{cls.__name__}: " + "; ".join(parts))


class GoModel(BaseModel):
    """A model read and written with Go's encoding/json rules (see zos.gridtypes.gojson).

    Building one in Python (`ZMount(size=5)`) checks types and ranges too; any
    problem is a GridTypeError.
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore", validate_assignment=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _from_pydantic(type(self), e) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as e:
            raise _from_pydantic(cls, e) from None

    @classmethod
    def from_raw(cls, raw: Any, path: str = "") -> Any:
        """From already parsed JSON (dicts/lists) with Go's decoding rules."""
        return decode_model(cls, raw, path)

    @classmethod
    def from_json_text(cls, data: bytes | str, what: str | None = None) -> Any:
        return decode_model(cls, parse_json(data, what or cls.__name__), "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object zos writes for this model (plain dicts and lists)."""
        return encode_model(self)

    def to_json(self, indent: int | None = None) -> str:
        return dumps(self.to_dict(), indent)


@dataclass
class ValidationContext:
    """What a workload's validate() may look at, and how it reports a broken rule."""

    deployment: Deployment
    workload: Workload

    def fail(self, field: str, rule: str) -> GridTypeError:
        wl = self.workload
        where = f"data.{field}" if field else "data"
        return GridTypeError(
            f"workload '{wl.name}' ({wl.type}): {where}: {rule}",
            workload=wl.name,
            field=where,
        )

    def get(self, name: str) -> Workload | None:
        for wl in self.deployment.workloads:
            if wl.name == name:
                return wl
        return None


class WorkloadData(GoModel):
    """The `data` of one workload type. Subclasses set `type` and implement challenge()."""

    type: ClassVar[str] = ""

    def challenge(self) -> str:
        raise NotImplementedError

    def capacity(self) -> Capacity:
        return Capacity()

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        """Raise ctx.fail(field, rule) when the data breaks a rule of its type."""
