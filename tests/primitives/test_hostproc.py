"""A node-wide host program kept running: started, found again by a new agent, restarted
when it dies, replaced when its settings change, stopped; and the node's own address."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from hangguard import HANG_GUARD
from zos.primitives import links, netns
from zos.primitives.hostaddr import primary_ipv4
from zos.primitives.hostproc import HostProcess, HostProcessError, start_time
from zos.primitives.supervisor import Backoff

FAST = Backoff(base=0.05, cap=0.2, stable=30.0)


async def _ready() -> bool:
    return True


async def _wait_for(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[object]:
    made: list[HostProcess] = []

    def new(*argv: str) -> HostProcess:
        p = HostProcess("sleeper", list(argv), tmp_path / "state.json", tmp_path / "p.log", FAST)
        made.append(p)
        return p

    try:
        yield new
    finally:
        for p in reversed(made):
            await p.stop()


def _recorded(tmp_path: Path) -> int | None:
    path = tmp_path / "state.json"
    return json.loads(path.read_text())["pid"] if path.exists() else None


async def test_found_again_restarted_replaced_stopped(make, tmp_path: Path) -> None:
    first = make("sleep", "60")
    pid = await first.ensure(_ready)
    assert first.alive() and _recorded(tmp_path) == pid
    started = start_time(pid)

    # A new agent (the old one went away without stopping it) finds the same process.
    first.close()
    second = make("sleep", "60")
    assert await second.adopt() and second.pid == pid
    assert await second.ensure(_ready) == pid

    # It dies: started again, the state file follows.
    os.kill(pid, signal.SIGKILL)
    await _wait_for(lambda: second.pid not in (0, pid) and second.alive())
    assert second.restarts == 1 and _recorded(tmp_path) == second.pid
    assert start_time(pid) != started
    second.close()

    # Other settings: the running one is stopped, not adopted; ensure starts the new one.
    old, old_started = second.pid, start_time(second.pid)
    third = make("sleep", "61")
    assert not await third.adopt()
    assert start_time(old) != old_started and _recorded(tmp_path) is None
    pid = await third.ensure(_ready)
    assert pid != old

    await third.stop()
    assert not third.alive() and _recorded(tmp_path) is None
    await asyncio.sleep(0.3)  # longer than the back-off: a stopped program stays stopped
    assert not third.alive() and _recorded(tmp_path) is None


async def test_a_program_that_will_not_start_says_why(make) -> None:
    broken = make("sh", "-c", "echo 'cannot bind 9900'; exit 3")

    async def never() -> bool:
        return False

    with pytest.raises(HostProcessError, match="exited at start: cannot bind 9900"):
        await broken.ensure(never)
    await broken.stop()


# Its main thread exits first (a zombie leader), one thread lives on until `flag` exists;
# SIGTERM stays pending meanwhile (blocked in every thread), as QEMU's exiting threads are.
LINGER = """
import ctypes, os, signal, sys, threading, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
def linger():
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    os._exit(0)
threading.Thread(target=linger).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


async def test_stop_returns_once_the_last_thread_is_gone_and_reaped(make, tmp_path: Path) -> None:
    """A zombie leader is not a gone process while its threads run: stop waits, and
    reaps it, rather than leave a zombie in /proc."""
    flag = tmp_path / "let-go"
    p = make(sys.executable, "-c", LINGER, str(flag))
    pid = await p.ensure(_ready)
    await _wait_for(lambda: _state(pid) == "Z", HANG_GUARD)  # the leader is out, not its thread
    stopping = asyncio.create_task(p.stop())
    await asyncio.sleep(0.2)
    flag.touch()
    await stopping
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.netns
def test_primary_address_is_the_default_route_source() -> None:
    name = f"zt-addr-{os.getpid()}"
    netns.create(name)
    try:
        assert netns.run_in(name, primary_ipv4) is None  # no route: no address to give
        links.ensure_bridge("br0", name)
        links.set_addresses("br0", [IPv4Interface("10.231.0.2/24")], name)
        links.set_up("br0", name)
        links.set_default_route(IPv4Address("10.231.0.1"), name)
        assert netns.run_in(name, primary_ipv4) == "10.231.0.2"
    finally:
        netns.delete(name)
