"""Deployment and its signature requirement; challenge, hash, sign and verify."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from zos.gridtypes.base import GoModel, go_bool
from zos.gridtypes.capacity import Capacity
from zos.gridtypes.errors import GridTypeError
from zos.gridtypes.gojson import Timestamp, Uint32, Uint64, decode_model, parse_json
from zos.gridtypes.workload import Workload

if TYPE_CHECKING:
    from zos.identity import Identity


class SignatureRequest(GoModel):
    twin_id: Uint32 = 0
    required: bool = False
    weight: Uint64 = 0

    def challenge(self) -> str:
        return f"{self.twin_id}{go_bool(self.required)}{self.weight}"


class Signature(GoModel):
    twin_id: Uint32 = 0
    signature: str = ""  # hex
    signature_type: str = ""  # "ed25519" or "sr25519"


class SignatureRequirement(GoModel):
    requests: list[SignatureRequest] = Field(default_factory=list)
    weight_required: Uint64 = 0
    signatures: list[Signature] = Field(default_factory=list)
    signature_style: str = ""  # "" or "polka-wallet"

    def challenge(self) -> str:
        return (
            "".join(r.challenge() for r in self.requests)
            + str(self.weight_required)
            + self.signature_style
        )

    def signature_for(self, twin_id: int) -> Signature | None:
        """The first signature of that twin (as zos picks it)."""
        return next((s for s in self.signatures if s.twin_id == twin_id), None)


class Deployment(GoModel):
    version: Uint32 = 0
    twin_id: Uint32 = 0
    contract_id: Uint64 = 0
    metadata: str = ""
    description: str = ""
    expiration: Timestamp = 0
    signature_requirement: SignatureRequirement = Field(default_factory=SignatureRequirement)
    workloads: list[Workload] = Field(default_factory=list)

    # --- JSON ---------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: bytes | bytearray | str) -> Deployment:
        """Read a deployment as zos does (Go's encoding/json rules); GridTypeError if not."""
        return decode_model(cls, parse_json(data, "deployment"), "")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Deployment:
        return decode_model(cls, raw, "")

    # to_json(indent=None) and to_dict() come from GoModel.

    # --- challenge and hash ---------------------------------------------------------------

    def challenge(self) -> str:
        """The text whose MD5 is the deployment hash (contract_id is not part of it)."""
        return (
            f"{self.version}{self.twin_id}{self.metadata}{self.description}{self.expiration}"
            + "".join(wl.challenge() for wl in self.workloads)
            + self.signature_requirement.challenge()
        )

    def hash_bytes(self) -> bytes:
        """MD5 of the UTF-8 challenge: the 16 bytes that are signed."""
        return hashlib.md5(self.challenge().encode("utf-8")).digest()

    def hash_hex(self) -> str:
        """The lowercase hex hash, as the contract on the registry stores it."""
        return self.hash_bytes().hex()

    # --- signatures -----------------------------------------------------------------------

    def sign(
        self,
        twin_id: int,
        identity: Identity,
        style: str | None = None,
        key_type: str = "ed25519",
    ) -> Signature:
        """Add (or replace) `twin_id`'s signature. `style` None keeps the deployment's
        signature_style; "" or "polka-wallet" sets it first (it is part of the hash)."""
        from zos.gridtypes.signatures import sign_deployment

        return sign_deployment(self, twin_id, identity, style=style, key_type=key_type)

    def verify(self, keys: Mapping[int, bytes]) -> None:
        """Check the signature requirement (twin id → public key); GridTypeError if not met."""
        from zos.gridtypes.signatures import verify_signatures

        verify_signatures(self, keys)

    # --- helpers --------------------------------------------------------------------------

    def validate_deployment(self) -> None:
        from zos.gridtypes.validation import validate

        validate(self)

    def capacity(self, include_deleted: bool = False) -> Capacity:
        from zos.gridtypes.capacity import capacity

        return capacity(self, include_deleted=include_deleted)

    def get(self, name: str) -> Workload:
        for wl in self.workloads:
            if wl.name == name:
                return wl
        raise GridTypeError(f"no workload named '{name}' in the deployment", workload=name)

    def by_type(self, *types: str) -> list[Workload]:
        return [wl for wl in self.workloads if wl.type in types]

    def workload_id(self, name: str) -> str:
        from zos.gridtypes.names import workload_id

        return workload_id(self.twin_id, self.contract_id, name)

    def copy_deep(self) -> Deployment:
        """An independent copy (through JSON, so it is exactly what another party reads)."""
        return Deployment.from_dict(self.to_dict())
