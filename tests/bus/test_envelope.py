"""Envelope signing, sealing, time and replay checks (no server needed)."""

from __future__ import annotations

import base64
import json

import nacl.public
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zos.bus import MAX_ENVELOPE, MAX_PAYLOAD, BusError, Envelope, Keys, ReplayCache
from zos.bus.envelope import ALLOWED_SKEW, MAX_TTL, nests_too_deep, now_ms
from zos.identity import Identity, SealError
from zos.identity.sealing import x25519_public_from_ed25519

ALICE = Identity(bytes(range(32)))  # twin 1
BOB = Identity(bytes(range(1, 33)))  # twin 2
MALLORY = Identity(bytes(range(2, 34)))  # twin 3


def make(sealed: bool = True, payload: bytes = b'{"x":1}') -> Envelope:
    seal_to = BOB.public_key if sealed else None
    return Envelope.create(Keys(ALICE), 1, 2, "echo", payload, seal_to=seal_to)


def test_signed_sealed_round_trip() -> None:
    env = Envelope.from_bytes(make().to_bytes())
    assert env.verify(ALICE.public_key)
    assert not env.verify(BOB.public_key)
    assert b'"x"' not in env.payload  # the relay sees ciphertext only
    assert env.decode_payload(Keys(BOB), ALICE.public_key) == {"x": 1}
    for keys, source_key in (
        (Keys(MALLORY), ALICE.public_key),  # another receiver
        (Keys(BOB), MALLORY.public_key),  # another sender
    ):
        with pytest.raises(BusError) as e:
            env.decode_payload(keys, source_key)
        assert e.value.code == "malformed" and "cannot be opened" in e.value.message


def test_unsealed_round_trip() -> None:
    env = Envelope.from_bytes(make(sealed=False).to_bytes())
    assert env.verify(ALICE.public_key)
    assert env.decode_payload(Keys(BOB), ALICE.public_key) == {"x": 1}


def test_a_sealed_payload_opens_only_under_its_own_source() -> None:
    """Mallory copies Alice's sealed payload into an envelope of her own, signed by her:
    the signature is good, but the box is Alice's and Bob's, so Bob cannot open it as
    Mallory's (with protocol 1's anonymous boxes he could, and would have answered
    Mallory with what Alice asked)."""
    stolen = make().payload
    copied = Envelope.create(Keys(MALLORY), 3, 2, "echo", b"")
    copied.payload = stolen
    copied.sealed = True
    copied.signature = Keys(MALLORY).sign(copied.signing_bytes())
    assert copied.verify(MALLORY.public_key)
    with pytest.raises(BusError) as e:
        copied.decode_payload(Keys(BOB), MALLORY.public_key)
    assert e.value.code == "malformed"


def test_sealing_to_an_unusable_key_is_refused() -> None:
    with pytest.raises(BusError) as e:
        Envelope.create(Keys(ALICE), 1, 2, "echo", b"{}", seal_to=bytes([1]) + bytes(31))
    assert e.value.code == "malformed" and "twin 2" in e.value.message


def test_shared_keys_are_cached_per_peer_and_dropped_when_its_key_changes() -> None:
    bob = Keys(BOB, max_peers=2)
    new_alice = Identity(bytes(range(3, 35)))  # twin 1 rotated its key to this one
    old_box = make().payload
    assert bob.open(1, ALICE.public_key, old_box) == b'{"x":1}'
    first = bob.shared_key(1, ALICE.public_key)
    assert bob.shared_key(1, ALICE.public_key) is first  # derived once
    assert bob.cached_peer_key(1) == ALICE.public_key
    # After the rotation the resolver gives twin 1's new key: the old entry is dropped,
    # nothing boxed with the old key opens, and the new key's boxes do.
    with pytest.raises(SealError):
        bob.open(1, new_alice.public_key, old_box)
    assert bob.cached_peer_key(1) == new_alice.public_key
    assert bob.shared_key(1, new_alice.public_key) != first
    rotated = Envelope.create(Keys(new_alice), 1, 2, "echo", b"{}", seal_to=BOB.public_key)
    assert rotated.decode_payload(bob, new_alice.public_key) == {}
    # Bounded: the least recently used peer goes first.
    bob.shared_key(3, MALLORY.public_key)
    bob.shared_key(1, new_alice.public_key)
    bob.shared_key(4, ALICE.public_key)
    assert bob.cached_peer_key(3) is None
    assert bob.cached_peer_key(1) == new_alice.public_key


def test_the_shared_key_cache_never_mixes_peers() -> None:
    """Bob holds box keys for Alice (twin 1) and Mallory (twin 3) at once: each opens only
    its own peer's boxes, whatever order they were derived and used in. A cache that
    answered one peer with another's key (by last use, or by a key collision) fails here."""
    bob, alice, mallory = Keys(BOB), Keys(ALICE), Keys(MALLORY)
    from_alice = alice.seal(2, BOB.public_key, b"alice")
    from_mallory = mallory.seal(2, BOB.public_key, b"mallory")
    for _ in range(2):  # derived, then from the cache
        assert bob.open(1, ALICE.public_key, from_alice) == b"alice"
        assert bob.open(3, MALLORY.public_key, from_mallory) == b"mallory"
        with pytest.raises(SealError):
            bob.open(3, MALLORY.public_key, from_alice)
        with pytest.raises(SealError):
            bob.open(1, ALICE.public_key, from_mallory)
    assert bob.shared_key(1, ALICE.public_key) != bob.shared_key(3, MALLORY.public_key)
    # A twin id whose resolved key is another's gets that key's box key, not the cached one.
    assert bob.shared_key(3, ALICE.public_key) == bob.shared_key(1, ALICE.public_key)
    with pytest.raises(SealError):
        bob.open(3, ALICE.public_key, from_mallory)
    # The sender's side: Alice's boxes to Bob and to Mallory open only for their receiver.
    to_mallory = alice.seal(3, MALLORY.public_key, b"for mallory")
    to_bob = alice.seal(2, BOB.public_key, b"for bob")
    assert mallory.open(1, ALICE.public_key, to_mallory) == b"for mallory"
    with pytest.raises(SealError):
        mallory.open(1, ALICE.public_key, to_bob)
    with pytest.raises(SealError):
        bob.open(1, ALICE.public_key, to_mallory)


def protocol_1_envelope(sealed: bool) -> Envelope:
    """An envelope as a protocol-1 sender made it: signed over the "zos-bus-1" array,
    sealed (when sealed) in an anonymous box to the destination's X25519 key."""
    payload = b'{"x":1}'
    if sealed:
        to_bob = nacl.public.PublicKey(x25519_public_from_ed25519(BOB.public_key))
        payload = nacl.public.SealedBox(to_bob).encrypt(payload)
    env = Envelope.create(Keys(ALICE), 1, 2, "echo", b"")
    env.payload, env.sealed = payload, sealed
    fields = json.loads(env.signing_bytes())
    assert fields[0] == "zos-bus-2"
    fields[0] = "zos-bus-1"
    env.signature = ALICE.sign(json.dumps(fields, separators=(",", ":")).encode())
    return env


@pytest.mark.parametrize("sealed", [True, False])
def test_protocol_1_envelopes_are_refused(sealed: bool) -> None:
    """Protocol 2 is a flag day: a protocol-1 signature does not verify (the protocol is
    the first signed field), so an old envelope, sealed or not, is refused as
    bad_signature before anything looks at its payload; nor does its anonymous box open
    as a protocol-2 box."""
    old = Envelope.from_bytes(protocol_1_envelope(sealed).to_bytes())
    assert not old.verify(ALICE.public_key)
    if sealed:
        with pytest.raises(BusError) as e:
            old.decode_payload(Keys(BOB), ALICE.public_key)
        assert e.value.code == "malformed"


@pytest.mark.parametrize(
    "field,value",
    [
        ("source", 3),
        ("destination", 3),
        ("command", "other"),
        ("timestamp", 1),
        ("expiry", 2),
        ("reply_to", "a" * 32),
        ("sealed", False),
        ("payload", b"changed"),
        ("id", "b" * 32),
    ],
)
def test_every_field_is_signed(field: str, value: object) -> None:
    env = make()
    altered = env.model_copy(update={field: value})
    assert not altered.verify(ALICE.public_key)


def test_malformed_and_too_large() -> None:
    for data in (b"", b"not json", b"[]", b'{"id": "x"}'):
        with pytest.raises(BusError) as e:
            Envelope.from_bytes(data)
        assert e.value.code == "malformed"
    doc = json.loads(make().to_bytes())
    doc["extra"] = 1
    with pytest.raises(BusError) as e:
        Envelope.from_bytes(json.dumps(doc).encode())
    assert e.value.code == "malformed" and "extra" in e.value.message
    with pytest.raises(BusError) as e:
        make(sealed=False, payload=b"x" * (MAX_PAYLOAD + 1))
    assert e.value.code == "too_large"
    with pytest.raises(BusError) as e:
        Envelope.from_bytes(b" " * (MAX_PAYLOAD * 2))
    assert e.value.code == "too_large"


def test_time_checks() -> None:
    env = make()
    env.check_time()
    skew = int(ALLOWED_SKEW * 1000)
    future = env.model_copy(update={"timestamp": now_ms() + skew + 5000})
    with pytest.raises(BusError, match="future"):
        future.check_time()
    expired = env.model_copy(update={"timestamp": now_ms() - 10_000, "expiry": now_ms() - 1})
    with pytest.raises(BusError, match="expired"):
        expired.check_time()
    too_long = env.model_copy(update={"expiry": env.timestamp + int(MAX_TTL * 1000) + 1})
    with pytest.raises(BusError) as e:
        too_long.check_time()
    assert e.value.code == "expired"


def test_replay_cache_forgets_after_expiry_and_is_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    now = now_ms()
    cache.check_and_add(1, "a" * 32, now + 1000, now=now)
    with pytest.raises(BusError) as e:
        cache.check_and_add(1, "a" * 32, now + 1000, now=now)
    assert e.value.code == "replayed"
    cache.check_and_add(2, "a" * 32, now + 1000, now=now)  # ids are per source
    with pytest.raises(BusError) as e:
        cache.check_and_add(3, "c" * 32, now + 1000, now=now)
    assert e.value.code == "busy"
    later = now + 1000 + int(ALLOWED_SKEW * 1000) + 1
    cache.check_and_add(3, "c" * 32, later + 1000, now=later)
    assert len(cache) == 1


def test_bus_error_codes() -> None:
    e = BusError("forbidden", "nope\nsecond line")
    assert e.to_dict() == {"code": "forbidden", "message": "nope second line"}
    assert BusError("Bad Code!", "x").code == "internal"
    assert BusError.from_dict("junk").code == "malformed"


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_TRICKY = st.text(alphabet='[]{}"\\an\u00e9', max_size=6)
_JSON = st.recursive(
    st.none() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=30,
)


@given(_JSON, st.integers(min_value=0, max_value=8), st.booleans())
def test_the_nesting_check_matches_the_parsed_depth(value, limit, ascii_only) -> None:
    # Issue 12, finding 9: the depth is found before parsing; brackets, quotes and
    # backslashes inside strings must not count.
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nests_too_deep(data, limit) == (_depth(value) > limit)


def test_ttl_bounds_when_creating() -> None:
    for ttl in (0, -1, MAX_TTL + 0.001):
        with pytest.raises(BusError) as e:
            Envelope.create(Keys(ALICE), 1, 2, "echo", b"", ttl=ttl)
        assert e.value.code == "malformed" and "ttl must be in" in e.value.message
    for ttl in (0.001, 1.5, MAX_TTL):
        env = Envelope.create(Keys(ALICE), 1, 2, "echo", b"", ttl=ttl)
        assert env.expiry - env.timestamp == int(ttl * 1000)
        env.check_time(env.timestamp)  # at its creation: a 1 ms ttl outlives no busy core


def test_size_limits_to_the_byte() -> None:
    env = make(sealed=False, payload=b"x" * MAX_PAYLOAD)  # exactly the limit: fine
    assert Envelope.from_bytes(env.to_bytes()).payload == env.payload
    doc = json.loads(env.to_bytes())
    doc["payload"] = base64.b64encode(b"x" * (MAX_PAYLOAD + 1)).decode()
    data = json.dumps(doc).encode()
    assert len(data) <= MAX_ENVELOPE  # under the envelope limit: the payload's own limit
    with pytest.raises(BusError) as e:
        Envelope.from_bytes(data)
    assert e.value.code == "too_large" and "payload" in e.value.message
    # other faults of the payload, or a too long signature, are not "too large"
    small = json.loads(make().to_bytes())
    for field, value in (("payload", "!!not base64!!"), ("signature", "A" * 100)):
        with pytest.raises(BusError) as e:
            Envelope.from_bytes(json.dumps({**small, field: value}).encode())
        assert e.value.code == "malformed" and field in e.value.message, e.value
    for size, code in ((MAX_ENVELOPE, "malformed"), (MAX_ENVELOPE + 1, "too_large")):
        with pytest.raises(BusError) as e:
            Envelope.from_bytes(b" " * size)
        assert e.value.code == code


def test_time_limits_to_the_millisecond() -> None:
    now = now_ms()
    skew, ttl = int(ALLOWED_SKEW * 1000), int(MAX_TTL * 1000)

    def at(timestamp: int, expiry: int) -> Envelope:
        return make().model_copy(update={"timestamp": timestamp, "expiry": expiry})

    at(now + skew, now + skew + 1000).check_time(now)  # as far ahead as allowed
    at(now, now + ttl).check_time(now)  # as long-lived as allowed
    at(now, now).check_time(now)  # expires this very millisecond
    for env in (
        at(now + skew + 1, now + skew + 1000),
        at(now, now + ttl + 1),
        at(now, now - 1),
        at(now - 10, now - 1),
    ):
        with pytest.raises(BusError) as e:
            env.check_time(now)
        assert e.value.code == "expired"


def test_replay_cache_keeps_an_id_through_its_expiry_and_the_skew() -> None:
    cache = ReplayCache()
    now = now_ms()
    skew = int(ALLOWED_SKEW * 1000)
    cache.check_and_add(1, "a" * 32, now, now=now)
    with pytest.raises(BusError):  # still within the skew after its expiry
        cache.check_and_add(1, "a" * 32, now, now=now + skew)
    assert len(cache) == 1
    cache.check_and_add(2, "b" * 32, now + skew + 1, now=now + skew + 1)  # prunes 'a'
    assert len(cache) == 1
    cache.check_and_add(1, "a" * 32, now + 2 * skew, now=now + skew + 1)
