"""The registry key a node trusts: named by its first join token, pinned in its data
directory, never changed by a later token (nor by the bus)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from zos.identity import Identity
from zos.node.agent import REGISTRY_KEY_FILE, pin_registry_key, registry_key_to_trust
from zos.registry import JoinToken


def token(registry_key: str) -> str:
    farmer = Identity.generate()
    raw = JoinToken(
        farm_id=1, node_twin=0, expires=time.time() + 60, nonce="ab" * 8, registry_key=registry_key
    )
    return raw.signed(farmer).encode()


def test_first_join_pins_the_tokens_key_and_later_tokens_must_agree(tmp_path: Path) -> None:
    first, other = Identity.generate().public_hex, Identity.generate().public_hex
    with pytest.raises(RuntimeError, match="first start needs a farm join token"):
        registry_key_to_trust(tmp_path, None)
    assert registry_key_to_trust(tmp_path, token(first)) == first
    assert not (tmp_path / REGISTRY_KEY_FILE).exists()  # pinned only once the join worked
    pin_registry_key(tmp_path, first)
    pinned = tmp_path / REGISTRY_KEY_FILE
    assert pinned.stat().st_mode & 0o777 == 0o600
    assert registry_key_to_trust(tmp_path, None) == first  # a restart needs no token
    assert registry_key_to_trust(tmp_path, token(first)) == first
    with pytest.raises(
        RuntimeError, match=r"this node trusts .* \(pinned in .* at its first join\)"
    ):
        registry_key_to_trust(tmp_path, token(other))
    pin_registry_key(tmp_path, other)  # never overwritten
    assert pinned.read_text().strip() == first
    with pytest.raises(RuntimeError, match="--join-token: join token"):
        registry_key_to_trust(tmp_path, "not a token")
