"""Envelope signing, sealing, time and replay checks (no server needed)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zos.bus import MAX_PAYLOAD, BusError, Envelope, ReplayCache
from zos.bus.envelope import ALLOWED_SKEW, MAX_TTL, nests_too_deep, now_ms
from zos.identity import Identity

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))


def make(sealed: bool = True, payload: bytes = b'{"x":1}') -> Envelope:
    return Envelope.create(ALICE, 1, 2, "echo", payload, seal_to=BOB.public_key if sealed else None)


def test_signed_sealed_round_trip() -> None:
    env = Envelope.from_bytes(make().to_bytes())
    assert env.verify(ALICE.public_key)
    assert not env.verify(BOB.public_key)
    assert b'"x"' not in env.payload  # the relay sees ciphertext only
    assert env.decode_payload(BOB) == {"x": 1}
    with pytest.raises(BusError) as e:
        env.decode_payload(ALICE)
    assert e.value.code == "malformed"


def test_unsealed_round_trip() -> None:
    env = Envelope.from_bytes(make(sealed=False).to_bytes())
    assert env.verify(ALICE.public_key)
    assert env.decode_payload(BOB) == {"x": 1}


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
