"""`zos deployment hash | sign | verify`, run as the user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zos.gridtypes import Deployment
from zos.identity import Identity, new_mnemonic

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ts_client.json").read_text())
MNEMONIC = VECTORS["twins"]["41"]["mnemonic"]
OWNER_HEX = VECTORS["twins"]["41"]["ed25519"]

DEPLOYMENT = {
    "version": 0,
    "twin_id": 1,
    "workloads": [{"version": 0, "name": "disk", "type": "zmount", "data": {"size": 10737418240}}],
    "signature_requirement": {
        "requests": [{"twin_id": 1, "required": True, "weight": 1}],
        "weight_required": 1,
    },
}


def zos(
    *args: str, stdin: bytes | str = b"", env: dict | None = None
) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    full_env = {**os.environ, "HOME": "/nonexistent", "ZOS_MNEMONIC": ""}
    full_env.pop("ZOS_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "zos.cli", *args],
        input=data,
        capture_output=True,
        env=full_env,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess, *parts: str) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert result.stdout == b""
    for part in parts:
        assert part in err, (part, err)
    return err


def test_hash_and_challenge(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(DEPLOYMENT))
    assert ok(zos("deployment", "hash", str(path))) == "c414df26f82af18c460d9f34fd4b64de\n"
    out = ok(zos("deployment", "hash", "--challenge", "-", stdin=json.dumps(DEPLOYMENT)))
    assert out == "0100diskzmount107374182401true11\n"


def test_sign_then_verify(tmp_path):
    doc = {**DEPLOYMENT, "twin_id": 41}
    doc["signature_requirement"] = {
        "requests": [{"twin_id": 41, "required": True, "weight": 1}],
        "weight_required": 1,
    }
    signed = ok(zos("deployment", "sign", "-", "--mnemonic", MNEMONIC, stdin=json.dumps(doc)))
    d = Deployment.from_json(signed)
    assert [s.twin_id for s in d.signature_requirement.signatures] == [41]
    assert d.hash_hex() == Deployment.from_dict(doc).hash_hex()
    path = tmp_path / "signed.json"
    path.write_text(signed)
    assert ok(zos("deployment", "verify", str(path), "--twin-key", f"41={OWNER_HEX}")) == "valid\n"
    assert (
        ok(
            zos(
                "deployment",
                "verify",
                "-",
                "--twin-key",
                f"41={OWNER_HEX}",
                "--validate",
                stdin=signed,
            )
        )
        == "valid\n"
    )
    other = Identity.from_mnemonic(new_mnemonic()).public_hex
    failed(zos("deployment", "verify", str(path), "--twin-key", f"41={other}"), "does not verify")
    failed(zos("deployment", "verify", str(path)), "no public key known for twin 41")
    unsigned = json.dumps(doc)
    failed(
        zos("deployment", "verify", "-", "--twin-key", f"41={OWNER_HEX}", stdin=unsigned),
        "missing required signature of twin 41",
    )


def test_sign_styles_and_types():
    doc = {**DEPLOYMENT, "twin_id": 41}
    doc["signature_requirement"] = {
        "requests": [{"twin_id": 41, "weight": 1}],
        "weight_required": 1,
    }
    signed = ok(
        zos(
            "deployment",
            "sign",
            "-",
            "--style",
            "polka-wallet",
            "--type",
            "sr25519",
            stdin=json.dumps(doc),
            env={"ZOS_MNEMONIC": MNEMONIC},
        )
    )
    d = Deployment.from_json(signed)
    assert d.signature_requirement.signature_style == "polka-wallet"
    assert d.signature_requirement.signatures[0].signature_type == "sr25519"
    sr = VECTORS["twins"]["41"]["sr25519"]
    assert ok(zos("deployment", "verify", "-", "--twin-key", f"41={sr}", stdin=signed)) == "valid\n"
    failed(
        zos("deployment", "verify", "-", "--twin-key", f"41={OWNER_HEX}", stdin=signed),
        "does not verify",
    )


def test_sign_for_another_twin():
    doc = {**DEPLOYMENT}
    doc["signature_requirement"] = {
        "requests": [{"twin_id": 1, "weight": 1}, {"twin_id": 41, "weight": 1}],
        "weight_required": 2,
    }
    first = ok(zos("deployment", "sign", "-", "--mnemonic", new_mnemonic(), stdin=json.dumps(doc)))
    both = ok(zos("deployment", "sign", "-", "--twin", "41", "--mnemonic", MNEMONIC, stdin=first))
    twins = [s.twin_id for s in Deployment.from_json(both).signature_requirement.signatures]
    assert twins == [1, 41]


def test_verify_without_validation_wants_the_owners_consent():
    """Twin 1's deployment that asks only twin 41 (who signs it) is not valid, whether
    or not the structural rules (--validate) are checked too."""
    doc = {**DEPLOYMENT}
    doc["signature_requirement"] = {
        "requests": [{"twin_id": 41, "required": True, "weight": 1}],
        "weight_required": 1,
    }
    signed = ok(
        zos(
            "deployment", "sign", "-", "--twin", "41", "--mnemonic", MNEMONIC, stdin=json.dumps(doc)
        )
    )
    verify = ("deployment", "verify", "-", "--twin-key", f"41={OWNER_HEX}")
    failed(zos(*verify, stdin=signed), "owner twin 1 must be among the signature requests")
    failed(zos(*verify, "--validate", stdin=signed), "must include the owner twin 1")


HOSTILE = [
    (b'{"version": 1', "invalid JSON"),
    (b"", "invalid JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"version": "1"}', "version: expected a uint32 integer"),
    (b'{"version": 4294967296}', "out of range for uint32"),
    (b'{"contract_id": 18446744073709551616}', "out of range for uint64"),
    (b'{"expiration": -9223372036854775809}', "out of range for int64"),
    (b'{"workloads": [{"name": "d", "type": "zmount", "data": {"size": -1}}]}', "data.size"),
    (b'{"workloads": [{"name": "d", "type": "zmount", "data": []}]}', "expected an object"),
    (b'{"workloads": [{"name": "d", "type": "alien", "data": {}}]}', "unknown workload type"),
    (b'{"metadata": "\xff"}', "not valid UTF-8"),
    (b'{"metadata": "' + b"x" * (10 * 1024 * 1024) + b'"}', "larger than"),
    (b"[" * 200_000, "invalid JSON"),
    (b'{"version": 1e400}', "expected a uint32 integer"),
    (b"\x00\x01\x02", "invalid JSON"),
]


@pytest.mark.parametrize(("data", "part"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_input_gives_one_line_errors(data, part):
    failed(zos("deployment", "hash", "-", stdin=data), part)


@pytest.mark.parametrize("data", [HOSTILE[0][0], HOSTILE[10][0], HOSTILE[4][0]])
def test_hostile_input_to_sign_and_verify(data):
    failed(zos("deployment", "sign", "-", "--mnemonic", MNEMONIC, stdin=data))
    failed(zos("deployment", "verify", "-", "--twin-key", f"1={OWNER_HEX}", stdin=data))


def test_bad_arguments(tmp_path):
    failed(zos("deployment", "hash", str(tmp_path / "missing.json")), "No such file")
    failed(zos("deployment", "hash", str(tmp_path)), "directory")
    doc = json.dumps(DEPLOYMENT)
    failed(zos("deployment", "sign", "-", "--mnemonic", "not a mnemonic", stdin=doc), "mnemonic")
    failed(zos("deployment", "sign", "-", stdin=doc), "no key")
    failed(zos("deployment", "sign", "-", "--mnemonic", MNEMONIC, "--twin", "0", stdin=doc), "twin")
    failed(
        zos("deployment", "sign", "-", "--mnemonic", MNEMONIC, "--twin", str(2**32), stdin=doc),
        "twin",
    )
    failed(zos("deployment", "verify", "-", "--twin-key", "1=zz", stdin=doc), "not hex")
    failed(zos("deployment", "verify", "-", "--twin-key", "abc", stdin=doc), "TWIN=PUBHEX")
    failed(zos("deployment", "verify", "-", "--twin-key", "1=abcd", stdin=doc), "32 bytes")
