"""Signing a deployment and checking its multi-signature requirement, as zos does.

The signed message is the 16-byte MD5 hash of the challenge; with signature_style
"polka-wallet" it is the ASCII text `<Bytes>` + hex hash + `</Bytes>`. Signatures are
ed25519 by default or sr25519 (schnorrkel, signing context "substrate").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from zos.gridtypes.errors import GridTypeError

if TYPE_CHECKING:
    from zos.gridtypes.deployment import Deployment, Signature
    from zos.identity import Identity

STYLE_DEFAULT = ""
STYLE_POLKA = "polka-wallet"
SIGNATURE_STYLES = (STYLE_DEFAULT, STYLE_POLKA)
KEY_TYPES = ("ed25519", "sr25519")


def signing_message(hash_bytes: bytes, style: str) -> bytes:
    """What is actually signed for a deployment hash in the given style."""
    if style == STYLE_POLKA:
        return b"<Bytes>" + hash_bytes.hex().encode() + b"</Bytes>"
    if style == STYLE_DEFAULT:
        return hash_bytes
    raise GridTypeError(
        f"signature_requirement.signature_style: unknown style {style!r} "
        f"(expected '' or '{STYLE_POLKA}')",
        field="signature_requirement.signature_style",
    )


def sign_deployment(
    deployment: Deployment,
    twin_id: int,
    identity: Identity,
    style: str | None = None,
    key_type: str = "ed25519",
) -> Signature:
    """Sign for `twin_id`, replacing an earlier signature of that twin. Returns the signature."""
    from zos.gridtypes.deployment import Signature

    if key_type not in KEY_TYPES:
        raise GridTypeError(f"unknown signature type {key_type!r} (expected ed25519 or sr25519)")
    if not isinstance(twin_id, int) or not 0 < twin_id < 2**32:
        raise GridTypeError(f"twin id must be a uint32 above 0, got {twin_id!r}")
    req = deployment.signature_requirement
    if style is not None and style != req.signature_style:
        signing_message(b"", style)  # refuse an unknown style before changing anything
        others = sorted({s.twin_id for s in req.signatures if s.twin_id != twin_id})
        if others:
            raise GridTypeError(
                f"changing signature_style to {style!r} would invalidate the signatures of "
                f"twins {', '.join(map(str, others))}"
            )
        req.signature_style = style
    message = signing_message(deployment.hash_bytes(), req.signature_style)
    raw = identity.sign_sr25519(message) if key_type == "sr25519" else identity.sign(message)
    signature = Signature(twin_id=twin_id, signature=raw.hex(), signature_type=key_type)
    for i, existing in enumerate(req.signatures):
        if existing.twin_id == twin_id:
            req.signatures[i] = signature
            break
    else:
        req.signatures.append(signature)
    return signature


def _check_signature(message: bytes, twin: int, sig: Signature, keys: Mapping[int, bytes]) -> None:
    from zos.identity import verify_ed25519, verify_sr25519

    key = keys.get(twin)
    if key is None:
        raise GridTypeError(f"no public key known for twin {twin}")
    if len(key) != 32:
        raise GridTypeError(f"public key of twin {twin} must be 32 bytes, got {len(key)}")
    kind = sig.signature_type or "ed25519"
    if kind not in KEY_TYPES:
        raise GridTypeError(
            f"signature of twin {twin}: unknown signature_type {sig.signature_type!r}"
        )
    text = sig.signature.removeprefix("0x")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise GridTypeError(f"signature of twin {twin}: not hex") from None
    if len(raw) != 64:
        raise GridTypeError(f"signature of twin {twin}: must be 64 bytes, got {len(raw)}")
    verify = verify_sr25519 if kind == "sr25519" else verify_ed25519
    if not verify(bytes(key), message, raw):
        raise GridTypeError(
            f"signature of twin {twin} ({kind}) does not verify against its public key"
        )


def verify_signatures(deployment: Deployment, keys: Mapping[int, bytes]) -> None:
    """Check the deployment's signature requirement; GridTypeError says why it is not met.

    `keys` maps twin id to that twin's public key (ed25519, or sr25519 for sr25519
    signatures). The rules, as zos applies them: the owner twin must be among the
    requests and its signature is required whatever the request says; every listed
    request must carry a valid signature (a missing one is refused); the summed
    weight of the requests must reach weight_required.
    """
    req = deployment.signature_requirement
    message = signing_message(deployment.hash_bytes(), req.signature_style)
    if not any(r.twin_id == deployment.twin_id for r in req.requests):
        raise GridTypeError(
            f"owner twin {deployment.twin_id} must be among the signature requests",
            field="signature_requirement.requests",
        )
    weight = 0
    for request in req.requests:
        twin = request.twin_id
        sig = req.signature_for(twin)
        if sig is None:
            required = request.required or twin == deployment.twin_id
            what = "required signature" if required else "signature"
            raise GridTypeError(f"missing {what} of twin {twin}")
        _check_signature(message, twin, sig, keys)
        weight += request.weight
    if weight < req.weight_required:
        raise GridTypeError(
            f"signature weight {weight} does not reach the required {req.weight_required}"
        )
