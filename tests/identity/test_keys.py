import json
import os
import stat
import subprocess
import sys

import pytest

from zos.identity import (
    Identity,
    KeyError_,
    SealError,
    box_open,
    box_seal,
    load_key_file,
    new_mnemonic,
    open_sealed,
    seal,
    shared_key,
    verify_ed25519,
    verify_sr25519,
    write_key_file,
)

DEV_PHRASE = "bottom drive obey lake curtain smoke basket hold race lonely fit walk"


def test_reference_seed_vector() -> None:
    identity = Identity(b"12345678901234567890123456789012")
    assert identity.public_hex == "2f8c6129d816cf51c374bc7f08c3e63ed156cf78aefb4a6550d97b87997977ee"


def test_mnemonic_derivation_matches_substrate() -> None:
    # Substrate's well-known development phrase: its mini secret and root sr25519 key
    # are published by `subkey inspect`; ThreeFold clients derive the same way.
    identity = Identity.from_mnemonic(DEV_PHRASE)
    assert identity.seed.hex() == "fac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e"
    assert (
        identity.sr25519_public_key.hex()
        == "46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a"
    )
    assert identity.public_hex == "345071da55e5dccefaaa440339415ef9f2663338a38f7da0df21be5ab4e055ef"


def test_bad_mnemonic_is_refused() -> None:
    with pytest.raises(KeyError_, match="mnemonic"):
        Identity.from_mnemonic(
            "bottom drive obey lake curtain smoke basket hold race lonely fit fit"
        )


def test_signatures_verify_and_refuse_other_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"message")
    assert verify_ed25519(a.public_key, b"message", sig)
    assert not verify_ed25519(b.public_key, b"message", sig)
    assert not verify_ed25519(a.public_key, b"messagE", sig)
    assert not verify_ed25519(a.public_key, b"message", sig[:10])
    sr = a.sign_sr25519(b"message")
    assert verify_sr25519(a.sr25519_public_key, b"message", sr)
    assert not verify_sr25519(b.sr25519_public_key, b"message", sr)


def test_sealing_opens_only_for_recipient() -> None:
    a, b = Identity.generate(), Identity.generate()
    box = seal(a.public_key, b"secret")
    assert open_sealed(a, box) == b"secret"
    with pytest.raises(SealError):
        open_sealed(b, box)
    with pytest.raises(SealError):
        open_sealed(a, box[:-1] + bytes([box[-1] ^ 1]))


def test_a_box_opens_only_between_the_two_twins() -> None:
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    ab = shared_key(a.x25519_private, b.public_key)
    assert shared_key(b.x25519_private, a.public_key) == ab  # both twins derive it
    box = box_seal(ab, b"secret")
    assert b"secret" not in box
    assert box_open(ab, box) == b"secret"
    assert box_seal(ab, b"secret") != box  # a fresh nonce every time
    for other in (
        shared_key(c.x25519_private, a.public_key),
        shared_key(c.x25519_private, b.public_key),
    ):
        with pytest.raises(SealError):
            box_open(other, box)  # a third twin opens nothing, whichever peer it pairs with
    with pytest.raises(SealError):
        box_open(ab, box[:-1] + bytes([box[-1] ^ 1]))
    with pytest.raises(SealError):
        box_open(ab, box[:20])
    with pytest.raises(SealError, match="not a usable"):
        shared_key(a.x25519_private, bytes([1]) + bytes(31))  # the identity point


def test_key_file_mode_and_round_trip(tmp_path) -> None:
    mnemonic = new_mnemonic()
    identity = Identity.from_mnemonic(mnemonic)
    path = tmp_path / "k" / "key.json"
    write_key_file(path, identity, mnemonic)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key_file(path) == identity
    path.write_text("not json")
    with pytest.raises(KeyError_, match="not a zos key file"):
        load_key_file(path)


def _zos(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zos.cli", *args], capture_output=True, text=True, **kw
    )


def test_cli_key_new_and_show(tmp_path) -> None:
    path = tmp_path / "key.json"
    new = _zos("key", "new", "--key-file", str(path), "--json")
    assert new.returncode == 0, new.stderr
    created = json.loads(new.stdout)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    show = _zos("key", "show", "--key-file", str(path))
    assert show.stdout.strip() == created["public_key"]
    by_mnemonic = _zos("key", "show", "--mnemonic", created["mnemonic"], "--json")
    assert json.loads(by_mnemonic.stdout)["public_key"] == created["public_key"]
    again = _zos("key", "new", "--key-file", str(path))
    assert again.returncode == 1 and "exists" in again.stderr


def test_cli_bad_key_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    r = _zos("key", "show", "--key-file", str(bad))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
