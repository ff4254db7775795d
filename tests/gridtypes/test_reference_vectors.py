"""The test vectors of reference/gridtypes.md."""

from __future__ import annotations

from zos.gridtypes import (
    Deployment,
    SignatureRequest,
    SignatureRequirement,
    Workload,
    ZMount,
    verify_signatures,
)
from zos.identity import Identity

SEED = b"12345678901234567890123456789012"


def test_request_challenges():
    req = SignatureRequirement(
        requests=[
            SignatureRequest(twin_id=1, required=True, weight=5),
            SignatureRequest(twin_id=2, required=False, weight=10),
        ],
        weight_required=15,
    )
    assert req.challenge() == "1true52false1015"
    assert SignatureRequest(twin_id=123, required=True, weight=5).challenge() == "123true5"


def test_deployment_without_workloads():
    d = Deployment(
        version=1,
        twin_id=123,
        metadata="test_metadata",
        description="test_description",
        expiration=1000000000,
        signature_requirement=SignatureRequirement(weight_required=10),
    )
    assert d.challenge() == "1123test_metadatatest_description100000000010"
    assert d.hash_hex() == "ded9112ad0cc33c9e19d01b0ab8ed23d"
    assert d.hash_bytes() == bytes.fromhex("ded9112ad0cc33c9e19d01b0ab8ed23d")


def test_ed25519_public_key_from_seed():
    assert Identity(SEED).public_hex == (
        "2f8c6129d816cf51c374bc7f08c3e63ed156cf78aefb4a6550d97b87997977ee"
    )


def zmount_deployment() -> Deployment:
    return Deployment(
        version=0,
        twin_id=1,
        workloads=[Workload(version=0, name="disk", type="zmount", data=ZMount(size=10737418240))],
        signature_requirement=SignatureRequirement(
            requests=[SignatureRequest(twin_id=1, required=True, weight=1)], weight_required=1
        ),
    )


def test_zmount_deployment_challenge_and_hash():
    d = zmount_deployment()
    assert d.challenge() == "0100diskzmount107374182401true11"
    assert d.hash_hex() == "c414df26f82af18c460d9f34fd4b64de"


def test_zmount_deployment_from_json_and_signed():
    text = (
        '{"version":0,"twin_id":1,"workloads":[{"version":0,"name":"disk","type":"zmount",'
        '"data":{"size":10737418240}}],"signature_requirement":{"requests":'
        '[{"twin_id":1,"required":true,"weight":1}],"weight_required":1}}'
    )
    d = Deployment.from_json(text)
    assert d.hash_hex() == "c414df26f82af18c460d9f34fd4b64de"
    identity = Identity(SEED)
    d.sign(1, identity)
    verify_signatures(d, {1: identity.public_key})
    again = Deployment.from_json(d.to_json())
    assert again.hash_hex() == "c414df26f82af18c460d9f34fd4b64de"
    verify_signatures(again, {1: identity.public_key})
