"""A twin moves to a new key: signed by the old key, proven by the new one, announced
signed to every cache; the old key can no longer act as the twin, on the registry or on
the bus."""

from __future__ import annotations

import asyncio
import time

import pytest

from zos.bus import BusError
from zos.identity import Identity
from zos.registry import KeyChange, RegistryService
from zos.registry.models import rotation_message
from zos.registry.store import KEYCHANGES_PREFIX

pytestmark = pytest.mark.nats


async def refused(code: str, coro: object, match: str = "") -> None:
    with pytest.raises(BusError) as e:
        await coro  # type: ignore[misc]
    assert e.value.code == code, e.value
    assert match in e.value.message, e.value.message


async def test_rotate_key(make_client, registry: RegistryService) -> None:
    old = await make_client()
    watcher = await make_client()
    resolver = await watcher.key_resolver()
    assert await resolver(old.twin_id) == old.identity.public_key  # now cached
    new = Identity.generate()
    rotated = await old.rotate_key(new)
    assert rotated.id == old.twin_id and rotated.public_key == new.public_hex

    # The watcher's cache forgets the old key on the signed event (its ttl is 300 s).
    deadline = time.monotonic() + 10
    while await resolver(old.twin_id) != new.public_key:
        assert time.monotonic() < deadline, "the key change event did not arrive"
        await asyncio.sleep(0.05)
    [(_, raw)] = await registry.store.read_stream(f"{KEYCHANGES_PREFIX}.{old.twin_id}", 0, 5)
    change = KeyChange.model_validate_json(raw)
    assert (change.old_key, change.new_key) == (old.identity.public_hex, new.public_hex)

    # The old key signs nothing for the twin any more, and connects as a stranger.
    await refused("bad_signature", old.create_farm("old-key-farm"))
    assert await watcher.twin_by_key(old.identity.public_key) is None
    stale = await make_client(register=False, identity=old.identity)
    await refused("not_permitted", stale.get_twin(old.twin_id), "zos.registry.query")
    # The new key connects as the twin.
    fresh = await make_client(register=False, identity=new)
    assert (await fresh.ensure_twin()).id == old.twin_id
    assert (await fresh.create_farm("new-key-farm")).owner_twin == old.twin_id

    # Refused: a proof not made by the new key, a key that is another twin's, the same key.
    other = await make_client()
    third = Identity.generate()
    bad_proof = Identity.generate().sign(
        rotation_message(old.twin_id, new.public_hex, third.public_hex)
    )
    body = {"new_key": third.public_hex, "proof": bad_proof.hex()}
    await refused("forbidden", fresh.transact("rotate_key", body), "proof")
    await refused("conflict", fresh.rotate_key(other.identity), "another twin's")
    await refused("invalid", fresh.rotate_key(new), "current key")
    assert (await other.get_twin(old.twin_id)).public_key == new.public_hex
