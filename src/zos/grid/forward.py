"""The local grid's port forwarder: makes a machine's port reachable from the host.

A private network lets nothing in from outside (its namespace drops forwarded traffic
that did not start inside), so the host cannot simply route to a machine. Instead this
daemon listens on a host port and, for each connection, opens a socket *inside the
machine's network namespace* (a socket keeps the namespace it was made in) and
connects to the machine's address there, then copies bytes both ways.

What to forward is `<state-dir>/forwards.json`, written by the client on deploy and
remove; the daemon reads it again every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from zos.grid.state import Forward, load_forwards
from zos.primitives import nsforward
from zos.primitives.signals import stop_on_signals

log = logging.getLogger(__name__)


class Forwarder:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.servers: dict[tuple[str, str, int], tuple[Forward, asyncio.Server]] = {}

    async def _handle(
        self, fwd: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            r2, w2 = await nsforward.dial_in(fwd.netns, fwd.ip, fwd.port)
        except Exception as e:
            log.info(
                "%s/%s: cannot reach %s:%s: %s", fwd.deployment, fwd.machine, fwd.ip, fwd.port, e
            )
            writer.close()
            return
        await nsforward.relay(reader, writer, r2, w2)

    async def sync(self) -> None:
        wanted = {
            (f.listen_netns, f.listen_host, f.listen_port): f for f in load_forwards(self.state_dir)
        }
        for key, (fwd, server) in list(self.servers.items()):
            if wanted.get(key) != fwd:
                server.close()
                del self.servers[key]
        for key, fwd in wanted.items():
            if key in self.servers:
                continue
            try:
                sock = await asyncio.to_thread(
                    nsforward.listener_in, fwd.listen_netns, fwd.listen_host, fwd.listen_port
                )
                server = await asyncio.start_server(
                    lambda r, w, f=fwd: self._handle(f, r, w), sock=sock
                )
            except OSError as e:
                log.warning("cannot listen on %s %s:%s: %s", *key, e)
                continue
            self.servers[key] = (fwd, server)
            log.info(
                "%s %s -> %s %s:%s",
                fwd.listen_netns or "host",
                fwd.url,
                fwd.netns or "host",
                fwd.ip,
                fwd.port,
            )

    async def run(self) -> None:
        stop = stop_on_signals()
        while not stop.is_set():
            await self.sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        for _, server in self.servers.values():
            server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zos.grid.forward")
    p.add_argument("--state-dir", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(Forwarder(args.state_dir).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
