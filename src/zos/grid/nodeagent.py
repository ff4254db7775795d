"""A node agent as the local grid runs it: `zos node run` plus what a node sharing one
machine with others needs, wired in from outside the node package:

- the network and zmachine managers, a node-wide flist cache, and a prefix for every
  namespace the node makes (`netns_prefix`), so several nodes share /var/run/netns;
- `zos.zmachine.logs` on the bus (`zos.node.api_zmachine`), which the agent does not
  serve by itself yet.

`python -m zos.grid.nodeagent run ARGS...` takes the arguments of `zos node run` plus
`--netns-prefix`; `cleanup --data-dir D --netns-prefix P` removes everything that node
made (containers, mounts, namespaces), as `zos grid down` needs after the agent stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from zos.bus import Router
from zos.node.workloads import MANAGERS, NodeServices, register
from zos.node.workloads.network import NetworkManager
from zos.node.workloads.volume import VolumeManager
from zos.node.workloads.zmachine import ZMachineManager
from zos.node.workloads.zmount import ZMountManager

CACHE_BYTES = 4 << 30

log = logging.getLogger(__name__)


def _managers() -> None:
    for cls in (NetworkManager, ZMachineManager):
        if MANAGERS.get(cls.type) is None:
            register(cls)


def services(data_dir: Path, prefix: str, extra: dict[str, Any] | None = None) -> NodeServices:
    from zos.flist.cache import FlistCache

    wiring: dict[str, Any] = {
        "netns_prefix": prefix,
        "flist_cache": FlistCache(data_dir / "flist-cache", CACHE_BYTES),
    }
    return NodeServices(data_dir=data_dir, extra={**wiring, **(extra or {})})


def _wire(prefix: str) -> None:
    """Make the agent module build its services and router as a grid node needs."""
    import zos.node.agent as agent_mod

    _managers()
    plain_router = agent_mod.node_router

    def make_services(data_dir: Path, extra: dict[str, Any] | None = None) -> NodeServices:
        return services(Path(data_dir), prefix, extra)

    def make_router(engine: Any) -> Router:
        from zos.node.api_zmachine import zmachine_router

        router = plain_router(engine)
        if "zos.zmachine.logs" not in router.commands:
            router.include(zmachine_router(engine))
        return router

    agent_mod.NodeServices = make_services  # type: ignore[attr-defined,assignment]
    agent_mod.node_router = make_router  # type: ignore[attr-defined]


def run(argv: list[str]) -> int:
    from zos.cli import build_parser, main

    prefix = ""
    rest = []
    it = iter(argv)
    for a in it:
        if a == "--netns-prefix":
            prefix = next(it, "")
        else:
            rest.append(a)
    _wire(prefix)
    build_parser()  # fail early on bad arguments
    return main(["node", "run", *rest])


async def cleanup(data_dir: Path, prefix: str) -> None:
    """Remove every workload this node made; what its managers do for leftovers."""
    _managers()
    svc = services(data_dir, prefix)
    zm = ZMachineManager(svc)
    for manager in (zm, NetworkManager(svc), VolumeManager(svc), ZMountManager(svc)):
        try:
            await manager.cleanup(set())
        except Exception as e:
            log.warning("cleanup of %s: %s", manager.type, e)
    with contextlib.suppress(Exception):
        from zos.primitives import logd

        await asyncio.to_thread(logd.stop_daemon, zm.logs_root)
    zm.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return run(argv[1:])
    p = argparse.ArgumentParser(prog="zos.grid.nodeagent")
    p.add_argument("action", choices=["cleanup"])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--netns-prefix", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(cleanup(args.data_dir, args.netns_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
