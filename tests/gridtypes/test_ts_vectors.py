"""Deployments built and signed by the official TypeScript client verify here unchanged.

The vectors in vectors/ts_client.json were produced by vectors/generate_ts_vectors.mjs
with @threefold/grid_client (see that script); these tests need no npm.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zos.gridtypes import (
    WORKLOAD_TYPES,
    Deployment,
    GridTypeError,
    capacity,
    validate,
    verify_signatures,
)
from zos.identity import Identity

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ts_client.json").read_text())
CASES = VECTORS["vectors"]


def keys_for(key_type: str) -> dict[int, bytes]:
    return {int(twin): bytes.fromhex(info[key_type]) for twin, info in VECTORS["twins"].items()}


def test_generated_by_the_official_client():
    assert VECTORS["package"].startswith("@threefold/grid_client@")
    assert len(CASES) >= 13


@pytest.mark.parametrize("twin", sorted(VECTORS["twins"]))
def test_twin_keys_from_mnemonic_match(twin):
    info = VECTORS["twins"][twin]
    identity = Identity.from_mnemonic(info["mnemonic"])
    assert identity.public_hex == info["ed25519"]
    assert identity.sr25519_public_key.hex() == info["sr25519"]


def test_every_workload_type_is_covered():
    covered = {t for case in CASES for t in case["types"]}
    # The client refuses to build the deprecated ipv4 type; see test_ipv4_by_hand.
    assert covered == set(WORKLOAD_TYPES) - {"ipv4"}
    single = {case["types"][0] for case in CASES if len(case["types"]) == 1}
    assert single >= {"zmount", "volume", "zdb", "ip", "network", "network-light"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_challenge_hash_and_signatures(case):
    d = Deployment.from_json(case["deployment_json"])
    assert d.challenge() == case["challenge"]
    assert d.hash_hex() == case["hash"]
    verify_signatures(d, keys_for(case["key_type"]))
    validate(d)
    assert capacity(d) == sum((wl.capacity() for wl in d.workloads), start=capacity(Deployment()))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_round_trip_keeps_hash_and_signatures(case):
    d = Deployment.from_json(case["deployment_json"])
    again = Deployment.from_json(d.to_json())
    assert again.challenge() == case["challenge"]
    assert again.to_dict() == d.to_dict()
    verify_signatures(again, keys_for(case["key_type"]))
    # bytes as well as str
    assert Deployment.from_json(case["deployment_json"].encode()).hash_hex() == case["hash"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["key_type"] == "ed25519"], ids=lambda c: c["name"]
)
def test_our_ed25519_signatures_equal_theirs(case):
    d = Deployment.from_json(case["deployment_json"])
    theirs = {s.twin_id: s.signature for s in d.signature_requirement.signatures}
    d.signature_requirement.signatures = []
    for twin in case["signers"]:
        d.sign(twin, Identity.from_mnemonic(VECTORS["twins"][str(twin)]["mnemonic"]))
    ours = {s.twin_id: s.signature for s in d.signature_requirement.signatures}
    assert ours == theirs


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_tampering_is_refused(case):
    raw = json.loads(case["deployment_json"])
    raw["description"] += "!"
    d = Deployment.from_json(json.dumps(raw))
    with pytest.raises(GridTypeError, match="does not verify"):
        verify_signatures(d, keys_for(case["key_type"]))


def test_wrong_key_type_is_refused():
    case = next(c for c in CASES if c["key_type"] == "sr25519")
    d = Deployment.from_json(case["deployment_json"])
    with pytest.raises(GridTypeError, match="does not verify"):
        verify_signatures(d, keys_for("ed25519"))


def test_client_extras_are_ignored_and_mycelium_key_case():
    case = next(c for c in CASES if c["name"] == "zmachine")
    raw = json.loads(case["deployment_json"])
    vm = next(w for w in raw["workloads"] if w["type"] == "zmachine")
    assert vm["data"]["__type"] == "zmachine"
    assert "network" in vm["data"]["network"]["mycelium"]
    d = Deployment.from_json(case["deployment_json"])
    # zos writes the mycelium network field as `Network`
    out = next(w for w in d.to_dict()["workloads"] if w["type"] == "zmachine")
    assert out["data"]["network"]["mycelium"] == {"Network": "net1", "hex_seed": "a1b2c3d4e5f6"}
    assert "__type" not in out["data"]


def test_ipv4_by_hand():
    """The deprecated ipv4 type, in the client's format (data carries only `__type`)."""
    owner = VECTORS["twins"]["41"]
    text = json.dumps(
        {
            "version": 0,
            "twin_id": 41,
            "expiration": 1700000000,
            "metadata": "",
            "description": "",
            "workloads": [
                {
                    "version": 0,
                    "name": "ipv4old",
                    "type": "ipv4",
                    "data": {"__type": "ipv4"},
                    "metadata": "",
                    "description": "",
                }
            ],
            "signature_requirement": {
                "requests": [{"twin_id": 41, "required": False, "weight": 1}],
                "weight_required": 1,
                "signatures": [],
            },
        }
    )
    d = Deployment.from_json(text)
    assert d.challenge() == "04117000000000ipv4oldipv441false11"
    assert capacity(d).ipv4u == 1
    d.sign(41, Identity.from_mnemonic(owner["mnemonic"]))
    verify_signatures(Deployment.from_json(d.to_json()), keys_for("ed25519"))
