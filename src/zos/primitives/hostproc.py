"""Keep one node-wide program running on the host (the zdb server): start, watch, restart.

The process runs in its own session, so it outlives the agent: a workload it serves
stays up while the agent restarts. A small state file records its pid, start time and
argv; the next agent finds it there and watches it again (a pid whose start time
differs is someone else's). An exit is learned through a pidfd, watched by the event
loop, and followed by a restart with back-off, until `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from zos.primitives.supervisor import Backoff

log = logging.getLogger(__name__)

LOG_LIMIT = 1 << 20  # the log starts over (keeping one old copy) past this size


class HostProcessError(Exception):
    """The program would not start or answer; the message carries the end of its log."""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of `pid`; None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int:
    """Clock ticks since boot when `pid` started; 0 if it is gone or a zombie."""
    got = _stat(pid)
    return 0 if got is None or got[0] == "Z" else got[1]


def _reap(pid: int) -> None:
    # Our own child stays a zombie until waited for; someone else's is not ours to wait.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _gone(pid: int, started: int) -> bool:
    """Whether the process `pid` started at `started` is gone, reaped if it was ours.

    Only that process is waited for, never one that has its pid since. Its zombie is
    gone once reaped, not before: a leader whose other threads are still exiting (QEMU's,
    under load) reads as a zombie that cannot be reaped yet."""
    got = _stat(pid)
    if got is None or got[1] != started:
        return True
    if got[0] != "Z":
        return False
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # someone else's zombie: dead, not ours to wait for
        return True


class HostProcess:
    def __init__(
        self,
        name: str,
        argv: list[str],
        state_file: Path,
        log_file: Path,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.state_file = state_file
        self.log_file = log_file
        self.backoff = backoff or Backoff(base=0.5, cap=30.0, stable=30.0)
        self.pid = 0
        self.restarts = 0
        self._started = 0  # start time (ticks) of `pid`
        self._pidfd = -1
        self._ran_since = 0.0
        self._failures = 0
        self._restart: asyncio.Task[None] | None = None

    # --- what runs ------------------------------------------------------------------------

    def alive(self) -> bool:
        return bool(self.pid) and start_time(self.pid) == self._started

    def _recorded(self) -> tuple[int, int, list[str]] | None:
        try:
            raw = json.loads(self.state_file.read_text())
            return int(raw["pid"]), int(raw["start_time"]), list(raw["argv"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def adopt(self) -> bool:
        """Watch the process an earlier agent started, if it still runs with our argv.

        One that runs with another argv (the settings changed) is stopped: it is
        replaced on the next `ensure`.
        """
        if self.alive():
            return True
        rec = self._recorded()
        if rec is None:
            return False
        pid, started, argv = rec
        if not started or start_time(pid) != started:
            self.state_file.unlink(missing_ok=True)
            return False
        if argv != self.argv:
            log.info("%s: pid %d runs with other settings; replacing it", self.name, pid)
            await asyncio.to_thread(self._terminate, pid, started)
            self.state_file.unlink(missing_ok=True)
            return False
        self._watch(pid, started)
        log.info("%s: found running as pid %d", self.name, pid)
        return True

    async def ensure(self, ready: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> int:
        """Running and answering `ready`: adopt it, or start it; its pid."""
        if self._restart is not None and not self._restart.done():
            self._restart.cancel()  # start now rather than after the back-off
            self._restart = None
        if not await self.adopt():
            self._spawn()
        deadline = time.monotonic() + timeout
        while not await ready():
            if not self.alive():
                tail = self.log_tail()
                raise HostProcessError(f"{self.name} exited at start: {tail or 'no output'}")
            if time.monotonic() > deadline:
                await self.stop()
                raise HostProcessError(f"{self.name} did not answer in {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return self.pid

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines()[-lines:] if line.strip())

    # --- start and watch ------------------------------------------------------------------

    def _spawn(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > LOG_LIMIT:
                os.replace(self.log_file, self.log_file.with_suffix(".old"))
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the agent; signals to its group miss it
            )
        started = start_time(proc.pid)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "start_time": started, "argv": self.argv}))
        os.replace(tmp, self.state_file)
        log.info("%s: started as pid %d", self.name, proc.pid)
        self._watch(proc.pid, started)

    def _watch(self, pid: int, started: int) -> None:
        self._unwatch()
        self.pid, self._started, self._ran_since = pid, started, time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(self._exited)
            return
        loop.add_reader(self._pidfd, self._exited)

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _exited(self) -> None:
        self._unwatch()
        pid, self.pid = self.pid, 0
        _reap(pid)
        ran = time.monotonic() - self._ran_since
        self._failures = 1 if ran >= self.backoff.stable else self._failures + 1
        log.warning("%s (pid %d) exited after %.1fs: %s", self.name, pid, ran, self.log_tail(2))
        self._restart = asyncio.get_running_loop().create_task(self._restart_later())

    async def _restart_later(self) -> None:
        await asyncio.sleep(self.backoff.delay(self._failures))
        try:
            self.restarts += 1
            self._spawn()
        except OSError as e:  # the next exit notice (none) would not come: try again later
            log.warning("%s: restart failed: %s", self.name, e)
            self._failures += 1
            self._restart = asyncio.get_running_loop().create_task(self._restart_later())

    # --- stop -----------------------------------------------------------------------------

    def _terminate(self, pid: int, started: int, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns when the process is gone."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if _gone(pid, started):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if _gone(pid, started):
                    return
                time.sleep(0.02)
        raise HostProcessError(f"{self.name} (pid {pid}) would not stop")

    async def stop(self) -> None:
        """Stop the process (this agent's or an earlier one's) and stop restarting it."""
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        self._unwatch()
        targets = {(self.pid, self._started)} if self.pid else set()
        rec = self._recorded()
        if rec is not None:
            targets.add(rec[:2])
        self.pid = 0
        for pid, started in targets:
            if started:
                await asyncio.to_thread(self._terminate, pid, started)
        self.state_file.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop watching, leave the process running (the agent is going away)."""
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        self._unwatch()
