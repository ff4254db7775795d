"""Detached processes of the local grid: started in their own session, logs to files,
found again by pid and start time, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from zos.grid.state import Proc


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(proc: Proc) -> bool:
    now = start_time(proc.pid)
    if not now or (proc.start_time and now != proc.start_time):
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI; its own group to signal
            env={**os.environ, **(env or {})},
        )
    return Proc(name=name, pid=p.pid, start_time=start_time(p.pid), log=str(log), argv=argv)


def stop(proc: Proc, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL; a no-op when it is gone (or the pid is someone else's)."""
    if not alive(proc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not alive(proc):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(proc.pid)
        if not alive(proc):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # Our own child (when up and down run in one process, as in tests) would stay a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
