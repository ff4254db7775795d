"""Read a process's cgroup limits and usage (cgroups v1 or hybrid, and v2).

For tests (the limits a container really got) and statistics (what it uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CgroupError(Exception):
    pass


def _mounts() -> dict[str, tuple[str, Path]]:
    """controller (or "" for v2) -> (root inside the hierarchy, mountpoint)."""
    found: dict[str, tuple[str, Path]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        fstype = rfields[0]
        if fstype == "cgroup2":
            found.setdefault("", (fields[3], Path(fields[4])))
        elif fstype == "cgroup":
            for opt in rfields[2].split(","):
                found.setdefault(opt, (fields[3], Path(fields[4])))
    return found


def controller_dir(pid: int, controller: str) -> Path:
    """The directory of `pid`'s cgroup for `controller` (v1), or its v2 cgroup."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise CgroupError(f"process {pid} is gone") from exc
    mounts = _mounts()
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        key = controller if controller in ctrls.split(",") else None
        if key is None and ctrls == "" and controller not in mounts:
            key = ""
        if key is None or key not in mounts:
            continue
        root, mountpoint = mounts[key]
        rel = path[len(root) :] if root != "/" and path.startswith(root) else path
        return mountpoint / rel.lstrip("/")
    raise CgroupError(f"no {controller} cgroup for process {pid}")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {exc}") from exc


@dataclass
class Limits:
    memory: int | None  # bytes; None = unlimited
    cpu_quota: int | None  # microseconds per period; None = unlimited
    cpu_period: int

    @property
    def cpus(self) -> float | None:
        return None if self.cpu_quota is None else self.cpu_quota / self.cpu_period


def limits(pid: int) -> Limits:
    mem_dir = controller_dir(pid, "memory")
    cpu_dir = controller_dir(pid, "cpu")
    if (mem_dir / "memory.limit_in_bytes").exists():
        mem = int(_read(mem_dir / "memory.limit_in_bytes"))
        memory = None if mem >= 1 << 62 else mem
    else:
        raw = _read(mem_dir / "memory.max")
        memory = None if raw == "max" else int(raw)
    if (cpu_dir / "cpu.cfs_quota_us").exists():
        quota = int(_read(cpu_dir / "cpu.cfs_quota_us"))
        period = int(_read(cpu_dir / "cpu.cfs_period_us"))
        return Limits(memory, None if quota < 0 else quota, period)
    q, p = _read(cpu_dir / "cpu.max").split()
    return Limits(memory, None if q == "max" else int(q), int(p))


@dataclass
class Usage:
    memory: int  # bytes
    cpu_ns: int  # total CPU time used


def usage(pid: int) -> Usage:
    mem_dir = controller_dir(pid, "memory")
    if (mem_dir / "memory.usage_in_bytes").exists():
        memory = int(_read(mem_dir / "memory.usage_in_bytes"))
        cpu_ns = int(_read(controller_dir(pid, "cpuacct") / "cpuacct.usage"))
    else:
        memory = int(_read(mem_dir / "memory.current"))
        stat = dict(line.split() for line in _read(mem_dir / "cpu.stat").splitlines())
        cpu_ns = int(stat.get("usage_usec", 0)) * 1000
    return Usage(memory, cpu_ns)
