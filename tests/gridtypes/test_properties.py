"""Property tests: JSON round trips, hash sensitivity, signature rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from gridtypes_strategies import deployments
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zos.gridtypes import Deployment, GridTypeError, validate, verify_signatures
from zos.identity import Identity

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDENTITIES = [Identity(bytes([i]) * 32) for i in range(1, 5)]

# Leaves of the JSON that are not part of the challenge.
NOT_HASHED = ("contract_id", "corex", "signatures", "result", "__type", "type")


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def put(doc: Any, path: tuple, value: Any) -> None:
    get(doc, path[:-1])[path[-1]] = value


def changed(path: tuple, value: Any) -> Any:
    """A different value of the same kind that still decodes."""
    key = next((k for k in reversed(path) if isinstance(k, str)), "")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1 if value > 0 else value + 1
    if value is None:
        return "x"
    if key in ("ip_range", "subnet", "allowed_ips") or (key == "ip" and "/" in value):
        return "10.99.0.0/16" if value != "10.99.0.0/16" else "10.98.0.0/16"
    if key == "ip":
        return "10.99.0.7" if value != "10.99.0.7" else "10.98.0.7"
    if key in ("hex_key", "hex_seed", "key"):
        return ("1" if value[:1] == "0" else "0") + value[1:] if value else "00"
    return value + "x"


@SETTINGS
@given(deployments())
def test_generated_deployments_are_valid(d):
    validate(d)


@SETTINGS
@given(deployments())
def test_json_round_trip_keeps_hash(d):
    text = d.to_json()
    again = Deployment.from_json(text)
    assert again.hash_hex() == d.hash_hex()
    assert again.challenge() == d.challenge()
    assert again.to_json() == text
    assert Deployment.from_json(d.to_json(indent=2).encode()).hash_hex() == d.hash_hex()


@SETTINGS
@given(deployments(), st.data())
def test_changing_a_hashed_field_changes_the_hash(d, data):
    doc = d.to_dict()
    hashed = [p for p in leaves(doc) if not any(k in NOT_HASHED for k in p if isinstance(k, str))]
    path = data.draw(st.sampled_from(hashed))
    mutated = copy.deepcopy(doc)
    put(mutated, path, changed(path, get(doc, path)))
    assume(mutated != doc)
    assert Deployment.from_dict(mutated).hash_hex() != d.hash_hex(), path


@SETTINGS
@given(deployments(), st.data())
def test_changing_an_unhashed_field_keeps_the_hash(d, data):
    doc = d.to_dict()
    doc["contract_id"] = data.draw(st.integers(0, 2**64 - 1))
    for wl in doc["workloads"]:
        wl["result"] = {"created": 5, "state": "ok", "message": "m", "data": {"a": [1]}}
        if "corex" in wl["data"]:
            wl["data"]["corex"] = not wl["data"]["corex"]
        wl["data"]["__type"] = wl["type"]
    assert Deployment.from_dict(doc).hash_hex() == d.hash_hex()


def sign_all(d: Deployment, key_type: str = "ed25519") -> dict[int, bytes]:
    keys = {}
    for i, req in enumerate(d.signature_requirement.requests):
        identity = IDENTITIES[i]
        d.sign(req.twin_id, identity, key_type=key_type)
        keys[req.twin_id] = (
            identity.sr25519_public_key if key_type == "sr25519" else identity.public_key
        )
    return keys


@SETTINGS
@given(deployments(max_simple=2), st.sampled_from(["ed25519", "sr25519"]))
def test_all_signed_verifies_after_round_trip(d, key_type):
    keys = sign_all(d, key_type)
    verify_signatures(d, keys)
    verify_signatures(Deployment.from_json(d.to_json()), keys)


@SETTINGS
@given(deployments(max_simple=2), st.data())
def test_signature_from_another_key_is_refused(d, data):
    keys = sign_all(d)
    twin = data.draw(st.sampled_from(sorted(keys)))
    keys[twin] = IDENTITIES[3].public_key
    with pytest.raises(GridTypeError, match=f"twin {twin} .*does not verify"):
        verify_signatures(d, keys)


@SETTINGS
@given(deployments(max_simple=2), st.data())
def test_missing_signature_is_refused(d, data):
    keys = sign_all(d)
    sigs = d.signature_requirement.signatures
    dropped = sigs.pop(data.draw(st.integers(0, len(sigs) - 1)))
    with pytest.raises(GridTypeError, match=f"missing .*signature of twin {dropped.twin_id}"):
        verify_signatures(d, keys)


@SETTINGS
@given(deployments(max_simple=2), st.integers(1, 1000))
def test_too_little_weight_is_refused(d, extra):
    req = d.signature_requirement
    total = sum(r.weight for r in req.requests)
    req.weight_required = total + extra  # set before signing: it is part of the hash
    keys = sign_all(d)
    with pytest.raises(GridTypeError, match="does not reach"):
        verify_signatures(d, keys)
    req.weight_required = total
    keys = sign_all(d)
    verify_signatures(d, keys)


@SETTINGS
@given(deployments(max_simple=2))
def test_signature_of_a_changed_deployment_is_refused(d):
    keys = sign_all(d)
    d.description += "!"
    with pytest.raises(GridTypeError, match="does not verify"):
        verify_signatures(d, keys)


@SETTINGS
@given(deployments(max_simple=1))
def test_style_is_part_of_what_is_signed(d):
    keys = sign_all(d)
    doc = json.loads(d.to_json())
    req = doc["signature_requirement"]
    req["signature_style"] = "" if req["signature_style"] else "polka-wallet"
    with pytest.raises(GridTypeError):
        verify_signatures(Deployment.from_dict(doc), keys)
