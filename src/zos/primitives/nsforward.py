"""TCP forwarding between network namespaces: listen in one, dial from inside another.

A socket keeps the namespace it was made in, so one process can accept on a port of
namespace A (a gateway's loopback) and connect from inside namespace B (a tenant's
private network) to an address only B reaches, then copy bytes both ways. The local
grid's port forwarder and the node's gateway forwarders (`python -m
zos.primitives.nsforward`, a process of its own that outlives the agent) use it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any

from zos.primitives import netns
from zos.primitives.signals import stop_on_signals

log = logging.getLogger(__name__)


def socket_in(ns: str | None) -> socket.socket:
    """A non-blocking IPv4 TCP socket made in `ns` (None or "": this namespace)."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        return s

    return netns.run_in(ns, make) if ns else make()


def listener_in(ns: str | None, host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port of namespace `ns`."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        s.setblocking(False)
        return s

    return netns.run_in(ns, make) if ns else make()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (a half-close: the other direction may still
    be carrying the answer); on an error, close the writer."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
            return
    except (ConnectionError, OSError):
        pass
    with contextlib.suppress(Exception):
        writer.close()


async def dial_in(ns: str | None, host: str, port: int, timeout: float = 10.0):
    """(reader, writer) of a connection made from inside `ns` to host:port."""
    sock = await asyncio.to_thread(socket_in, ns)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ns: str | None, host: str, port: int
) -> None:
    """Serve one accepted connection: dial host:port from `ns`, copy both ways."""
    try:
        r2, w2 = await dial_in(ns, host, port)
    except (OSError, TimeoutError) as e:
        log.info("cannot reach %s:%s from %s: %s", host, port, ns or "here", e)
        writer.close()
        return
    await relay(reader, writer, r2, w2)


_relaying: set[asyncio.Task[Any] | None] = set()  # the relays under way


async def relay(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    r2: asyncio.StreamReader,
    w2: asyncio.StreamWriter,
) -> None:
    """Copy both ways between two connections until both directions are done; close both."""
    # The loop holds tasks weakly, and a stream's protocol its reader: once one side has
    # sent EOF and the other is quiet, nothing holds this task, and a garbage collection
    # would destroy it mid-copy and close both sockets. Hold it until it is done.
    task = asyncio.current_task()
    _relaying.add(task)
    try:
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    finally:
        _relaying.discard(task)
        for w in (w1, w2):
            with contextlib.suppress(Exception):
                w.close()


@dataclass(frozen=True)
class Mapping:
    listen_host: str
    listen_port: int
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Mapping:
        """`LHOST:LPORT=HOST:PORT` (IPv4)."""
        listen, sep, to = text.partition("=")
        lhost, _, lport = listen.rpartition(":")
        host, _, port = to.rpartition(":")
        if not sep or not lhost or not host or not lport.isdigit() or not port.isdigit():
            raise ValueError(f"{text!r} is not LHOST:LPORT=HOST:PORT")
        return cls(lhost, int(lport), host, int(port))


async def serve(listen_ns: str | None, dial_ns: str | None, mappings: list[Mapping]) -> None:
    """Forward every mapping until SIGTERM or SIGINT."""
    stop = stop_on_signals()
    servers = []
    for m in mappings:
        sock = await asyncio.to_thread(listener_in, listen_ns, m.listen_host, m.listen_port)
        servers.append(
            await asyncio.start_server(
                lambda r, w, m=m: splice(r, w, dial_ns, m.host, m.port), sock=sock
            )
        )
    await stop.wait()
    for server in servers:
        server.close()


def argv(listen_ns: str | None, dial_ns: str, mappings: list[Mapping]) -> list[str]:
    args = [sys.executable, "-m", "zos.primitives.nsforward", "--dial-netns", dial_ns]
    if listen_ns:
        args += ["--listen-netns", listen_ns]
    for m in mappings:
        args.append(f"{m.listen_host}:{m.listen_port}={m.host}:{m.port}")
    return args


def main(args: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zos.primitives.nsforward")
    p.add_argument("--listen-netns", default=None)
    p.add_argument("--dial-netns", required=True)
    p.add_argument("mapping", nargs="+", help="LHOST:LPORT=HOST:PORT")
    parsed = p.parse_args(args)
    try:
        mappings = [Mapping.parse(m) for m in parsed.mapping]
    except ValueError as e:
        p.error(str(e))
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parsed.listen_netns, parsed.dial_netns, mappings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
