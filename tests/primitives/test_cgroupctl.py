"""A cgroup made for a host process: limits read back as the kernel sees them, a process
that joins it before it execs, removal once it is empty."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from zos.primitives import cgroups
from zos.primitives.cgroupctl import Cgroup
from zos.primitives.cgroups import CgroupError

pytestmark = [pytest.mark.root]
MiB = 1 << 20
JOIN = 'for f; do echo $$ > "$f"; done; echo joined; exec sleep 1000'


@pytest.fixture
def cgroup() -> Iterator[Cgroup]:
    cg = Cgroup(f"zt-cg-{os.getpid()}")
    try:
        yield cg
    finally:
        for pid in cg.pids():
            os.kill(pid, 9)
        if cg.exists():
            cg.remove()


def test_limits_hold_for_a_process_that_joins(cgroup: Cgroup) -> None:
    cgroup.create(memory=300 * MiB, cpus=1.5, pids=64)
    files = [str(f) for f in cgroup.procs_files()]
    proc = subprocess.Popen(["sh", "-c", JOIN, "join", *files], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"joined\n"
        assert cgroup.pids() == [proc.pid]
        got = cgroups.limits(proc.pid)
        assert got.memory == 300 * MiB and got.cpus == 1.5
        # Shrinking and growing both work (v1 keeps memsw >= memory: the order matters).
        cgroup.create(memory=200 * MiB, cpus=1, pids=64)
        assert cgroups.limits(proc.pid).memory == 200 * MiB
        cgroup.create(memory=400 * MiB, cpus=2, pids=64)
        assert cgroups.limits(proc.pid).memory == 400 * MiB
        assert cgroups.limits(proc.pid).cpus == 2
        with pytest.raises(CgroupError, match="cannot remove"):
            cgroup.remove(timeout=0.1)  # a cgroup with a process in it stays
    finally:
        proc.kill()
        proc.wait()
    cgroup.remove()
    assert not cgroup.exists()


def test_names_are_checked() -> None:
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        Cgroup("../escape")
