"""Where a signed, sealed bus round trip spends its time (client and server side).

    .venv/bin/python benchmarks/bus_profile.py [--requests 2000] [--top 25] [--rounds 9]

Two parts, both with the payload `bus_registry.py` sends:

- steps: each step of one signed, sealed round trip timed on its own, in this process,
  no server (in microseconds, the least of `--rounds` rounds of a few hundred calls
  each: on a shared machine, the least disturbed): what the caller does to build its
  request, what the node does to check, open and answer it, and what the caller does
  with the answer;
- profile: `--requests` round trips one at a time between a registered twin and a node
  through the grid's nats-server (auth callout, permissions), both ends in this process:
  first unprofiled, printing per round trip the wall time, this process's CPU time and
  nats-server's, beside bare NATS request/reply from the same caller to another node in
  the same run (the baseline); then the envelope's steps timed where they run, over as
  many round trips (in place they cost more than the steps above, alone in a loop);
  then the same under cProfile, so one profile covers the caller, the node, asyncio and
  nats-py. The profile counts CPU time (user + system: a shared
  machine's other load and the time this process waits for a core fall out) and prints
  it by where it goes (own time of the functions, grouped: PyNaCl/libsodium, pydantic,
  json, hashing, zos.bus, nats-py, asyncio and sockets), then the `--top` functions by
  own time. cProfile slows Python code down more than C code, so read its groups as
  shares, and the steps and the unprofiled figures as costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bus_registry import PAYLOAD, Grid
from nats.aio.msg import Msg

from zos.bus import BusClient, Envelope, Keys, ReplayCache, Request, Router, StaticResolver
from zos.bus.subjects import twin_subject
from zos.grid.natsserver import NatsServer
from zos.identity import Identity
from zos.primitives.capacity import cpu_seconds


def step_costs(rounds: int, calls: int = 300) -> list[tuple[str, float]]:
    """Microseconds of each step of one round trip, alice (1) asking bob (2)."""
    alice, bob = Identity.generate(), Identity.generate()
    ka, kb = Keys(alice), Keys(bob)
    replay = ReplayCache(max_entries=10_000_000)
    data = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    answer = json.dumps({"ok": True, "result": PAYLOAD}, separators=(",", ":")).encode()
    request = Envelope.create(ka, 1, 2, "echo", data, seal_to=bob.public_key)
    request_wire = request.to_bytes()
    response = Envelope.create(
        kb, 2, 1, "echo", answer, seal_to=alice.public_key, reply_to=request.id
    )
    response_wire = response.to_bytes()
    ids = iter(range(1 << 62))

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("caller: build the request (seal, sign)",
         lambda: Envelope.create(ka, 1, 2, "echo", data, seal_to=bob.public_key)),
        ("caller: encode the request", request.to_bytes),
        ("node: parse the request", lambda: Envelope.from_bytes(request_wire)),
        ("node: check its time", request.check_time),
        ("node: verify its signature", lambda: request.verify(alice.public_key)),
        ("node: replay cache", lambda: replay.check_and_add(1, f"{next(ids):032x}", 1 << 50)),
        ("node: open and decode the payload",
         lambda: request.decode_payload(kb, alice.public_key)),
        ("node: build the response (seal, sign)",
         lambda: Envelope.create(
             kb, 2, 1, "echo", answer, seal_to=alice.public_key, reply_to=request.id
         )),
        ("node: encode the response", response.to_bytes),
        ("caller: parse the response", lambda: Envelope.from_bytes(response_wire)),
        ("caller: verify its signature", lambda: response.verify(bob.public_key)),
        ("caller: open and decode the payload",
         lambda: response.decode_payload(ka, bob.public_key)),
    ]  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(rounds):  # interleaved, so a change in load falls on every step alike
        for name, call in steps:
            t = time.perf_counter()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter() - t) / calls * 1e6)
    return [(name, min(samples[name])) for name, _ in steps]


IN_PLACE = {  # what each end does to an envelope, and the calls that do it
    "build (seal, sign): Envelope.create": "create",
    "verify a signature: Envelope.verify": "verify",
    "open and decode: Envelope.decode_payload": "decode_payload",
    "parse: Envelope.from_bytes": "from_bytes",
    "encode: Envelope.to_bytes": "to_bytes",
}


@contextlib.contextmanager
def timed_in_place() -> Iterator[dict[str, float]]:
    """Seconds spent in each of Envelope's steps during real round trips: in place they
    cost more than alone in a loop (cold caches between the event loop's work)."""
    spent = dict.fromkeys(IN_PLACE, 0.0)
    saved = {attr: Envelope.__dict__[attr] for attr in IN_PLACE.values()}

    def timing(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t

        return timed

    for name, attr in IN_PLACE.items():
        setattr(Envelope, attr, timing(name, getattr(Envelope, attr)))
    try:
        yield spent
    finally:
        for attr, original in saved.items():
            setattr(Envelope, attr, original)


GROUPS = [  # (group, substrings of a cProfile entry's file or function name)
    ("PyNaCl / libsodium", ("/nacl/", "crypto_", "randombytes", "sodium")),
    ("pydantic", ("pydantic",)),
    ("json", ("/json/", "_json.", "encode_basestring", "scanstring")),
    ("hashing", ("_hashlib", "hexdigest")),
    ("base64", ("base64", "binascii")),
    ("zos.bus", ("/zos/bus/",)),
    ("nats-py", ("/nats/",)),
    ("asyncio, sockets", ("/asyncio/", "selectors", "socket", "_asyncio", "_contextvars")),
]


def group_of(entry: tuple[str, int, str]) -> str:
    text = f"{entry[0]}:{entry[2]}"
    for group, needles in GROUPS:
        if any(n in text for n in needles):
            return group
    return "other"


async def profiled_round_trips(n: int, top: int) -> None:
    grid_key = Identity.generate()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp), registry_key=grid_key.public_key).start()
        grid = None
        try:
            grid = await Grid(server, grid_key).start()
            alice, bob = await grid.twin(), await grid.node()
            keys = StaticResolver(
                {alice.twin_id: alice.identity.public_key, bob.twin_id: bob.identity.public_key}
            )
            router = Router()

            async def echo(req: Request) -> Any:
                return req.payload

            router.add("echo", echo)
            node = BusClient(bob.conn, bob.identity, bob.twin_id, keys)
            caller = BusClient(alice.conn, alice.identity, alice.twin_id, keys)
            await node.serve(router)
            await bob.conn.settle()
            # The baseline: bare request/reply between the same caller and a second
            # node, which answers on its own subject with the request's bytes.
            plain = await grid.node()

            async def answer(msg: Msg) -> None:
                await msg.respond(msg.data)

            await plain.conn.subscribe(twin_subject(plain.twin_id), answer)
            await plain.conn.settle()
            data = json.dumps(PAYLOAD, separators=(",", ":")).encode()
            cases = {
                "bus": lambda: caller.request(bob.twin_id, "echo", PAYLOAD),
                "bare": lambda: alice.nc.request(twin_subject(plain.twin_id), data, 10),
            }
            pid = server.pid or 0
            costs = {}
            for name, call in cases.items():
                for _ in range(200):  # warm up
                    await call()
                t, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(pid)
                for _ in range(n):
                    await call()
                costs[name] = (
                    (time.perf_counter() - t) / n * 1e6,
                    (time.process_time() - cpu) / n * 1e6,
                    (cpu_seconds(pid) - server_cpu) / n * 1e6,
                )
            with timed_in_place() as in_place:
                for _ in range(n):
                    await caller.request(bob.twin_id, "echo", PAYLOAD)
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for _ in range(n):
                await caller.request(bob.twin_id, "echo", PAYLOAD)
            profile.disable()
            await node.close()
        finally:
            if grid is not None:
                await grid.stop()
            server.stop()
    stats = pstats.Stats(profile)
    own: dict[str, float] = {}
    for entry, (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        group = group_of(entry)
        own[group] = own.get(group, 0.0) + tottime
    total = sum(own.values())
    print(f"profile: {n} signed, sealed round trips one at a time, then {n} under cProfile")
    for name, what in (("bus", "signed and sealed"), ("bare", "bare NATS (baseline)")):
        wall, cpu, server_cpu = costs[name]
        print(
            f"  per round trip, {what}, unprofiled: {wall:.0f} us wall, {cpu:.0f} us CPU in "
            f"this process (caller and node), {server_cpu:.0f} us CPU in nats-server"
        )
    print("  the envelope's steps timed in place (both ends, per round trip, unprofiled):")
    for name, seconds in in_place.items():
        print(f"  {name:<42} {seconds / n * 1e6:7.1f} us")
    print(f"  {'together':<42} {sum(in_place.values()) / n * 1e6:7.1f} us")
    profiled = total / n * 1e6
    print(f"  this process's CPU by group (own time of its functions, {profiled:.0f} us profiled):")
    for group, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<42} {seconds / n * 1e6:7.0f} us  {seconds / total:6.1%}")
    print(f"  top {top} functions by own time (us per round trip, calls per round trip):")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    for (path, line, func), (_, calls, tottime, _, _) in rows:
        where = f"{Path(path).name}:{line}" if path != "~" else ""
        print(f"  {tottime / n * 1e6:7.1f} us  {calls / n:5.1f}x  {func[:60]} {where}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    costs = step_costs(args.rounds)
    print(f"steps of one signed, sealed round trip (least of {args.rounds} rounds, no server)")
    for name, us in costs:
        print(f"  {name:<44} {us:8.1f} us")
    print(f"  {'sum':<44} {sum(us for _, us in costs):8.1f} us")
    await profiled_round_trips(args.requests, args.top)


if __name__ == "__main__":
    asyncio.run(main())
