"""Bounded container logs that outlive the agent.

A container's stdout and stderr are a FIFO (`<root>/<id>/fifo`) that the container
holds open read-write, so a write never fails for want of a reader: at worst it waits
for room in the (1 MiB) pipe. One small daemon per node (this file run as a script,
standard library only, not the agent's child for long: it runs in its own session)
drains every FIFO under `<root>` into ring files `current` + `previous`, each at most
CAP bytes. It holds `<root>/logd.lock` while it lives: that lock is how the agent knows
whether to start one.

Reading (`read`, `follow`) is done by the agent from the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

CAP = 1024 * 1024
PIPE_SIZE = 1024 * 1024
SCAN_INTERVAL = 0.5
F_SETPIPE_SZ = 1031
LOCK = "logd.lock"
PID = "logd.pid"


# ---- the daemon ---------------------------------------------------------------------


class _Sink:
    def __init__(self, directory: Path, cap: int) -> None:
        self.dir = directory
        self.cap = cap
        self.fd = os.open(directory / "fifo", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.out = open(directory / "current", "ab")  # noqa: SIM115 - lives as long as the sink

    def drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.write(chunk)

    def write(self, chunk: bytes) -> None:
        while chunk:
            room = self.cap - self.out.tell()
            if room <= 0:
                self.rotate()
                continue
            self.out.write(chunk[:room])
            chunk = chunk[room:]
        self.out.flush()

    def rotate(self) -> None:
        # `base` = how many bytes were ever logged before `current`: readers keep offsets.
        base = read_base(self.dir) + self.out.tell()
        self.out.close()
        # While `base.next` exists a reader retries: files and base may not match yet.
        pending = self.dir / "base.next"
        pending.write_text(str(base))
        os.replace(self.dir / "current", self.dir / "previous")
        self.out = open(self.dir / "current", "ab")  # noqa: SIM115
        os.replace(pending, self.dir / "base")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.out.close()


def serve(root: Path, cap: int = CAP) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another daemon serves this root
    (root / PID).write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sinks: dict[str, _Sink] = {}
    next_scan = 0.0
    poller = select.poll()
    by_fd: dict[int, _Sink] = {}
    while True:
        now = time.monotonic()
        if now >= next_scan:
            next_scan = now + SCAN_INTERVAL
            present = {d.name for d in root.iterdir() if (d / "fifo").exists()}
            for name in list(sinks):
                if name not in present:
                    sink = sinks.pop(name)
                    poller.unregister(sink.fd)
                    by_fd.pop(sink.fd, None)
                    sink.close()
            for name in present - sinks.keys():
                try:
                    sink = _Sink(root / name, cap)
                except OSError:
                    continue  # being removed right now
                sinks[name] = sink
                by_fd[sink.fd] = sink
                poller.register(sink.fd, select.POLLIN)
        for fd, _ in poller.poll(SCAN_INTERVAL * 1000):
            sink = by_fd.get(fd)
            if sink is not None:
                # Disk trouble: drop this chunk, keep serving the others.
                with contextlib.suppress(OSError):
                    sink.drain()


# ---- the agent's side ---------------------------------------------------------------


def running(root: Path) -> bool:
    """Whether a daemon holds the lock for `root`."""
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_daemon(root: Path, cap: int = CAP) -> None:
    """Start the daemon for `root` unless one runs. `-S`: no site-packages, a small process."""
    root.mkdir(parents=True, exist_ok=True)
    if running(root):
        return
    proc = subprocess.Popen(
        [sys.executable, "-S", __file__, str(root), str(cap)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + 5
    while not running(root):
        if proc.poll() is not None and not running(root):
            raise RuntimeError(f"log daemon for {root} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"log daemon for {root} did not start")
        time.sleep(0.01)
    # Reap it in the background if it ever exits while we live (no zombie).
    threading.Thread(target=proc.wait, daemon=True).start()


def stop_daemon(root: Path) -> None:
    try:
        pid = int((root / PID).read_text())
    except (OSError, ValueError):
        return
    if not running(root):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while running(root) and time.monotonic() < deadline:
        time.sleep(0.01)


def open_output(directory: Path) -> int:
    """Create the container's FIFO (if needed) and return a read-write fd for its stdio."""
    directory.mkdir(parents=True, exist_ok=True)
    fifo = directory / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    return fd


def read_base(directory: Path) -> int:
    try:
        return int((directory / "base").read_text())
    except (OSError, ValueError):
        return 0


def read_from(directory: Path, offset: int) -> tuple[bytes, int]:
    """Output from absolute `offset` on (or from the oldest byte still kept) and the offset
    after it. Offsets count every byte ever logged, so a reader survives rotations."""
    for _ in range(100):
        base = read_base(directory)
        prev = _size(directory / "previous")
        data = read(directory)
        rotating = (directory / "base.next").exists()
        if not rotating and read_base(directory) == base and _size(directory / "previous") == prev:
            start = base - prev
            skip = max(offset - start, 0)
            return data[skip:], start + len(data)
        time.sleep(0.001)
    raise RuntimeError(f"{directory}: log rotating too fast to read")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read(directory: Path) -> bytes:
    out = b""
    for name in ("previous", "current"):
        with contextlib.suppress(FileNotFoundError):
            out += (directory / name).read_bytes()
    return out


async def follow(directory: Path, interval: float = 0.2) -> AsyncIterator[bytes]:
    """What is logged so far, then new output as it comes; ends when the log is removed."""
    import asyncio  # here: the daemon itself never needs it

    current = directory / "current"
    with contextlib.suppress(FileNotFoundError):
        prev = (directory / "previous").read_bytes()
        if prev:
            yield prev
    fh = None
    inode = None
    try:
        while True:
            if fh is None:
                try:
                    fh = open(current, "rb")  # noqa: SIM115
                    inode = os.fstat(fh.fileno()).st_ino
                except FileNotFoundError:
                    if not directory.exists():
                        return
                    await asyncio.sleep(interval)
                    continue
            chunk = fh.read(65536)
            if chunk:
                yield chunk
                continue
            try:
                rotated = os.stat(current).st_ino != inode
            except FileNotFoundError:
                rotated = True
            if rotated:
                # Finish the old file (now `previous`), then move to the new one.
                rest = fh.read()
                if rest:
                    yield rest
                fh.close()
                fh = None
                if not directory.exists():
                    return
                continue
            await asyncio.sleep(interval)
    finally:
        if fh is not None:
            fh.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else CAP)
