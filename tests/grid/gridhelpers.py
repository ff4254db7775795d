"""Helpers for local-grid tests: start one in a temporary state dir, check nothing is left."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from zos.grid import procs
from zos.grid.local import down
from zos.grid.state import GridState, grid_tag, load
from zos.primitives import filesystem, links, loop, netns

if TYPE_CHECKING:
    from zos.client import GridClient

MiB = 1 << 20
# A whole grid with containers: root, namespaces, runc and a real nats-server.
GRID_MARKS = [
    pytest.mark.root,
    pytest.mark.nats,
    pytest.mark.netns,
    pytest.mark.runc,
    pytest.mark.slow,
]


def quiet(_: str) -> None:
    pass


def leftovers(state_dir: Path, pids: list[int] | None = None) -> dict[str, Any]:
    """Namespaces, links, mounts, loop devices and processes of a grid that are still there."""
    tag = grid_tag(state_dir)
    alive = []
    for pid in pids or []:
        if procs.start_time(pid):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if stat != "Z":
                alive.append(pid)
    containers = [c.name for root in runc_roots(state_dir) for c in root.iterdir()]
    return {
        "containers": containers,
        "netns": netns.names(prefix=f"{tag}-"),
        "links": [n for n in links.names() if n and n.startswith(tag)],
        "mounts": [str(m.target) for m in filesystem.mounts_under(state_dir)],
        "loops": sorted(loop.devices_under(state_dir)),
        "pids": alive,
        "state_dir": state_dir.exists(),
    }


def runc_root(data_dir: Path) -> Path:
    """The runc root of the node whose data dir is `data_dir` (its zmachine manager's)."""
    key = hashlib.sha256(str(data_dir.resolve()).encode())
    return Path(f"/run/zos/runc-{key.hexdigest()[:12]}")


def runc_roots(state_dir: Path) -> list[Path]:
    """The zmachine managers' runc roots of the grid's nodes (that exist)."""
    roots = [runc_root(state_dir / "nodes" / f"node{i}") for i in range(1, 17)]
    return [root for root in roots if root.is_dir()]


NOTHING = {
    "containers": [],
    "netns": [],
    "links": [],
    "mounts": [],
    "loops": [],
    "pids": [],
    "state_dir": False,
}


def pids_of(state: GridState) -> list[int]:
    return [p.pid for p in state.procs]


def emergency_sweep(state_dir: Path) -> None:
    """After a failed test: whatever `zos grid down` may have missed."""
    state = load(state_dir) if state_dir.exists() else None
    for p in state.procs if state else []:
        procs.stop(p, timeout=5)
    tag = grid_tag(state_dir)
    for root in runc_roots(state_dir):
        for c in root.iterdir():
            subprocess.run(
                ["runc", "--root", str(root), "delete", "--force", c.name],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
    for m in reversed(filesystem.mounts_under(state_dir)):
        subprocess.run(["umount", "-l", str(m.target)], check=False, capture_output=True)
    for dev in loop.devices_under(state_dir):
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)
    for ns in netns.names(prefix=f"{tag}-"):
        netns.delete(ns)
    for name in links.names():
        if name and name.startswith(tag):
            links.delete(name)
    shutil.rmtree(state_dir, ignore_errors=True)


async def close_grid(state_dir: Path, clients: Sequence[GridClient | None]) -> None:
    """A module's grid at its end: the clients closed, `down`, nothing left behind (and
    swept if something is)."""
    for client in clients:
        if client is not None:
            await client.close()
    try:
        pids = pids_of(load(state_dir)) if (state_dir / "grid.json").exists() else []
        await asyncio.to_thread(down, state_dir, quiet)
        assert leftovers(state_dir, pids) == NOTHING
    finally:
        emergency_sweep(state_dir)


def web_rootfs(busybox_rootfs: Path, target: Path, page: str) -> Path:
    """A copy of the busybox rootfs with `page` as /www/index.html."""
    shutil.copytree(busybox_rootfs, target, symlinks=True)
    (target / "www").mkdir(exist_ok=True)
    (target / "www" / "index.html").write_text(page)
    return target


URL = re.compile(r"The example app: (http://\S+)")


def env_for(state_dir: Path, key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOS_")}
    env.update(ZOS_GRID_DIR=str(state_dir), ZOS_KEY_FILE=str(key_file))
    return env


def zos_cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zos.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
