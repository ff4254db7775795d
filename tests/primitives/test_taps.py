"""Taps as zos names and MACs them, made on a bridge in a namespace."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import base58
import pytest

from zos.primitives import links, netns, taps


def test_named_and_maced_as_zos_does() -> None:
    tap = taps.for_interface("12-34-web", "mynet")
    unique = base58.b58encode(hashlib.md5(b"12-34-web:mynet").digest()).decode()[:13]
    assert tap.name == f"t-{unique}" and len(tap.name) <= 15
    mac = bytes.fromhex(tap.mac.replace(":", ""))
    assert mac[0] & 2 and not mac[0] & 1  # locally administered, unicast
    assert taps.for_interface("12-34-web", "mynet") == tap  # stable across restarts
    assert taps.for_interface("12-34-web", "other").mac != tap.mac


def test_the_mac_is_the_first_window_of_the_hash_zos_accepts() -> None:
    # Inputs whose first six hash bytes zos rejects (a tail above 90:00:ff with a head
    # below 90:02) slide to the next offset, as HardwareAddrFromInputBytes does.
    slid = 0
    for i in range(200):
        data = f"input-{i}".encode()
        digest = hashlib.md5(data).digest()
        windows = []
        for off in range(11):
            w = bytearray(digest[off : off + 6])
            w[0] = (w[0] | 2) & 0xFE
            windows.append(bytes(w))
        valid = [w for w in windows if not (w[3:] > b"\x90\x00\xff" and w[:2] < b"\x90\x02")]
        if valid:
            assert taps.hardware_address(data) == ":".join(f"{b:02x}" for b in valid[0])
            slid += valid[0] != windows[0]
    assert slid > 0  # the sliding was exercised


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"zt-tap-{os.getpid()}"
    netns.create(name)
    links.ensure_bridge("br0", name)
    try:
        yield name
    finally:
        netns.delete(name)


@pytest.mark.netns
async def test_a_tap_on_the_bridge_idempotent_and_removed(ns: str) -> None:
    tap = taps.for_interface("1-2-vm", "net")
    await taps.ensure(tap, "br0", ns)
    await taps.ensure(tap, "br0", ns)  # again: nothing changes
    assert links.kind(tap.name, ns) == "tun"
    assert links.ports("br0", ns) == [tap.name]
    disable = netns.run_in(
        ns, lambda: Path(f"/proc/sys/net/ipv6/conf/{tap.name}/disable_ipv6").read_text()
    )
    assert disable.strip() == "1"  # no IPv6 on the host side, as zos
    await taps.remove(tap, ns)
    assert not links.exists(tap.name, ns)
    await taps.remove(tap, ns)  # a no-op when gone


@pytest.mark.netns
async def test_a_link_of_another_kind_is_not_taken_for_a_tap(ns: str) -> None:
    links.ensure_bridge("t-notatap", ns)
    with pytest.raises(links.LinkError, match="not a tap"):
        links.ensure_tap("t-notatap", "br0", ns)
