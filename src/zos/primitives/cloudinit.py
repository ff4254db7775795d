"""A cloud-init NoCloud disk, as zos gives a VM image: FAT, label `cidata`, three files.

- `meta-data`: `instance-id`, `local-hostname`;
- `network-config` (version 2): one entry per NIC, matched by MAC, with its addresses,
  gateways and routes, DHCP off; the DNS servers on the first;
- `user-data`: root's `ssh_authorized_keys` (zos takes them from the env `SSH_KEY`,
  one a line or comma-separated) and `mounts` (cloud-init's fstab-like lists).

Each file starts with `#cloud-config`, as zos writes them. Values are written by a YAML
dumper, never pasted into text, so a hostile value stays one string. The disk is built
with `mkfs.vfat` and `mcopy` (dosfstools, mtools) into a temporary file and then renamed
into place; it is attached read-only, after the machine's other disks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_network
from pathlib import Path
from typing import Any

import yaml

from zos.primitives.command import run
from zos.primitives.vmnames import HOSTNAME, MAC

LABEL = "cidata"
SIZE_KIB = 2048
HEADER = "#cloud-config\n"


class CloudInitError(ValueError):
    pass


@dataclass(frozen=True)
class Ethernet:
    name: str  # the key in network-config (eth0 …); the NIC is found by `mac`
    mac: str
    addresses: Sequence[IPv4Interface | IPv6Interface] = ()
    gateway4: IPv4Address | None = None
    gateway6: IPv6Address | None = None
    routes: Sequence[tuple[str, IPv4Address | IPv6Address]] = ()  # (destination, via)

    def as_yaml(self) -> dict[str, Any]:
        if not MAC.match(self.mac):
            raise CloudInitError(f"network {self.name}: invalid MAC {self.mac!r}")
        out: dict[str, Any] = {
            "match": {"macaddress": self.mac},
            "dhcp4": False,
            "addresses": [str(a) for a in self.addresses],
        }
        if self.gateway4:
            out["gateway4"] = str(self.gateway4)
        if self.gateway6:
            out["gateway6"] = str(self.gateway6)
        if self.routes:
            routes = []
            for to, via in self.routes:
                try:
                    dest = str(ip_network(to, strict=False))
                except ValueError as exc:
                    raise CloudInitError(f"network {self.name}: invalid route {to!r}") from exc
                routes.append({"to": dest, "via": str(via)})
            out["routes"] = routes
        return out


@dataclass(frozen=True)
class Mount:
    source: str  # a device (/dev/vdb) or a share tag
    target: str
    type: str = "auto"

    def as_yaml(self) -> list[str]:
        for value in (self.source, self.target, self.type):
            if not value or any(c in value for c in "\0\n\t "):
                raise CloudInitError(f"mount: invalid field {value!r}")
        if not self.target.startswith("/"):
            raise CloudInitError(f"mount: target {self.target!r} must be absolute")
        return [self.source, self.target, self.type, "defaults", "0", "0"]


@dataclass(frozen=True)
class NoCloud:
    instance_id: str
    hostname: str
    ethernets: Sequence[Ethernet] = ()
    nameservers: Sequence[IPv4Address | IPv6Address] = ()
    ssh_keys: Sequence[str] = ()  # root's authorized keys
    mounts: Sequence[Mount] = ()

    def check(self) -> None:
        if not HOSTNAME.match(self.hostname):
            raise CloudInitError(f"hostname: invalid {self.hostname!r}")
        if not self.instance_id or any(c in self.instance_id for c in "\0\n"):
            raise CloudInitError(f"instance-id: invalid {self.instance_id!r}")
        for key in self.ssh_keys:
            if "\0" in key or "\n" in key:
                raise CloudInitError("ssh key: one key per entry, without NUL or newline")

    def files(self) -> dict[str, str]:
        """meta-data, network-config and user-data, as they go on the disk."""
        self.check()
        ethernets: dict[str, Any] = {}
        for i, eth in enumerate(self.ethernets):
            entry = eth.as_yaml()
            if i == 0 and self.nameservers:
                entry["nameservers"] = {"addresses": [str(a) for a in self.nameservers]}
            ethernets[eth.name] = entry
        users = [{"name": "root", "ssh_authorized_keys": list(self.ssh_keys)}]
        return {
            "meta-data": _dump({"instance-id": self.instance_id, "local-hostname": self.hostname}),
            "network-config": _dump({"version": 2, "ethernets": ethernets}),
            "user-data": _dump(
                {
                    "users": users if self.ssh_keys else [],
                    "mounts": [m.as_yaml() for m in self.mounts],
                }
            ),
        }


def _dump(data: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def ssh_keys_from_env(value: str) -> list[str]:
    """Keys from zos's `SSH_KEY` env: one a line, or several on a line split by commas."""
    return [k.strip() for line in value.splitlines() for k in line.split(",") if k.strip()]


async def write_disk(config: NoCloud, path: Path) -> Path:
    """Build the `cidata` disk at `path` (replacing what was there)."""
    files = config.files()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".cidata-") as tmp:
        image = Path(tmp) / "disk.img"
        await run("mkfs.vfat", "-n", LABEL, "-C", str(image), str(SIZE_KIB))
        for name, text in files.items():
            src = Path(tmp) / name
            src.write_text(text)
            await run("mcopy", "-i", str(image), str(src), f"::/{name}")
        os.chmod(image, 0o600)
        os.replace(image, path)
    return path
