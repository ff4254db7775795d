"""Supervised detached containers: restart with back-off, bounded logs, re-attach."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangguard import HANG_GUARD
from zos.primitives import logd
from zos.primitives.runc import ContainerSpec, Runc, write_bundle
from zos.primitives.supervisor import Backoff, Supervisor

pytestmark = [pytest.mark.runc]


@pytest.fixture
async def env(tmp_path: Path, busybox_rootfs: Path) -> AsyncIterator[tuple[Runc, Path, Path]]:
    runc = Runc(root=tmp_path / "runc-state")
    logs = tmp_path / "logs"
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    try:
        yield runc, logs, rootfs
    finally:
        for c in await runc.list():
            await runc.delete(c["id"])
        await asyncio.to_thread(logd.stop_daemon, logs)


async def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


class HeldBackoff(Backoff):
    """Each wait before a restart is reported, then held until the test lets it go."""

    def __init__(self, **kw: float) -> None:
        super().__init__(**kw)
        self.waits: asyncio.Queue[tuple[float, asyncio.Event]] = asyncio.Queue()

    async def wait(self, failures: int) -> None:
        gate = asyncio.Event()
        await self.waits.put((self.delay(failures), gate))
        await gate.wait()

    async def next_wait(self) -> tuple[float, asyncio.Event]:
        # (a guard against a supervisor that never waits, not a timing)
        return await asyncio.wait_for(self.waits.get(), 60)


def pidfds() -> int:
    """How many pidfds this process holds."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:[pidfd]"
    return count


def crashing(
    env: tuple[Runc, Path, Path], tmp_path: Path, stable: float
) -> tuple[Runc, str, Path, HeldBackoff, Supervisor]:
    """A bundle of a container that exits at once, and a supervisor with a held back-off."""
    runc, logs, rootfs = env
    cid = f"s-{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / "bundle"
    write_bundle(bundle, ContainerSpec(id=cid, rootfs=rootfs, args=["sh", "-c", "exit 3"]))
    backoff = HeldBackoff(base=0.1, cap=0.4, stable=stable)
    return runc, cid, bundle, backoff, Supervisor(runc, logs, backoff)


def test_backoff_grows_and_caps() -> None:
    b = Backoff(base=1, cap=8)
    assert [b.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


async def test_backoff_waits_its_delay() -> None:
    with pytest.raises(TimeoutError):  # an hour cannot pass in a tenth of a second
        await asyncio.wait_for(Backoff(base=3600).wait(1), 0.1)


async def test_crash_restarts_only_after_its_backoff(
    env: tuple[Runc, Path, Path], tmp_path: Path
) -> None:
    """A container that keeps crashing: before each restart the supervisor waits, with
    a delay that doubles up to the cap, and while a wait is held it stays down."""
    runc, cid, bundle, backoff, sup = crashing(env, tmp_path, stable=30)
    delays = []
    held = pidfds()
    try:
        await sup.ensure(cid, bundle)
        for restarts in range(4):
            delay, gate = await backoff.next_wait()
            assert sup.restarts(cid) == restarts
            assert pidfds() == held  # the exited one's is closed (not left readable, polled)
            state = await runc.state(cid)
            assert state is not None and state["status"] == "stopped", state
            delays.append(delay)
            gate.set()
        await backoff.next_wait()  # the fourth restart ran, and crashed again
        assert sup.restarts(cid) == 4
    finally:
        await sup.stop(cid)
    assert delays == [0.1, 0.2, 0.4, 0.4]
    assert await runc.state(cid) is None


async def test_a_run_longer_than_stable_resets_the_backoff(
    env: tuple[Runc, Path, Path], tmp_path: Path
) -> None:
    _, cid, bundle, backoff, sup = crashing(env, tmp_path, stable=0)  # every run is stable
    delays = []
    try:
        await sup.ensure(cid, bundle)
        for _ in range(3):
            delay, gate = await backoff.next_wait()
            delays.append(delay)
            gate.set()
    finally:
        await sup.stop(cid)
    assert delays == [0.1, 0.1, 0.1]


async def test_after_a_stable_run_the_backoff_starts_again_from_its_base(
    env: tuple[Runc, Path, Path], tmp_path: Path
) -> None:
    """A run counted stable resets the count to one failure, not to none: the crash
    after it waits the base delay, and the quick crash after that twice as long."""
    _, cid, bundle, backoff, sup = crashing(env, tmp_path, stable=0)  # the first run: stable
    try:
        await sup.ensure(cid, bundle)
        first, gate = await backoff.next_wait()
        backoff.stable = 3600  # the runs after it are quick crashes
        gate.set()
        second, gate = await backoff.next_wait()
        gate.set()
    finally:
        await sup.stop(cid)
    assert (first, second) == (0.1, 0.2)


async def test_a_restart_revives_the_log_daemon_backs_off_when_it_fails_and_ends_with_the_bundle(
    env: tuple[Runc, Path, Path], tmp_path: Path
) -> None:
    """Before a restart the log daemon is started again if it died; a restart that fails
    (runc refuses the bundle) counts as one more failure, so the next wait is longer;
    and a container whose bundle is gone is no longer supervised."""
    _, cid, bundle, backoff, sup = crashing(env, tmp_path, stable=30)
    logs = env[1]
    backoff.cap = 10  # (the doubling stays visible)
    config = bundle / "config.json"
    good = config.read_bytes()
    delays = []
    try:
        await sup.ensure(cid, bundle)
        delay, gate = await backoff.next_wait()
        delays.append(delay)
        await asyncio.to_thread(logd.stop_daemon, logs)
        assert not logd.running(logs)
        gate.set()
        delay, gate = await backoff.next_wait()  # restarted (with its log daemon), crashed
        delays.append(delay)
        assert logd.running(logs) and sup.restarts(cid) == 1
        config.write_text("{}")  # runc refuses it
        gate.set()
        delay, gate = await backoff.next_wait()
        delays.append(delay)
        assert sup.restarts(cid) == 2  # (an attempt counts)
        config.write_bytes(good)
        gate.set()
        delay, gate = await backoff.next_wait()
        delays.append(delay)
        assert sup.restarts(cid) == 3
        config.unlink()
        gate.set()
        for _ in range(int(HANG_GUARD / 0.05)):
            if cid not in sup.watched():
                break
            await asyncio.sleep(0.05)
        assert cid not in sup.watched()
    finally:
        await sup.stop(cid)
    assert delays == [0.1, 0.2, 0.4, 0.8]


async def test_logs_are_bounded_and_followed(env: tuple[Runc, Path, Path], tmp_path: Path) -> None:
    runc, logs, rootfs = env
    cid = f"s-{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / "bundle"
    # ~3 MiB of output, then a marker, then idle
    script = (
        "i=0; while [ $i -lt 3000 ]; do printf '%01023d\\n' $i; i=$((i+1)); done;"
        " echo END; sleep 30"
    )
    write_bundle(bundle, ContainerSpec(id=cid, rootfs=rootfs, args=["sh", "-c", script]))
    sup = Supervisor(runc, logs)
    try:
        await sup.ensure(cid, bundle)
        directory = sup.log_dir(cid)
        await wait_for(lambda: logd.read(directory).endswith(b"END\n"), timeout=60)
        data = logd.read(directory)
        assert len(data) <= 2 * logd.CAP
        assert (directory / "previous").stat().st_size == logd.CAP
        got = b""
        agen = logd.follow(directory)
        async for chunk in agen:
            got += chunk
            if got.endswith(b"END\n"):
                break
        await agen.aclose()
        assert got.endswith(b"END\n")
    finally:
        await sup.stop(cid)


async def test_agent_restart_reattaches(env: tuple[Runc, Path, Path], tmp_path: Path) -> None:
    runc, logs, rootfs = env
    cid = f"s-{uuid.uuid4().hex[:8]}"
    bundle = tmp_path / "bundle"
    write_bundle(
        bundle,
        ContainerSpec(
            id=cid, rootfs=rootfs, args=["sh", "-c", "while true; do echo tick; sleep 0.2; done"]
        ),
    )
    first = Supervisor(runc, logs, Backoff(base=0.1))
    pid = await first.ensure(cid, bundle)
    first.close()  # the agent goes away; the container stays
    await asyncio.sleep(0.3)
    state = await runc.state(cid)
    assert state and state["status"] == "running" and state["pid"] == pid
    second = Supervisor(runc, logs, Backoff(base=0.1))
    try:
        assert await second.ensure(cid, bundle) == pid  # re-attached, not restarted
        before = logd.read(second.log_dir(cid)).count(b"tick")
        await wait_for(lambda: logd.read(second.log_dir(cid)).count(b"tick") > before)
        await runc.kill(cid)  # a crash: the new supervisor restarts it
        await wait_for(lambda: second.restarts(cid) == 1 and second.pid(cid) not in (None, pid))
        assert [c["id"] for c in await runc.list()] == [cid]
    finally:
        await second.stop(cid)
