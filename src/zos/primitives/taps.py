"""A VM's network interfaces: one tap per interface on the network's bridge, named and
MAC'd as zos does, so a machine keeps its MAC (and its IPv6 from SLAAC) across restarts.

zos: the tap is `t-` + base58(md5("<workload id>:<network>"))[:13]; the guest's MAC is
derived from md5 of that 13-character name (`ifaceutil.HardwareAddrFromInputBytes`):
the first six bytes of the hash with the locally-administered bit set and the
multicast bit cleared, slid along the hash (and rehashed) until they fall in the
ranges zos accepts.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from zos.gridtypes.names import short_name
from zos.primitives import links

_MAC_LEN = 6


def _in_zos_range(mac: bytes) -> bool:
    # The comparisons zos makes, as it makes them (tail against the upper bound first).
    if mac[3:] <= b"\x00\x51\xff":
        return mac[:2] >= b"\x00\x03"
    if mac[3:] <= b"\x90\x00\xff":
        return mac[:2] >= b"\x00\x54" and mac[:2] != b"\x33\x33"
    return mac <= b"\xff\xff\xff\xff\xff\xfe" and mac[:2] >= b"\x90\x02"


def hardware_address(data: bytes) -> str:
    """The MAC zos derives from `data`, as aa:bb:cc:dd:ee:ff."""
    while True:
        digest = hashlib.md5(data).digest()
        for offset in range(len(digest) - _MAC_LEN + 1):
            mac = bytearray(digest[offset : offset + _MAC_LEN])
            mac[0] = (mac[0] | 2) & 0xFE  # locally administered, unicast
            if _in_zos_range(bytes(mac)):
                return ":".join(f"{b:02x}" for b in mac)
        data = digest


@dataclass(frozen=True)
class Tap:
    name: str  # the host side, on the bridge
    mac: str  # the guest's NIC


def for_interface(workload_id: str, network: str) -> Tap:
    """The tap and MAC of `workload_id`'s interface on `network` (the network's name)."""
    unique = short_name(workload_id, network)
    return Tap(name=f"t-{unique}", mac=hardware_address(unique.encode()))


async def ensure(tap: Tap, bridge: str, ns: str | None = None) -> None:
    await asyncio.to_thread(links.ensure_tap, tap.name, bridge, ns)


async def remove(tap: Tap, ns: str | None = None) -> None:
    await asyncio.to_thread(links.delete, tap.name, ns)
