"""`network` (a WireGuard private network on a node) and `network-light`."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import Field

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData
from zos.gridtypes.gojson import (
    HexBytes,
    IPNetStr,
    OmitEmpty,
    Uint16,
    go_ipnet_challenge,
)

MYCELIUM_KEY_LEN = 32


class Peer(GoModel):
    subnet: IPNetStr = ""
    wireguard_public_key: str = ""
    allowed_ips: list[IPNetStr] = Field(default_factory=list)
    endpoint: str = ""

    def challenge(self) -> str:
        out = [self.wireguard_public_key, self.endpoint, go_ipnet_challenge(self.subnet)]
        out.extend(go_ipnet_challenge(ip) for ip in self.allowed_ips)
        return "".join(out)

    def check(self, ctx: ValidationContext, field: str) -> None:
        if not self.subnet:
            raise ctx.fail(f"{field}.subnet", "must not be empty")
        if not self.allowed_ips:
            raise ctx.fail(f"{field}.allowed_ips", "must not be empty")
        if not self.wireguard_public_key:
            raise ctx.fail(f"{field}.wireguard_public_key", "must not be empty")


class Mycelium(GoModel):
    """A network's mycelium node: its 32-byte key (hex) and optional peers."""

    hex_key: HexBytes = ""
    peers: list[str] = Field(default_factory=list)

    def challenge(self) -> str:
        return self.hex_key + "".join(self.peers)

    def check(self, ctx: ValidationContext, field: str) -> None:
        if len(self.hex_key) != 2 * MYCELIUM_KEY_LEN:
            raise ctx.fail(
                f"{field}.hex_key",
                f"must be {MYCELIUM_KEY_LEN} bytes, got {len(self.hex_key) // 2}",
            )
        if self.peers:
            raise ctx.fail(f"{field}.peers", "user defined peers are not supported")


def _check_subnet_in_range(ctx: ValidationContext, ip_range: str, subnet: str) -> None:
    net = ipaddress.ip_interface(subnet).network
    rng = ipaddress.ip_interface(ip_range).network
    if net.version != rng.version or not net.subnet_of(rng):  # type: ignore[arg-type]
        raise ctx.fail("subnet", f"{subnet} is not inside ip_range {ip_range}")


class Network(WorkloadData):
    type: ClassVar[str] = "network"

    ip_range: IPNetStr = ""
    subnet: IPNetStr = ""
    wireguard_private_key: str = ""
    wireguard_listen_port: Uint16 = 0
    peers: list[Peer] = Field(default_factory=list)
    mycelium: Annotated[Mycelium | None, OmitEmpty()] = None

    def challenge(self) -> str:
        mycelium = "" if self.mycelium is None else self.mycelium.challenge()
        return _wireguard_challenge(self) + mycelium

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if not self.ip_range:
            raise ctx.fail("ip_range", "must not be empty")
        if not self.subnet:
            raise ctx.fail("subnet", "must not be empty")
        _check_subnet_in_range(ctx, self.ip_range, self.subnet)
        if not self.wireguard_private_key:
            raise ctx.fail("wireguard_private_key", "must not be empty")
        for i, peer in enumerate(self.peers):
            peer.check(ctx, f"peers[{i}]")
        if self.mycelium is not None:
            self.mycelium.check(ctx, "mycelium")


class NetworkLight(WorkloadData):
    """`network-light`: a network on a light node; mycelium is always present.

    The challenge is the one of current zosbase (and of the TypeScript client when the
    WireGuard fields are set): ip_range, subnet, private key, listen port, peers, then
    mycelium. (Older zos light nodes hashed only the subnet and mycelium.)
    """

    type: ClassVar[str] = "network-light"

    subnet: IPNetStr = ""
    mycelium: Mycelium = Field(default_factory=Mycelium)
    ip_range: IPNetStr = ""
    wireguard_private_key: str = ""
    wireguard_listen_port: Uint16 = 0
    peers: list[Peer] = Field(default_factory=list)

    def challenge(self) -> str:
        return _wireguard_challenge(self) + self.mycelium.challenge()

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if not self.subnet:
            raise ctx.fail("subnet", "must not be empty")
        self.mycelium.check(ctx, "mycelium")


def _wireguard_challenge(net: Network | NetworkLight) -> str:
    """The part both network types hash alike: ip_range, subnet, key, port, peers."""
    out = [
        go_ipnet_challenge(net.ip_range),
        go_ipnet_challenge(net.subnet),
        net.wireguard_private_key,
        str(net.wireguard_listen_port),
    ]
    out.extend(p.challenge() for p in net.peers)
    return "".join(out)
