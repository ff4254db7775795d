"""The log daemon: FIFOs drained into bounded ring files, offsets that survive rotation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zos.primitives import logd


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "logs"
    try:
        yield r
    finally:
        logd.stop_daemon(r)
        assert not logd.running(r)


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_bounded_ring_and_offsets(root: Path) -> None:
    cap = 1000
    logd.ensure_daemon(root, cap)
    logd.ensure_daemon(root, cap)  # one daemon per root
    directory = root / "c1"
    fd = logd.open_output(directory)  # what a container's stdout/stderr would be
    try:
        written = b""
        offset = 0
        seen = b""
        for i in range(60):
            line = f"line {i:04d} ".encode() + b"x" * 89 + b"\n"  # 100 bytes
            os.write(fd, line)
            written += line
            if i % 7 == 0:
                total = len(written)
                wait_for(lambda: logd.read_from(directory, 0)[1] == total)  # noqa: B023
                chunk, offset = logd.read_from(directory, offset)
                seen += chunk
        wait_for(lambda: logd.read_from(directory, 0)[1] == len(written))
        chunk, offset = logd.read_from(directory, offset)
        seen += chunk
    finally:
        os.close(fd)
    assert offset == len(written) == 6000
    # read often enough: everything once, in order, across rotations
    assert seen == written
    kept = logd.read(directory)
    assert len(kept) <= 2 * cap and written.endswith(kept)
    # a reader far behind gets the oldest kept byte on, and the right next offset
    data, after = logd.read_from(directory, 0)
    assert data == kept and after == 6000
    assert logd.read_from(directory, 6000) == (b"", 6000)


def test_daemon_gone_writer_keeps_running(root: Path) -> None:
    logd.ensure_daemon(root, 4096)
    directory = root / "c2"
    fd = logd.open_output(directory)
    try:
        os.write(fd, b"before\n")
        wait_for(lambda: logd.read(directory) == b"before\n")
        logd.stop_daemon(root)
        # nobody drains the FIFO: a write still succeeds (it holds its own read end)
        os.write(fd, b"while down\n")
        logd.ensure_daemon(root, 4096)
        wait_for(lambda: logd.read(directory) == b"before\nwhile down\n")
    finally:
        os.close(fd)
