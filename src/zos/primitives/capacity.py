"""Measure what a machine has: cores, memory, and the disk of a directory's filesystem."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    cores: int
    memory: int  # bytes of RAM
    disk: int  # bytes of the filesystem holding the data directory
    disk_free: int


def memory_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def disk(path: Path) -> tuple[int, int]:
    """(total, free-for-unprivileged) bytes of the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def measure(data_dir: Path) -> Measured:
    total, free = disk(data_dir)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Measured(cores=cores or 1, memory=memory_total(), disk=total, disk_free=free)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listening_sockets(pid: int) -> list[str]:
    """Listening TCP and bound UDP sockets that process `pid` holds (e.g. ['tcp 0.0.0.0:80']).

    Matches the socket inodes among the process's open files against the kernel's
    socket tables in the process's own network namespace.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes: set[str] = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            # TCP state 0A is LISTEN; an unconnected UDP socket (07) takes datagrams from anyone.
            is_listening = state == ("0A" if proto.startswith("tcp") else "07")
            if inode in inodes and is_listening:
                found.append(f"{proto} {local}")
    return found
