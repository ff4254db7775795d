"""`zos.primitives.nsforward`, the forwarder the gateways and the local grid's port
forwarder run: a process that listens in one network namespace and dials from inside
another. Two namespaces of the test's own; the backend listens on the dialling
namespace's loopback, which nothing else reaches."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from zos.primitives import links, netns, nsclient, nsforward

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.asyncio(loop_scope="module")]

LOOPBACK = "127.0.0.1"
LISTEN_PORT, BACKEND_PORT = 18080, 18081
HANG_GUARD = 30.0  # seconds: only a hung relay takes this long


@dataclass
class Pair:
    listen_ns: str  # where the forwarder listens (a gateway's public namespace)
    dial_ns: str  # where it dials from (a tenant's network)
    backend: asyncio.Server
    closed: list[int]  # how many bytes each finished backend connection echoed


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: list[int]) -> None:
    """Echo until the client's EOF, then close (so the client sees EOF too)."""
    total = 0
    while data := await reader.read(65536):
        total += len(data)
        writer.write(data)
        await writer.drain()
    out.append(total)
    writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair() -> AsyncIterator[Pair]:
    tag = f"zfw{os.getpid() % 100000}"
    made = [f"{tag}-a", f"{tag}-b"]
    try:
        for ns in made:
            netns.create(ns)
            links.set_up("lo", ns)
        closed: list[int] = []
        sock = nsforward.listener_in(made[1], LOOPBACK, BACKEND_PORT)
        server = await asyncio.start_server(lambda r, w: echo(r, w, closed), sock=sock)
        found = Pair(made[0], made[1], server, closed)
        yield found
        found.backend.close()  # the one a test started again, maybe
        await found.backend.wait_closed()
    finally:
        for ns in made:
            netns.delete(ns)


@pytest.fixture
def forwarder(pair: Pair) -> Iterator[subprocess.Popen[bytes]]:
    mapping = nsforward.Mapping(LOOPBACK, LISTEN_PORT, LOOPBACK, BACKEND_PORT)
    proc = subprocess.Popen(
        nsforward.argv(pair.listen_ns, pair.dial_ns, [mapping]), stderr=subprocess.PIPE
    )
    try:
        # Listening once a connection is taken (it says nothing when it is).
        deadline = time.monotonic() + 20
        while True:
            try:
                nsclient.connect(pair.listen_ns, LOOPBACK, LISTEN_PORT, 1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def exchange(ns: str, payload: bytes) -> bytes:
    """Send `payload` to the forwarder from `ns`, close the sending side, read to EOF."""
    with nsclient.connect(ns, LOOPBACK, LISTEN_PORT, 10) as sock:
        sock.settimeout(20)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        return bytes(got)


async def test_bytes_go_both_ways_through_the_other_namespace(
    pair: Pair, forwarder: subprocess.Popen[bytes]
) -> None:
    """Several connections at once, a MiB each way, half-close passed on: the backend
    sees the client's EOF, the client the backend's."""
    payloads = [os.urandom(1 << 20) for _ in range(4)]
    pair.closed.clear()
    got = await asyncio.gather(*(asyncio.to_thread(exchange, pair.listen_ns, p) for p in payloads))
    assert got == payloads
    assert [n for n in pair.closed if n] == [1 << 20] * 4  # (0: the readiness probe's)


async def test_a_relay_survives_garbage_collection_while_both_sides_are_quiet() -> None:
    """The client has sent its question and EOF, the backend has not answered yet: no
    socket is being read or written, and the loop holds tasks only weakly. A collection
    then must not destroy the relay (it did, under load: the client got EOF, no answer)."""
    heard, answer = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # to the forwarder's EOF
        heard.set()
        await answer.wait()
        writer.write(b"late answer")
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(slow, LOOPBACK, 0)
    port = backend.sockets[0].getsockname()[1]
    front = await asyncio.start_server(
        lambda r, w: nsforward.splice(r, w, None, LOOPBACK, port), LOOPBACK, 0
    )
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, front.sockets[0].getsockname()[1])
        writer.write(b"question")
        writer.write_eof()
        await asyncio.wait_for(heard.wait(), HANG_GUARD)
        gc.collect()
        answer.set()
        assert await asyncio.wait_for(reader.read(), HANG_GUARD) == b"late answer"
        writer.close()
    finally:
        front.close()
        backend.close()


async def test_only_the_dialling_namespace_reaches_the_backend(
    pair: Pair, forwarder: subprocess.Popen[bytes]
) -> None:
    """The backend is on the dialling namespace's loopback: not reachable from where the
    forwarder listens, and the forwarder's port is not in the dialling namespace."""
    with pytest.raises(ConnectionRefusedError):
        nsclient.connect(pair.listen_ns, LOOPBACK, BACKEND_PORT, 2)
    with pytest.raises(ConnectionRefusedError):
        nsclient.connect(pair.dial_ns, LOOPBACK, LISTEN_PORT, 2)


async def test_a_backend_that_is_down_closes_the_connection(
    pair: Pair, forwarder: subprocess.Popen[bytes]
) -> None:
    """The client gets EOF (not a hang); the forwarder serves on once it is back."""
    pair.backend.close()
    await pair.backend.wait_closed()
    assert await asyncio.to_thread(exchange, pair.listen_ns, b"anyone?") == b""
    assert forwarder.poll() is None
    sock = nsforward.listener_in(pair.dial_ns, LOOPBACK, BACKEND_PORT)
    pair.backend = await asyncio.start_server(lambda r, w: echo(r, w, pair.closed), sock=sock)
    assert await asyncio.to_thread(exchange, pair.listen_ns, b"back") == b"back"


async def test_sigterm_stops_it_and_its_port(
    pair: Pair, forwarder: subprocess.Popen[bytes]
) -> None:
    forwarder.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(forwarder.wait, 20) == 0
    with pytest.raises(ConnectionRefusedError):
        nsclient.connect(pair.listen_ns, LOOPBACK, LISTEN_PORT, 2)


@pytest.mark.parametrize("bad", ["127.0.0.1:80", "127.0.0.1:x=10.0.0.2:80", ":80=10.0.0.2:80"])
async def test_a_bad_mapping_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="is not LHOST:LPORT=HOST:PORT"):
        nsforward.Mapping.parse(bad)
    run = subprocess.run(
        [sys.executable, "-m", "zos.primitives.nsforward", "--dial-netns", "x", bad],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2 and "is not LHOST:LPORT=HOST:PORT" in run.stderr
