"""Make a cgroup with limits for a process the agent starts itself (a VM's QEMU).

runc makes the cgroups of containers; a host process needs its own. It lives where
runc puts containers (`zos/<name>` under the agent's own cgroup, in each hierarchy of
cgroups v1, or once in v2), so a machine is accounted the same whichever runtime runs
it. A process joins it before it execs (see `procs_files`): nothing it allocates is
charged elsewhere first. Reading limits and usage stays in `zos.primitives.cgroups`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from zos.primitives.cgroups import CgroupError, controller_dir

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
CPU_PERIOD = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


@dataclass(frozen=True)
class Cgroup:
    name: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise CgroupError(f"invalid cgroup name {self.name!r}")

    def dirs(self) -> list[Path]:
        """One directory per hierarchy (v1: each controller's; v2: the one cgroup)."""
        found: list[Path] = []
        for ctrl in CONTROLLERS:
            try:
                d = controller_dir(os.getpid(), ctrl) / "zos" / self.name
            except CgroupError:
                continue  # this controller is not mounted here
            if d not in found:
                found.append(d)
        if not found:
            raise CgroupError("no cgroup hierarchy is mounted")
        return found

    def create(self, memory: int, cpus: float, pids: int = 4096) -> None:
        """Make the cgroup (or update it): at most `memory` bytes (no swap), `cpus`
        CPUs of time, `pids` tasks."""
        for d in self.dirs():
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {d}: {exc.strerror}") from exc
            if (d / "cgroup.controllers").exists():
                self._limit_v2(d, memory, cpus, pids)
            else:
                self._limit_v1(d, memory, cpus, pids)

    @staticmethod
    def _write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc

    def _limit_v1(self, d: Path, memory: int, cpus: float, pids: int) -> None:
        if (d / "memory.limit_in_bytes").exists():
            # memsw must stay >= the memory limit: order the writes by direction.
            swap = d / "memory.memsw.limit_in_bytes"
            files = [d / "memory.limit_in_bytes"] + ([swap] if swap.exists() else [])
            current = int((d / "memory.limit_in_bytes").read_text())
            for f in files if memory <= current else reversed(files):
                self._write(f, str(memory))
        if (d / "cpu.cfs_quota_us").exists():
            self._write(d / "cpu.cfs_period_us", str(CPU_PERIOD))
            self._write(d / "cpu.cfs_quota_us", str(int(cpus * CPU_PERIOD)))
        if (d / "pids.max").exists():
            self._write(d / "pids.max", str(pids))

    def _limit_v2(self, d: Path, memory: int, cpus: float, pids: int) -> None:
        for parent in (d.parent.parent, d.parent):
            with contextlib.suppress(OSError):  # a parent that holds processes refuses
                (parent / "cgroup.subtree_control").write_text("+memory +cpu +pids")
        self._write(d / "memory.max", str(memory))
        if (d / "memory.swap.max").exists():
            self._write(d / "memory.swap.max", "0")
        self._write(d / "cpu.max", f"{int(cpus * CPU_PERIOD)} {CPU_PERIOD}")
        self._write(d / "pids.max", str(pids))

    def procs_files(self) -> list[Path]:
        """The `cgroup.procs` files a process writes its pid to, to join."""
        return [d / "cgroup.procs" for d in self.dirs()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for f in self.procs_files():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in f.read_text().split())
        return sorted(found)

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the cgroup once its processes are gone (the kernel needs a moment)."""
        for d in self.dirs():
            deadline = time.monotonic() + timeout
            while d.is_dir():
                try:
                    d.rmdir()
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {d}: {exc.strerror}") from exc
                    time.sleep(0.02)
