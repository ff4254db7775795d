"""Deployments and workloads in ThreeFold's zos wire format.

Read and write the same JSON as zos (Go's decoding rules), compute the signature
challenge and MD5 hash, sign (ed25519 or sr25519; default or polka-wallet style),
verify a multi-signature requirement, validate, and count capacity.

    d = Deployment.from_json(text)
    d.sign(d.twin_id, identity)
    verify_signatures(d, {d.twin_id: identity.public_key})
    validate(d); capacity(d)
"""

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData
from zos.gridtypes.capacity import Capacity, GiB, KiB, MiB, TiB, capacity
from zos.gridtypes.deployment import (
    Deployment,
    Signature,
    SignatureRequest,
    SignatureRequirement,
)
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.names import (
    name_error,
    network_id,
    parse_workload_id,
    short_name,
    workload_id,
)
from zos.gridtypes.signatures import (
    KEY_TYPES,
    SIGNATURE_STYLES,
    STYLE_POLKA,
    sign_deployment,
    signing_message,
    verify_signatures,
)
from zos.gridtypes.validation import validate
from zos.gridtypes.workload import Result, ResultState, Workload
from zos.gridtypes.workloads import *  # noqa: F403
from zos.gridtypes.workloads import WORKLOAD_TYPES
from zos.gridtypes.workloads import __all__ as _workload_names

__all__ = [
    "KEY_TYPES",
    "SIGNATURE_STYLES",
    "STYLE_POLKA",
    "WORKLOAD_TYPES",
    "Capacity",
    "Deployment",
    "GiB",
    "GoModel",
    "GridTypeError",
    "KiB",
    "MiB",
    "Result",
    "ResultState",
    "Signature",
    "SignatureRequest",
    "SignatureRequirement",
    "TiB",
    "ValidationContext",
    "Workload",
    "WorkloadData",
    "capacity",
    "name_error",
    "network_id",
    "parse_workload_id",
    "short_name",
    "sign_deployment",
    "signing_message",
    "validate",
    "verify_signatures",
    "workload_id",
    *_workload_names,
]
