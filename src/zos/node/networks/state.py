"""What a node keeps about each network and each attachment, in its data directory.

`<data>/networks/<netid>.json`: the network (`NetworkInfo`, with the network workloads
that use it); `<data>/networks/attachments/<netid>/<workload id>.json`: each workload
attached to it (its address). Both are written before the kernel objects are made, so a
crash half way is finished or removed by the next provision or cleanup.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any


@dataclass
class NetworkInfo:
    """A twin's network on this node (what its workloads need to join it)."""

    netid: str
    twin_id: int
    name: str
    subnet: str
    ip_range: str
    namespace: str
    bridge: str
    wireguard_listen_port: int = 0
    wireguard: dict[str, Any] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)  # its network workloads

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @property
    def gateway(self) -> IPv4Address:
        return self.network[1]


@dataclass(frozen=True)
class Attachment:
    """One interface of a workload on a network.

    `kind` "veth": the workload has a namespace of its own (`namespace`) holding `ifname`
    with `address`, its other end `port` on the network's bridge (a container).
    """

    workload_id: str
    kind: str
    netid: str
    network: str  # the network's name
    port: str  # the link on the network's bridge
    namespace: str  # where the workload's side is
    address: IPv4Interface  # the workload's address, with the subnet's prefix
    gateway: IPv4Address
    ifname: str = "eth0"
    mac: str = ""  # set by kinds whose guest has its own NIC

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["address"], raw["gateway"] = str(self.address), str(self.gateway)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Attachment:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["address"] = IPv4Interface(values["address"])
        values["gateway"] = IPv4Address(values["gateway"])
        return cls(**values)


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


class NetworkState:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "networks"

    def _network(self, netid: str) -> Path:
        return self.dir / f"{netid}.json"

    def _attachments(self, netid: str) -> Path:
        return self.dir / "attachments" / netid

    def netids(self) -> list[str]:
        return [p.stem for p in sorted(self.dir.glob("*.json"))] if self.dir.is_dir() else []

    def load(self, netid: str) -> NetworkInfo | None:
        try:
            raw = json.loads(self._network(netid).read_text())
        except FileNotFoundError:
            return None
        return NetworkInfo(**raw)

    def infos(self) -> list[NetworkInfo]:
        return [info for netid in self.netids() if (info := self.load(netid)) is not None]

    def save(self, info: NetworkInfo) -> None:
        _write(self._network(info.netid), asdict(info))

    def forget(self, netid: str) -> None:
        self._network(netid).unlink(missing_ok=True)

    def attachments(self, netid: str) -> list[Attachment]:
        directory = self._attachments(netid)
        if not directory.is_dir():
            return []
        return [
            Attachment.from_json(json.loads(p.read_text()))
            for p in sorted(directory.glob("*.json"))
        ]

    def record(self, attachment: Attachment) -> None:
        path = self._attachments(attachment.netid) / f"{attachment.workload_id}.json"
        _write(path, attachment.to_json())

    def drop(self, netid: str, workload_id: str) -> None:
        directory = self._attachments(netid)
        (directory / f"{workload_id}.json").unlink(missing_ok=True)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
