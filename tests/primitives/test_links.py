"""Veth pairs between namespaces: made once, remade when half of a pair is left."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from zos.primitives import links, netns


@pytest.fixture
def spaces() -> Iterator[tuple[str, str, str]]:
    names = tuple(f"zt-veth-{os.getpid()}-{side}" for side in "abc")
    for name in names:
        netns.create(name)
    try:
        yield names  # type: ignore[misc]
    finally:
        for name in names:
            netns.delete(name)


@pytest.mark.netns
def test_a_pair_is_made_once(spaces: tuple[str, str, str]) -> None:
    a, b, _ = spaces
    links.ensure_veth("v0", "eth0", a, b)
    first = links.index("eth0", b)
    links.ensure_veth("v0", "eth0", a, b)  # again: nothing changes
    assert links.index("eth0", b) == first
    assert links.kind("v0", a) == links.kind("eth0", b) == "veth"


@pytest.mark.netns
def test_a_pair_whose_other_half_went_away_is_made_again(spaces: tuple[str, str, str]) -> None:
    # What a rebuilt network namespace meets while the kernel is still destroying the old
    # one's links: the machine's end is there, the bridge's end is not (here: moved out).
    a, b, gone = spaces
    links.ensure_veth("v0", "eth0", a, b)
    with links.ipr(a) as sock:
        sock.link("set", index=links.index("v0", a), net_ns_fd=gone)
    assert not links.exists("v0", a) and links.exists("eth0", b)

    links.ensure_veth("v0", "eth0", a, b)
    assert links.kind("v0", a) == links.kind("eth0", b) == "veth"
    assert not links.exists("v0", gone)  # the old pair is gone, both halves


@pytest.mark.netns
def test_a_link_of_another_kind_in_the_way_is_not_removed(spaces: tuple[str, str, str]) -> None:
    a, b, _ = spaces
    links.ensure_bridge("eth0", b)
    with pytest.raises(links.LinkError, match="cannot create veth v0/eth0"):
        links.ensure_veth("v0", "eth0", a, b)
    assert links.kind("eth0", b) == "bridge"
