"""What this node offers and what its deployments use, in zos capacity units.

Memory and disk are never overbooked; cores may be (zos does the same). Memory keeps
a system reserve of max(10 % of RAM, 2 GiB) unless the farmer says how much to offer.
The disk is one pool: SSD (sru) and HDD (hru) units both come from the filesystem
holding the data directory.
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
        total = Capacity(
            cru=cores or m.cores, mru=memory or m.memory, sru=disk_total, hru=0, ipv4u=0
        )
        system = Capacity(mru=0 if memory else memory_reserve(m.memory), sru=disk_system)
        return cls(total=total, system=system)

    def shortfall(self, used: Capacity, wanted: Capacity) -> list[str]:
        """What is missing to add `wanted` on top of `used`; empty when it fits."""
        free = self.usable - used
        short = []
        if wanted.mru > free.mru:
            short.append(f"memory: needs {wanted.mru} bytes, {max(free.mru, 0)} free")
        disk_wanted, disk_free = wanted.sru + wanted.hru, free.sru - used.hru
        if disk_wanted > disk_free:
            short.append(f"disk: needs {disk_wanted} bytes, {max(disk_free, 0)} free")
        return short
