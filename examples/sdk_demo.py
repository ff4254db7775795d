"""The SDK example from the README: deploy, list, read logs and remove, from Python.

Run it after `zos grid up` (or scripts/demo):  .venv/bin/python examples/sdk_demo.py
"""

import asyncio
import urllib.request
from pathlib import Path

from zos.client import GridClient

MANIFEST = Path(__file__).parent / "hello" / "app.yaml"


async def main() -> None:
    # Finds the grid (ZOS_NATS, or the local grid's state) and your key (`zos key new`).
    grid = await GridClient.connect()
    try:
        for node in await grid.nodes(status="up"):
            print(f"node {node.id}: {node.free.mru >> 20} MiB free")

        app = await grid.deploy(
            MANIFEST, progress=lambda name, kind, state, msg: print(name, state)
        )
        url = app.machines[0].urls[0]
        print(f"{app.name} on node {app.node_id}: {url}")
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        print(next(line for line in page.splitlines() if "<h1>" in line))

        for d in await grid.ps():
            print(d.name, d.state, [(m.name, m.ip) for m in d.machines])
        async for text in grid.logs("hello"):
            print(text, end="")

        await grid.rm("hello")
    finally:
        await grid.close()


if __name__ == "__main__":
    asyncio.run(main())
