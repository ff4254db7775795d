"""Workload and Result: one unit of a deployment, and what the node reports about it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from zos.gridtypes.base import GoModel, WorkloadData
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.gojson import GoKind, RawJSON, Timestamp, Uint32, decode_model, to_plain
from zos.gridtypes.workloads import WORKLOAD_TYPES


class ResultState(StrEnum):
    INIT = "init"
    OK = "ok"
    ERROR = "error"
    DELETED = "deleted"
    PAUSED = "paused"
    # an update failed; the previous version of the workload still runs
    UNCHANGED = "unchanged"


class Result(GoModel):
    """What the node reports: when, the state, an error message and type-specific data."""

    created: Timestamp = 0
    state: str = ""
    message: str = ""
    data: RawJSON = None

    def _go_encode(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "state": str(self.state),
            "message": self.message,
            "data": self.data,
        }


class Workload(GoModel):
    """A named workload of one type. `data` is the typed model of that type
    (a plain dict when the type is unknown, which validation and challenge refuse)."""

    version: Uint32 = 0
    name: str = ""
    type: str = ""
    data: Annotated[Any, GoKind("raw")] = None
    metadata: str = ""
    description: str = ""
    result: Result = Field(default_factory=Result)

    @classmethod
    def _go_decoded(cls, values: dict[str, Any], raw: dict[str, Any], path: str) -> dict[str, Any]:
        wtype = values.get("type", "")
        model = WORKLOAD_TYPES.get(wtype)
        if model is None:
            values["data"] = to_plain(raw.get("data"))
            return values
        try:
            values["data"] = decode_model(
                model, raw.get("data"), f"{path}.data" if path else "data"
            )
        except GridTypeError as e:
            name = values.get("name", "")
            raise GridTypeError(
                f"workload '{name}' ({wtype}): {e}", workload=name, field=e.field
            ) from None
        return values

    @model_validator(mode="after")
    def _typed_data(self) -> Workload:
        model = WORKLOAD_TYPES.get(self.type)
        if model is not None and not isinstance(self.data, model):
            raw = self.data.to_dict() if isinstance(self.data, WorkloadData) else self.data
            try:
                self.data = decode_model(model, raw, "data")
            except GridTypeError as e:
                raise GridTypeError(
                    f"workload '{self.name}' ({self.type}): {e}", workload=self.name, field=e.field
                ) from None
        return self

    @property
    def known_type(self) -> bool:
        return self.type in WORKLOAD_TYPES

    def data_model(self) -> WorkloadData:
        """The typed data; GridTypeError if the type is unknown."""
        if not isinstance(self.data, WorkloadData) or self.type not in WORKLOAD_TYPES:
            raise GridTypeError(
                f"workload '{self.name}': type: unknown workload type {self.type!r}",
                workload=self.name,
                field="type",
            )
        return self.data

    def raw_data(self) -> Any:
        """The data as a plain JSON value (as zos writes it)."""
        if isinstance(self.data, WorkloadData):
            return self.data.to_dict()
        return self.data

    def challenge(self) -> str:
        return (
            f"{self.version}{self.name}{self.type}{self.metadata}{self.description}"
            + self.data_model().challenge()
        )

    def capacity(self) -> Capacity:
        return self.data_model().capacity()

    def _go_encode(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "type": self.type,
            "data": self.raw_data(),
            "metadata": self.metadata,
            "description": self.description,
            "result": self.result.to_dict(),
        }
