"""Structural rules a node checks before accepting a deployment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zos.gridtypes.base import ValidationContext
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.names import name_error
from zos.gridtypes.signatures import SIGNATURE_STYLES, STYLE_POLKA
from zos.gridtypes.workloads import WORKLOAD_TYPES

if TYPE_CHECKING:
    from zos.gridtypes.deployment import Deployment
    from zos.gridtypes.workload import Workload


def _wl_error(wl: Workload, field: str, rule: str) -> GridTypeError:
    label = f"workload '{wl.name}' ({wl.type})" if wl.type else f"workload '{wl.name}'"
    return GridTypeError(f"{label}: {field}: {rule}", workload=wl.name, field=field)


def _error(field: str, rule: str) -> GridTypeError:
    return GridTypeError(f"deployment: {field}: {rule}", field=field)


def validate(deployment: Deployment) -> None:
    """Raise GridTypeError naming the workload, field and rule of the first problem found."""
    d = deployment
    if d.twin_id == 0:
        raise _error("twin_id", "must not be 0")
    req = d.signature_requirement
    if req.signature_style not in SIGNATURE_STYLES:
        raise _error(
            "signature_requirement.signature_style",
            f"unknown style {req.signature_style!r} (expected '' or '{STYLE_POLKA}')",
        )
    seen_twins: set[int] = set()
    for i, request in enumerate(req.requests):
        field = f"signature_requirement.requests[{i}]"
        if request.twin_id == 0:
            raise _error(f"{field}.twin_id", "must not be 0")
        if request.twin_id in seen_twins:
            raise _error(f"{field}.twin_id", f"twin {request.twin_id} is requested twice")
        seen_twins.add(request.twin_id)
    if d.twin_id not in seen_twins:
        raise _error("signature_requirement.requests", f"must include the owner twin {d.twin_id}")
    total = sum(r.weight for r in req.requests)
    if total < req.weight_required:
        raise _error(
            "signature_requirement.weight_required",
            f"{req.weight_required} can never be reached (the requests weigh {total})",
        )

    names: set[str] = set()
    for wl in d.workloads:
        if wl.version > d.version:
            raise _wl_error(
                wl, "version", f"{wl.version} is higher than the deployment version {d.version}"
            )
        why = name_error(wl.name)
        if why:
            raise _wl_error(wl, "name", why)
        if wl.name in names:
            raise _wl_error(wl, "name", f"more than one workload is named '{wl.name}'")
        names.add(wl.name)
        if wl.type not in WORKLOAD_TYPES:
            known = ", ".join(sorted(WORKLOAD_TYPES))
            raise _wl_error(wl, "type", f"unknown workload type {wl.type!r} (known: {known})")
    for wl in d.workloads:
        wl.data_model().validate(ValidationContext(deployment=d, workload=wl))
