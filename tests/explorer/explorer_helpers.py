"""Helpers of the explorer tests: registry models for snapshots, and the real
`zos explorer serve` in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from zos.registry import Capacity, Farm, Location, Node, PublicConfig

GiB = 1 << 30
URL_LINE = re.compile(r"explorer \((?P<who>[^)]*)\) at (?P<url>http://\S+)")


def farm(farm_id: int, name: str) -> Farm:
    return Farm(id=farm_id, name=name, owner_twin=1, created=1000.0)


def node(
    node_id: int,
    farm_id: int = 1,
    *,
    status: str = "up",
    mru: int = 8 * GiB,
    used_mru: int = 0,
    sru: int = 100 * GiB,
    used_sru: int = 0,
    cru: int = 4,
    domain: str = "",
    city: str = "",
    heartbeat: float = 2000.0,
) -> Node:
    return Node(
        id=node_id,
        farm_id=farm_id,
        twin_id=100 + node_id,
        capacity=Capacity(cru=cru, mru=mru, sru=sru),
        used=Capacity(mru=used_mru, sru=used_sru),
        location=Location(city=city, country="BE"),
        public_config=PublicConfig(domain=domain),
        created=1000.0,
        last_heartbeat=heartbeat,
        status=status,  # type: ignore[arg-type]
    )


class ExplorerProcess:
    """`zos explorer serve ...` in a subprocess; `url` is the address it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, wait: float = 60) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zos.cli",
                "explorer",
                "serve",
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        seen = []
        deadline = time.monotonic() + wait  # it prints its address after a first read
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = URL_LINE.search(line)
            if m:
                self.who, self.url = m["who"], m["url"]
                self.base = self.url.split("/session")[0]
                return
        self.stop()
        raise RuntimeError("zos explorer serve did not start:\n" + "".join(seen))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
