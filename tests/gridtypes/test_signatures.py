"""The multi-signature rules of `verify_signatures` and `sign_deployment`, one rule per
test, each on a deployment that breaks only that rule (so no other check refuses it
first). Verification here runs without validation, as `zos deployment verify` does."""

from __future__ import annotations

import pytest

from zos.gridtypes import Deployment, GridTypeError, verify_signatures
from zos.gridtypes.signatures import signing_message
from zos.identity import Identity, verify_sr25519

OWNER, FRIEND, THIRD = (Identity(bytes([i]) * 32) for i in (7, 8, 9))
KEYS = {1: OWNER.public_key, 2: FRIEND.public_key, 3: THIRD.public_key}


def deployment(requests: list[tuple[int, bool, int]], weight_required: int) -> Deployment:
    """Twin 1's deployment with the given (twin, required, weight) signature requests."""
    return Deployment.from_dict(
        {
            "version": 0,
            "twin_id": 1,
            "workloads": [{"version": 0, "name": "d", "type": "zmount", "data": {"size": 1}}],
            "signature_requirement": {
                "requests": [{"twin_id": t, "required": r, "weight": w} for t, r, w in requests],
                "weight_required": weight_required,
            },
        }
    )


def signed(requests: list[tuple[int, bool, int]], weight_required: int, *twins: int) -> Deployment:
    """`deployment(...)` signed by each of `twins` (1 or 2) with its own key."""
    d = deployment(requests, weight_required)
    for twin in twins:
        d.sign(twin, {1: OWNER, 2: FRIEND}[twin])
    return d


def refused(d: Deployment, message: str, keys: dict[int, bytes] = KEYS) -> None:
    with pytest.raises(GridTypeError) as e:
        verify_signatures(d, keys)
    assert str(e.value) == message


def test_all_requested_signatures_verify() -> None:
    d = signed([(1, True, 1), (2, False, 2)], 3, 1, 2)
    verify_signatures(d, KEYS)
    d.verify(KEYS)


def test_owner_must_be_among_the_requests() -> None:
    """Only twin 2 is asked (and signs, with weight enough): the owner's consent is
    missing, so it is not valid, even without validation."""
    refused(signed([(2, True, 1)], 1, 2), "owner twin 1 must be among the signature requests")


def test_owner_signature_is_required_whatever_its_request_says() -> None:
    refused(signed([(1, False, 1), (2, False, 1)], 1, 2), "missing required signature of twin 1")


def test_every_requested_signature_must_be_there() -> None:
    refused(signed([(1, True, 1), (2, False, 1)], 1, 1), "missing signature of twin 2")
    refused(signed([(1, True, 1), (2, True, 1)], 1, 1), "missing required signature of twin 2")


def test_weight_must_reach_what_is_required() -> None:
    verify_signatures(signed([(1, True, 2), (2, False, 3)], 5, 1, 2), KEYS)  # exactly enough
    refused(
        signed([(1, True, 2), (2, False, 3)], 6, 1, 2),
        "signature weight 5 does not reach the required 6",
    )


def test_a_signature_by_another_key_is_refused() -> None:
    d = deployment([(1, True, 1), (2, False, 1)], 2)
    d.sign(1, OWNER)
    d.sign(2, THIRD)  # twin 2's signature, made with twin 3's key
    refused(d, "signature of twin 2 (ed25519) does not verify against its public key")


def test_signatures_of_twins_not_asked_add_nothing() -> None:
    refused(signed([(1, True, 1)], 2, 1, 2), "signature weight 1 does not reach the required 2")


def test_the_keys_and_signatures_themselves() -> None:
    d = deployment([(1, True, 1)], 1)
    sig = d.sign(1, OWNER)
    refused(d, "no public key known for twin 1", {2: FRIEND.public_key})
    refused(d, "public key of twin 1 must be 32 bytes, got 31", {1: OWNER.public_key[:31]})
    sig.signature = "0x" + sig.signature  # as the polkadot tools write it
    verify_signatures(d, KEYS)
    sig.signature = sig.signature[2:-2]
    refused(d, "signature of twin 1: must be 64 bytes, got 63")
    sig.signature = "zz" * 64
    refused(d, "signature of twin 1: not hex")
    d.sign(1, OWNER)
    d.signature_requirement.signatures[0].signature_type = "rsa"
    refused(d, "signature of twin 1: unknown signature_type 'rsa'")
    d.signature_requirement.signatures[0].signature_type = ""  # zos reads empty as ed25519
    verify_signatures(d, KEYS)


def test_sr25519_signatures_verify_with_the_sr25519_key() -> None:
    d = deployment([(1, True, 1)], 1)
    d.sign(1, OWNER, key_type="sr25519")
    verify_signatures(d, {1: OWNER.sr25519_public_key})
    refused(d, "signature of twin 1 (sr25519) does not verify against its public key")
    d.signature_requirement.signatures[0].signature_type = "ed25519"
    refused(
        d,
        "signature of twin 1 (ed25519) does not verify against its public key",
        {1: OWNER.sr25519_public_key},
    )


def test_the_style_decides_what_is_signed() -> None:
    digest = bytes(range(16))
    assert signing_message(digest, "") == digest
    assert (
        signing_message(digest, "polka-wallet") == b"<Bytes>" + digest.hex().encode() + b"</Bytes>"
    )
    with pytest.raises(GridTypeError, match="unknown style 'other'"):
        signing_message(digest, "other")
    d = deployment([(1, True, 1)], 1)
    sig = d.sign(1, OWNER, style="polka-wallet", key_type="sr25519")
    assert d.signature_requirement.signature_style == "polka-wallet"
    message = b"<Bytes>" + d.hash_bytes().hex().encode() + b"</Bytes>"
    assert verify_sr25519(OWNER.sr25519_public_key, message, bytes.fromhex(sig.signature))
    verify_signatures(d, {1: OWNER.sr25519_public_key})


def test_signing_again_replaces_the_twins_signature() -> None:
    d = deployment([(1, True, 1), (2, False, 1)], 2)
    d.sign(1, FRIEND)
    d.sign(2, FRIEND)
    d.sign(1, OWNER)
    assert [s.twin_id for s in d.signature_requirement.signatures] == [1, 2]
    verify_signatures(d, KEYS)


def test_sign_refuses_what_would_break_the_deployment() -> None:
    d = deployment([(1, True, 1), (2, False, 1)], 2)
    d.sign(2, FRIEND)
    before = d.to_dict()
    with pytest.raises(GridTypeError, match="would invalidate the signatures of twins 2"):
        d.sign(1, OWNER, style="polka-wallet")
    with pytest.raises(GridTypeError, match="unknown style 'bad'"):
        d.sign(1, OWNER, style="bad")
    with pytest.raises(GridTypeError, match="unknown signature type 'rsa'"):
        d.sign(1, OWNER, key_type="rsa")
    for twin in (0, 2**32):
        with pytest.raises(GridTypeError, match="twin id must be a uint32 above 0"):
            d.sign(twin, OWNER)
    assert d.to_dict() == before
    d.sign(2, FRIEND, style="polka-wallet")  # only its own signature to redo
    assert d.signature_requirement.signature_style == "polka-wallet"
    d.sign(2**32 - 1, OWNER)  # the largest twin id is fine
