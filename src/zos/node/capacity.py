"""What this node offers and what its deployments use, in zos capacity units.

Memory and disk are never overbooked; cores may be (zos does the same), though no one
machine gets more cores than the node has. Memory keeps a system reserve of max(10 % of
RAM, 2 GiB) unless the farmer says how much to offer. The disk holding the data
directory is offered as SSD units (sru), except the part the farmer offers as HDD units
(hru, what zdb namespaces take; none unless `--hdd` says). Capacity a node does not
offer at all (hru without `--hdd`, public IPv4) is refused, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zos.gridtypes.capacity import Capacity, GiB
from zos.primitives.capacity import measure
from zos.primitives.trees import allocated_bytes


def memory_reserve(total_memory: int) -> int:
    return max(total_memory // 10, 2 * GiB)


@dataclass(frozen=True)
class Offer:
    """`total` as measured (or offered), `system` held back for the node itself."""

    total: Capacity
    system: Capacity

    @property
    def usable(self) -> Capacity:
        return self.total - self.system

    @classmethod
    def measure(
        cls,
        data_dir: Path,
        cores: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        hdd: int | None = None,
    ) -> Offer:
        """Measure the machine; an offered amount replaces the measured one (and its reserve).

        Without an offer the disk counts only space that is free or already ours, so
        other users of the same filesystem are never promised away.
        """
        m = measure(data_dir)
        for name, offered, have in (("memory", memory, m.memory), ("disk", disk, m.disk)):
            if offered is not None and not 0 < offered <= have:
                raise ValueError(f"{name}: offered {offered} bytes, the machine has {have}")
        if cores is not None and cores <= 0:
            raise ValueError(f"cores: offered {cores}, must be at least 1")
        if disk is None:
            ours = allocated_bytes(data_dir / "storage")
            disk_total, disk_system = m.disk, max(0, m.disk - m.disk_free - ours)
        else:
            disk_total, disk_system = disk, 0
        hdd = hdd or 0
        if not 0 <= hdd <= disk_total - disk_system:
            raise ValueError(
                f"hdd: offered {hdd} bytes as HDD, the disk offers {disk_total - disk_system}"
            )
        total = Capacity(
            cru=cores or m.cores,
            mru=memory or m.memory,
            sru=disk_total - hdd,
            hru=hdd,
            ipv4u=0,
        )
        system = Capacity(mru=0 if memory else memory_reserve(m.memory), sru=disk_system)
        return cls(total=total, system=system)

    def shortfall(self, used: Capacity, wanted: Capacity) -> list[str]:
        """What is missing to add `wanted` on top of `used`; empty when it fits."""
        free = self.usable - used
        short = []
        if wanted.hru and not self.total.hru:
            short.append("hru: this node offers no HDD capacity (what zdb takes)")
        if wanted.ipv4u and not self.total.ipv4u:
            short.append("ipv4u: this node offers no public IPv4 addresses")
        if wanted.mru > free.mru:
            short.append(f"memory: needs {wanted.mru} bytes, {max(free.mru, 0)} free")
        if wanted.sru > free.sru:
            short.append(f"disk: needs {wanted.sru} bytes, {max(free.sru, 0)} free")
        if self.total.hru and wanted.hru > free.hru:
            short.append(f"hdd: needs {wanted.hru} bytes, {max(free.hru, 0)} free")
        return short

    def too_many_cores(self, wanted: int) -> str | None:
        """Why one machine cannot have `wanted` cores here (cores are shared, not split)."""
        if wanted > self.total.cru:
            return f"needs {wanted} cores, this node has {self.total.cru}"
        return None
