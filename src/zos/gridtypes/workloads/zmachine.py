"""`zmachine` (a container or VM) and `zmachine-light`."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar

from pydantic import Field

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData, go_bool
from zos.gridtypes.capacity import Capacity, GiB, MiB
from zos.gridtypes.gojson import HexBytes, IPStr, OmitEmpty, Uint8, Uint64, go_ip_challenge

MYCELIUM_SEED_LEN = 6
MIN_MEMORY = 250 * MiB
RESERVED_NETWORKS = ("ygg", "pub", "mycelium")
MOUNTABLE = ("zmount", "volume", "qsfs")
# What runs a zmachine (this grid's extension; zos runs all as VMs): "" is "container".
RUNTIMES = ("container", "vm")
_NAME = re.compile(r"^[a-zA-Z0-9_]+$")


class MachineInterface(GoModel):
    network: str = ""
    ip: IPStr = ""


class MyceliumIP(GoModel):
    """A machine's mycelium address: the network it joins and a 6-byte seed (hex).

    zos writes the network field as `Network` (no JSON tag in Go); any case is read.
    """

    network: str = Field(default="", alias="Network")
    hex_seed: HexBytes = ""

    def challenge(self) -> str:
        return self.network + self.hex_seed


class MachineNetwork(GoModel):
    public_ip: str = ""
    planetary: bool = False
    mycelium: Annotated[MyceliumIP | None, OmitEmpty()] = None
    interfaces: list[MachineInterface] = Field(default_factory=list)

    def challenge(self) -> str:
        return self.public_ip + go_bool(self.planetary) + _interfaces_challenge(self)


class MachineNetworkLight(GoModel):
    mycelium: Annotated[MyceliumIP | None, OmitEmpty()] = None
    interfaces: list[MachineInterface] = Field(default_factory=list)

    def challenge(self) -> str:
        return _interfaces_challenge(self)


def _interfaces_challenge(net: MachineNetwork | MachineNetworkLight) -> str:
    """What both machine networks hash alike: each interface, then mycelium."""
    out = [inf.network + go_ip_challenge(inf.ip) for inf in net.interfaces]
    if net.mycelium is not None:
        out.append(net.mycelium.challenge())
    return "".join(out)


class MachineCapacity(GoModel):
    cpu: Uint8 = 0
    memory: Uint64 = 0

    def challenge(self) -> str:
        return f"{self.cpu}{self.memory}"


class MachineMount(GoModel):
    name: str = ""
    mountpoint: str = ""

    def challenge(self) -> str:
        return self.name + self.mountpoint


class _Machine(WorkloadData):
    """What zmachine and zmachine-light share: they differ only in their network
    (zmachine-light redeclares `network`, which keeps its place in the field order)."""

    flist: str = ""
    network: MachineNetwork = Field(default_factory=MachineNetwork)
    size: Uint64 = 0
    compute_capacity: MachineCapacity = Field(default_factory=MachineCapacity)
    mounts: list[MachineMount] = Field(default_factory=list)
    entrypoint: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    corex: bool = False
    gpu: Annotated[list[str], OmitEmpty()] = Field(default_factory=list)

    def min_root_size(self) -> int:
        """2 GiB once cpu × memory reaches 8 GiB-cores, otherwise 500 MiB (as zos)."""
        # uint64 arithmetic, wrapping as zos computes it
        cu = (self.compute_capacity.cpu * self.compute_capacity.memory) % 2**64 // (8 * GiB)
        return 500 * MiB if cu == 0 else 2 * GiB

    def root_size(self) -> int:
        return max(self.size, self.min_root_size())

    def capacity(self) -> Capacity:
        return Capacity(
            cru=self.compute_capacity.cpu,
            mru=self.compute_capacity.memory,
            sru=self.root_size(),
        )

    def challenge(self) -> str:
        out = [self.flist, self.network.challenge(), str(self.size)]
        out.append(self.compute_capacity.challenge())
        out.extend(m.challenge() for m in self.mounts)
        out.append(self.entrypoint)
        out.extend(f"{k}={self.env[k]}" for k in sorted(self.env, key=_go_string_key))
        out.extend(self.gpu)
        # Signed only when set: a deployment without it hashes as zos hashes it.
        out.append(getattr(self, "runtime", ""))
        return "".join(out)

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        network: MachineNetwork | MachineNetworkLight = self.network
        if not self.flist:
            raise ctx.fail("flist", "must not be empty")
        if len(network.interfaces) != 1:
            raise ctx.fail(
                "network.interfaces",
                f"exactly one private network interface is supported, "
                f"got {len(network.interfaces)}",
            )
        for i, inf in enumerate(network.interfaces):
            field = f"network.interfaces[{i}]"
            if not inf.ip:
                raise ctx.fail(f"{field}.ip", "must be an IP address")
            if inf.network in RESERVED_NETWORKS:
                raise ctx.fail(f"{field}.network", f"'{inf.network}' is a reserved network name")
            if not _NAME.match(inf.network):
                raise ctx.fail(f"{field}.network", f"invalid network name {inf.network!r}")
        if self.compute_capacity.cpu == 0:
            raise ctx.fail("compute_capacity.cpu", "must not be 0")
        if self.compute_capacity.memory < MIN_MEMORY:
            raise ctx.fail(
                "compute_capacity.memory",
                f"must be at least 250 MiB ({MIN_MEMORY} bytes), "
                f"got {self.compute_capacity.memory}",
            )
        min_root = self.min_root_size()
        if self.size != 0 and self.size < min_root:
            raise ctx.fail("size", f"must be 0 (minimum) or at least {min_root} bytes")
        seen: set[str] = set()
        for i, mount in enumerate(self.mounts):
            if mount.name in seen:
                raise ctx.fail(f"mounts[{i}].name", f"'{mount.name}' is mounted twice")
            seen.add(mount.name)
            target = ctx.get(mount.name)
            if target is None or target.type not in MOUNTABLE:
                raise ctx.fail(
                    f"mounts[{i}].name",
                    f"no zmount, volume or qsfs named '{mount.name}' in the deployment",
                )
        if network.mycelium is not None and len(network.mycelium.hex_seed) != 2 * MYCELIUM_SEED_LEN:
            raise ctx.fail(
                "network.mycelium.hex_seed",
                f"must be {MYCELIUM_SEED_LEN} bytes, got {len(network.mycelium.hex_seed) // 2}",
            )


def _go_string_key(key: str) -> bytes:
    # Go's sort.Strings orders by bytes (UTF-8), not by code point of UTF-16 units.
    return key.encode("utf-8", "surrogatepass")


class ZMachine(_Machine):
    type: ClassVar[str] = "zmachine"

    runtime: Annotated[str, OmitEmpty()] = ""  # "container" (the default) or "vm"

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        super().validate(ctx)
        if self.runtime and self.runtime not in RUNTIMES:
            raise ctx.fail("runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        public_ip = self.network.public_ip
        if public_ip:
            target = ctx.get(public_ip)
            if target is None or target.type not in ("ip", "ipv4"):
                raise ctx.fail("network.public_ip", f"no ip workload named '{public_ip}'")
            users = [
                wl.name
                for wl in ctx.deployment.workloads
                if wl.type == "zmachine"
                and isinstance(wl.data, ZMachine)
                and wl.data.network.public_ip == public_ip
            ]
            if len(users) > 1:
                raise ctx.fail(
                    "network.public_ip",
                    f"public ip '{public_ip}' is used by several machines: {', '.join(users)}",
                )


class ZMachineLight(_Machine):
    type: ClassVar[str] = "zmachine-light"

    network: MachineNetworkLight = Field(default_factory=MachineNetworkLight)  # type: ignore[assignment]


def ip_in_subnet(ip: str, subnet: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_interface(subnet).network
    except ValueError:
        return False
