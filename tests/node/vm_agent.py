"""An "agent" for the VM runtime test: run as a script, it provisions one zmachine on a
node's data directory with the node's managers, prints QEMU's pid once the machine is
running, and waits for SIGKILL (`python vm_agent.py '<json>'`)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from netzm_helpers import ctx

from zos.gridtypes import Deployment
from zos.node.workloads.base import NodeServices
from zos.node.workloads.zmachine import ZMachineManager


def start(node: NodeServices, dep: Deployment, name: str) -> subprocess.Popen[str]:
    settings = {
        "data_dir": str(node.data_dir),
        "local_flists": [str(p) for p in node.local_flists],
        "deployment": dep.to_dict(),
        "name": name,
    }
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(settings)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def _agent(settings: dict[str, Any]) -> None:
    node = NodeServices(
        data_dir=Path(settings["data_dir"]),
        local_flists=tuple(Path(p) for p in settings["local_flists"]),
    )
    dep = Deployment.from_dict(settings["deployment"])
    zm = ZMachineManager(node)
    wid = (await zm.provision(ctx(node, dep, settings["name"])))["id"]
    stats = await zm.stats(wid)
    print(stats.pid if stats else 0, flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(_agent(json.loads(sys.argv[1])))
