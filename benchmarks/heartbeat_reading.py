"""What reading the heartbeat stream costs one process, per message, beside nats-py's
bare delivery in the same run.

    .venv/bin/python benchmarks/heartbeat_reading.py [--statuses 100000]

Starts a nats-server with JetStream, fills ZOS_HEARTBEATS with signed statuses (one
per node subject), then reads them all through `store.follow` (the ordered consumer
every registry copy uses), once per way of handling a message:

- baseline: nats-py's delivery alone (the callback does nothing);
- nats-py's `msg.metadata` for the stream position, then the status parsed (what the
  index did per beat until it read positions itself);
- `store.position` and the status kept unparsed (what `NodeIndex._on_status` does now;
  the claim is parsed when a search first looks at the node).

Prints messages per second and CPU µs per message for each.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from zos.bus import connect
from zos.bus.subjects import last_token, node_status_subject
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.registry import Capacity
from zos.registry import heartbeats as hb
from zos.registry.signing import RegistrySigner
from zos.registry.store import follow, position


def bare(msg: Msg, kept: dict[int, object]) -> None:
    pass


def metadata_and_parse(msg: Msg, kept: dict[int, object]) -> None:
    meta = msg.metadata
    status = hb.unverified(msg.data)
    kept[int(last_token(msg.subject))] = (
        meta.sequence.stream,
        msg.data,
        meta.timestamp.timestamp(),
        status,
    )


def position_only(msg: Msg, kept: dict[int, object]) -> None:
    seq, stored_at, _ = position(msg)
    kept[int(last_token(msg.subject))] = (seq, msg.data, stored_at)


WAYS: list[tuple[str, Callable[[Msg, dict[int, object]], None]]] = [
    ("nats-py delivery alone (baseline)", bare),
    ("msg.metadata + parse (before)", metadata_and_parse),
    ("store.position, parse deferred (now)", position_only),
]


async def read_all(
    js: JetStreamContext, n: int, handle: Callable[[Msg, dict[int, object]], None], name: str
) -> tuple[float, float]:
    """Seconds and CPU seconds to read the stream's `n` statuses through `follow`."""
    kept: dict[int, object] = {}
    count, done = 0, asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        handle(msg, kept)
        count += 1
        if count == n:
            done.set()

    t0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(
        follow(js, "zos.heartbeat.*", hb.STREAM, on_msg, lambda: None, what=name)
    )
    await done.wait()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return wall, cpu


async def main(n: int) -> None:
    key = Identity.generate()
    with tempfile.TemporaryDirectory(prefix="hb-reading-") as tmp:
        server = NatsServer(store_dir=Path(tmp), registry_key=key.public_key, callout=False)
        server.start()
        try:
            conn = await connect(server.url, key)
            js = conn.nc.jetstream(timeout=30)
            await hb.setup_stream(js, 1)
            signer = RegistrySigner(Identity.generate())
            blobs = [hb.sign(signer, 1 + i, Capacity(cru=i % 3)) for i in range(1000)]
            room = asyncio.Semaphore(2000)

            async def publish(k: int) -> None:
                async with room:
                    await js.publish(node_status_subject(1 + k), blobs[k % 1000])

            t0 = time.perf_counter()
            await asyncio.gather(*(publish(k) for k in range(n)))
            print(f"{n} statuses in the stream ({time.perf_counter() - t0:.1f} s to publish)")
            header = "reading every status through store.follow"
            print(f"{header:<40} {'msgs/s':>10} {'CPU µs/msg':>11}")
            for name, handle in WAYS:
                wall, cpu = await read_all(js, n, handle, name)
                print(f"{name:<40} {n / wall:10,.0f} {cpu / n * 1e6:11.1f}")
            await conn.close()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statuses", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().statuses))
