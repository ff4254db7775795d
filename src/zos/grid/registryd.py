"""Run the registry service until SIGTERM (`python -m zos.grid.registryd --nats URL`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


async def serve(nats: str) -> None:
    from zos.registry import RegistryService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = await RegistryService(nats).start()
    print(f"registry serving on {nats}", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zos.grid.registryd")
    p.add_argument("--nats", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.nats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
