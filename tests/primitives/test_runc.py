"""runc bundles and containers: limits, namespaces, mounts, state, delete."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zos.primitives import cgroups, netns
from zos.primitives.runc import (
    CAPABILITIES,
    BindMount,
    ContainerSpec,
    Runc,
    RuncError,
    build_config,
    write_bundle,
)

pytestmark = [pytest.mark.runc]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Output:
    """A container's stdout and stderr as a pipe: the test reads what it prints as it
    prints it (an event), instead of polling a file until it appears."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.text = ""

    def close_write(self) -> None:
        """After the container started: from now on only it holds the write end."""
        os.close(self.write_fd)

    def reached(self, marker: str) -> bool:
        """Whether a whole line starting with `marker` has been read."""
        return any(
            line.startswith(marker) and line.endswith("\n")
            for line in self.text.splitlines(keepends=True)
        )

    async def until(self, marker: str) -> str:
        """Everything up to and including the line starting with `marker` (or to the end,
        when the container exits first: then the assertion on what it said fails)."""
        while not self.reached(marker):
            chunk = await asyncio.to_thread(os.read, self.read_fd, 65536)
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text

    def close(self) -> None:
        os.close(self.read_fd)


@pytest.fixture
async def runc(tmp_path: Path) -> AsyncIterator[Runc]:
    r = Runc(root=tmp_path / "runc-state")
    try:
        yield r
    finally:
        for c in await r.list():
            await r.delete(c["id"])


@pytest.fixture
def rootfs(tmp_path: Path, busybox_rootfs: Path) -> Path:
    dst = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, dst, symlinks=True)
    return dst


def test_config_is_locked_down(tmp_path: Path) -> None:
    spec = ContainerSpec(
        id="c1", rootfs=tmp_path, args=["sh"], cpu=2, memory=300 << 20, netns=Path("/x/y")
    )
    cfg = build_config(spec)
    proc = cfg["process"]
    assert proc["noNewPrivileges"] is True
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in proc["capabilities"]["effective"]
    assert proc["capabilities"]["permitted"] == CAPABILITIES
    linux = cfg["linux"]
    assert {"type": "network", "path": "/x/y"} in linux["namespaces"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    assert linux["resources"]["cpu"] == {"quota": 200000, "period": 100000}
    assert linux["resources"]["memory"]["limit"] == 300 << 20
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    with pytest.raises(RuncError, match="invalid container id"):
        build_config(ContainerSpec(id="../x", rootfs=tmp_path, args=["sh"]))
    with pytest.raises(RuncError, match="needs a command"):
        build_config(ContainerSpec(id="ok", rootfs=tmp_path, args=[]))


async def test_container_limits_mounts_and_isolation(
    tmp_path: Path, runc: Runc, rootfs: Path
) -> None:
    cid = f"t-{uuid.uuid4().hex[:8]}"
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "hello.txt").write_text("from the host")
    out = Output()
    spec = ContainerSpec(
        id=cid,
        rootfs=rootfs,
        args=[
            "sh",
            "-c",
            "cat /data/hello.txt; echo; echo $GREETING; hostname; ls /proc | grep -c '^[0-9]';"
            " echo done > /data/written; echo END; sleep 30",
        ],
        env={"GREETING": "hi there"},
        hostname="box1",
        cpu=1.5,
        memory=64 << 20,
        mounts=[BindMount(vol, "/data")],
    )
    bundle = tmp_path / "bundle"
    write_bundle(bundle, spec)
    try:
        pid = await runc.run_detached(cid, bundle, out.write_fd)
    finally:
        out.close_write()
    state = await runc.state(cid)
    assert state is not None and state["status"] == "running" and state["pid"] == pid
    assert [c["id"] for c in await runc.list()] == [cid]
    limits = cgroups.limits(pid)
    assert limits.memory == 64 << 20
    assert limits.cpu_quota == 150000 and limits.cpu_period == 100000
    assert cgroups.usage(pid).memory > 0
    lines = (await out.until("END")).splitlines()
    out.close()
    assert (vol / "written").read_text() == "done\n"
    # the volume, env and hostname; only its own processes (sh, ls, grep) under /proc
    assert lines[:3] == ["from the host", "hi there", "box1"]
    assert int(lines[3]) <= 4
    assert lines[4:] == ["END"]  # it ran to the end, and is still running (sleep)
    # its own network namespace (fresh one: only lo)
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    cgroup_dir = cgroups.controller_dir(pid, "memory")
    await runc.delete(cid)
    assert await runc.state(cid) is None
    assert not alive(pid)
    assert not cgroup_dir.exists()
    await runc.delete(cid)  # idempotent


@pytest.mark.netns
async def test_container_joins_named_netns(tmp_path: Path, runc: Runc, rootfs: Path) -> None:
    ns = f"zt-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(netns.create, ns)
    try:
        cid = f"t-{uuid.uuid4().hex[:8]}"
        bundle = tmp_path / "b"
        write_bundle(
            bundle, ContainerSpec(id=cid, rootfs=rootfs, args=["sleep", "30"], netns=netns.path(ns))
        )
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            pid = await runc.run_detached(cid, bundle, fd)
        finally:
            os.close(fd)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.path(ns)).st_ino
    finally:
        await runc.delete(cid)
        await asyncio.to_thread(netns.delete, ns)


async def test_run_failure_is_a_clear_error(tmp_path: Path, runc: Runc, rootfs: Path) -> None:
    bundle = tmp_path / "b"
    write_bundle(bundle, ContainerSpec(id="bad1", rootfs=rootfs, args=["/no/such/binary"]))
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        with pytest.raises(RuncError, match="no such file"):
            await runc.run_detached("bad1", bundle, fd)
    finally:
        os.close(fd)


async def output_of(runc: Runc, tmp_path: Path, rootfs: Path, args: list[str], until: str) -> str:
    """Run `args` in a fresh container; its output up to the line starting with `until`
    (asserted to come)."""
    cid = f"t-{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / f"b-{cid}"
    write_bundle(bundle, ContainerSpec(id=cid, rootfs=rootfs, args=args))
    out = Output()
    try:
        await runc.run_detached(cid, bundle, out.write_fd)
    finally:
        out.close_write()
    try:
        text = await out.until(until)
    finally:
        out.close()
    assert out.reached(until), text
    return text


async def test_no_host_devices_no_new_namespaces(tmp_path: Path, runc: Runc, rootfs: Path) -> None:
    script = (
        "ls /dev | tr '\\n' ' '; echo;"
        " unshare -U true && echo USERNS-OK || echo USERNS-DENIED;"
        " unshare -n true && echo NETNS-OK || echo NETNS-DENIED;"
        " mount -t tmpfs x /mnt && echo MOUNT-OK || echo MOUNT-DENIED;"
        " (sleep 0; echo FORK-OK); echo 1 > /proc/sys/vm/drop_caches && echo SYSCTL-OK;"
        " echo END"
    )
    text = await output_of(runc, tmp_path, rootfs, ["sh", "-c", script], until="END")
    devices = set(text.splitlines()[0].split())
    # runc's minimal set only: no disks, no /dev/mem, no kmsg
    assert devices <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "ptmx",
        "shm",
        "mqueue",
        "console",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "core",
    }
    assert "USERNS-DENIED" in text and "NETNS-DENIED" in text and "MOUNT-DENIED" in text
    assert "FORK-OK" in text and "SYSCTL-OK" not in text


URING = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    char params[120];
    memset(params, 0, sizeof params);
    long fd = syscall(__NR_io_uring_setup, 1, params);
    if (fd < 0) printf("IO_URING-DENIED errno=%d\n", errno);
    else printf("IO_URING-OK\n");
    return 0;
}
"""


def build_static(tmp_path: Path, rootfs: Path, name: str, source: str) -> None:
    """Compile C `source` statically into the container's /bin/<name>."""
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    built = subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(rootfs / "bin" / name), str(src)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr


async def test_io_uring_is_denied(tmp_path: Path, runc: Runc, rootfs: Path) -> None:
    # Issue 12, finding 11: the seccomp profile allowed io_uring (Docker's default profile
    # denies it: a large kernel surface, and it bypasses per-syscall filtering).
    build_static(tmp_path, rootfs, "uring", URING)
    text = await output_of(runc, tmp_path, rootfs, ["/bin/uring"], until="IO_URING")
    assert text.strip() == "IO_URING-DENIED errno=1"  # EPERM, as Docker answers


FSCRYPT_IOCTLS = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    unsigned long requests[] = {%s};
    char arg[256];
    int fd = open("/", O_RDONLY);
    for (unsigned i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        for (int high = 0; high < 2; high++) {
            memset(arg, 0, sizeof arg);
            /* the kernel reads the request as 32 bits: bits above must not slip past */
            long r = syscall(__NR_ioctl, fd, requests[i] | (high ? 0x100000000UL : 0), arg);
            printf("%%lx%%s errno=%%d\n", requests[i], high ? "+high" : "", r < 0 ? errno : 0);
        }
    }
    printf("FSCRYPT-DONE\n");
    return 0;
}
"""


async def test_fscrypt_key_ioctls_are_denied(tmp_path: Path, runc: Runc, rootfs: Path) -> None:
    # The node's uid 0 holds the keys of encrypted volumes: a container's root would share
    # its claim, and could remove the key of its own (or a teammate's) volume.
    from zos.primitives import fscrypt

    requests = ", ".join(f"{r:#x}UL" for r in fscrypt.KEY_IOCTLS)
    build_static(tmp_path, rootfs, "fscrypt", FSCRYPT_IOCTLS % requests)
    text = await output_of(runc, tmp_path, rootfs, ["/bin/fscrypt"], until="FSCRYPT-DONE")
    lines = [line for line in text.splitlines() if "errno=" in line]
    assert len(lines) == 2 * len(fscrypt.KEY_IOCTLS)
    assert all(line.endswith("errno=1") for line in lines), text  # EPERM from seccomp
