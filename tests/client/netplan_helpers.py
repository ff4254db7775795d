"""Helpers shared by the network planner's tests."""

from __future__ import annotations

from zos.gridtypes import Deployment, validate
from zos.gridtypes.deployment import SignatureRequest, SignatureRequirement
from zos.gridtypes.workload import Workload

TWIN = 41


def deployment_of(wl: Workload) -> Deployment:
    """`wl` alone in a deployment of twin 41, checked as a node checks it (unsigned)."""
    d = Deployment(
        version=wl.version,
        twin_id=TWIN,
        workloads=[wl],
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=TWIN, required=True, weight=1)], weight_required=1
        ),
    )
    validate(d)
    return d
