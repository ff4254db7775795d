"""Keep detached runc containers running: restart a crashed entrypoint with back-off.

The agent is not the containers' parent (they run detached), so it learns of an exit
through a pidfd on the container's init, watched by the event loop: no polling. After
an agent restart, `ensure` finds a container again by id (`runc state`) and watches it;
a container that stopped while nobody watched is restarted.

Output goes through `zos.primitives.logd` (bounded ring files, written by a daemon
that does not die with the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from zos.primitives import logd
from zos.primitives.runc import Runc

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    base: float = 1.0  # first delay after a crash, seconds
    cap: float = 60.0  # longest delay
    stable: float = 30.0  # a run this long resets the delay

    def delay(self, failures: int) -> float:
        return min(self.base * (2 ** max(failures - 1, 0)), self.cap)

    async def wait(self, failures: int) -> None:
        """Wait out the delay before the next restart (a test can see and hold it)."""
        await asyncio.sleep(self.delay(failures))


@dataclass
class _Watch:
    bundle: Path
    pid: int = 0
    pidfd: int = -1
    started: float = field(default_factory=time.monotonic)
    failures: int = 0
    restarts: int = 0
    task: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(self, runc: Runc, logs_root: Path, backoff: Backoff | None = None) -> None:
        self.runc = runc
        self.logs_root = logs_root
        self.backoff = backoff or Backoff()
        self._watches: dict[str, _Watch] = {}

    def log_dir(self, cid: str) -> Path:
        return self.logs_root / cid

    def watched(self) -> list[str]:
        return sorted(self._watches)

    def restarts(self, cid: str) -> int:
        w = self._watches.get(cid)
        return w.restarts if w else 0

    def pid(self, cid: str) -> int | None:
        w = self._watches.get(cid)
        return w.pid if w and w.pid else None

    async def ensure(self, cid: str, bundle: Path) -> int:
        """Running and watched: attach to the container if it runs, (re)start it otherwise."""
        await asyncio.to_thread(logd.ensure_daemon, self.logs_root)
        state = await self.runc.state(cid)
        if state and state.get("status") == "running" and state.get("pid"):
            pid = int(state["pid"])
            self._watch(cid, bundle, pid)
            return pid
        if state is not None:
            await self.runc.delete(cid)
        return await self._start(cid, bundle)

    async def _start(self, cid: str, bundle: Path) -> int:
        fd = await asyncio.to_thread(logd.open_output, self.log_dir(cid))
        try:
            pid = await self.runc.run_detached(cid, bundle, fd)
        finally:
            os.close(fd)
        self._watch(cid, bundle, pid)
        return pid

    def _watch(self, cid: str, bundle: Path, pid: int) -> None:
        w = self._watches.get(cid)
        if w is None:
            w = self._watches[cid] = _Watch(bundle)
        if w.pid == pid and w.pidfd >= 0:
            return
        self._close_fd(w)
        w.bundle, w.pid, w.started = bundle, pid, time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            w.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(self._exited, cid)
            return
        loop.add_reader(w.pidfd, self._exited, cid)

    def _close_fd(self, w: _Watch) -> None:
        if w.pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = -1

    def _exited(self, cid: str) -> None:
        w = self._watches.get(cid)
        if w is None or (w.task and not w.task.done()):
            return
        self._close_fd(w)
        ran = time.monotonic() - w.started
        w.failures = 1 if ran >= self.backoff.stable else w.failures + 1
        log.info("container %s exited after %.1fs; restart #%d", cid, ran, w.restarts + 1)
        w.task = asyncio.get_running_loop().create_task(self._restart(cid, w))

    async def _restart(self, cid: str, w: _Watch) -> None:
        while self._watches.get(cid) is w:
            await self.backoff.wait(w.failures)
            if self._watches.get(cid) is not w:
                return
            if not (w.bundle / "config.json").exists():
                log.warning("container %s: its bundle is gone; no longer supervised", cid)
                self.forget(cid)
                return
            try:
                await self.runc.delete(cid)
                await asyncio.to_thread(logd.ensure_daemon, self.logs_root)
                w.restarts += 1
                w.pid = 0
                await self._start(cid, w.bundle)
                return
            except Exception as exc:  # keep trying, slower each time
                log.warning("restarting container %s failed: %s", cid, exc)
                w.failures += 1

    def forget(self, cid: str) -> None:
        """Stop watching `cid` (the container itself is left as it is)."""
        w = self._watches.pop(cid, None)
        if w is None:
            return
        self._close_fd(w)
        if w.task and not w.task.done() and w.task is not asyncio.current_task():
            w.task.cancel()

    async def stop(self, cid: str) -> None:
        """Stop watching and remove the container (its processes and cgroup)."""
        self.forget(cid)
        await self.runc.delete(cid)

    def close(self) -> None:
        """Let go of every container without stopping any (the agent is going away)."""
        for cid in list(self._watches):
            self.forget(cid)
