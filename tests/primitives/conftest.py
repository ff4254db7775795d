"""Fixtures shared by the primitives' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zos.primitives import filesystem, loop
from zos.primitives.command import run


@pytest.fixture
async def workdir(tmp_path: Path) -> AsyncIterator[Path]:
    """A directory whose mounts and loop devices are all removed afterwards, even on failure."""
    yield tmp_path
    for m in reversed(filesystem.mounts_under(tmp_path)):
        await run("umount", "-l", str(m.target), check=False)
    for dev in loop.devices_under(tmp_path):
        await run("losetup", "-d", dev, check=False)
