"""A simulated grid on a real 3-server NATS cluster: N nodes heartbeating, M users
searching and creating contracts, against registry service copies run as `zos registry
serve` processes.

    .venv/bin/python benchmarks/grid_scale.py --nodes 100000 --period 10 --duration 30
    .venv/bin/python benchmarks/grid_scale.py --nodes 100000 --kill-server   # one dies mid-run

Seeding: N nodes (each with its own ed25519 key, derived from its number so worker
processes can sign for it) and their twins are written into the registry's buckets as
its service writes them once it has accepted `register_twin` and `register_node`:
through its own `Store`, on connections of the registry key, every value signed by that
key, ids from its counters in one block, each index before its record, the nodes split
over the worker processes with many writes in flight. Not through transactions (at the
registry's ~800 tx/s on an idle machine, two per node, 100,000 registrations take
minutes; `bus_registry.py` measures that path). The users register for real.

Heartbeats: each worker first signs every status its nodes send in the run, with each
node's key, dated when it is due (signing is each node's own work, on as many machines
as there are nodes; here it would take the cores from the servers measured). Then it
publishes them on each node's own subject at N / period per second, with up to
--in-flight waiting for JetStream's ack (acks come to one subscription); a status not
acknowledged in ACK_WAIT s is sent again (up to RETRIES times) and counted lost if it
never is. They publish over benchmark connections with every permission (nats-server's
config names their key): 100,000 node connections do not fit on this machine. A few
nodes (--own-connections) beat over their own connection, let in by the registry's auth
callout with a node's permissions, and one checks it cannot publish another node's
status.

Baseline in the same run, from the same workers: bare JetStream KV puts (replicas 3,
values as large as a status, same in-flight) on the same cluster.

Printed: sustained heartbeats/s (acknowledged), beside the rate N nodes need at the
default 10 s period; what the stream holds afterwards (one status per node, and for a
sample of nodes the last one acknowledged); search p50/p99 through the service
(a farm's page, up nodes with free memory, a page of the grid after an id); contract
creations/s; CPU (% of one core over the run) and RSS of each nats-server, each service
copy and the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from figures import pct  # beside this script
from nats.aio.msg import Msg

from zos.bus import BusError, Connection, connect
from zos.bus.subjects import last_token, node_status_subject
from zos.grid.natsserver import start_cluster
from zos.grid.procs import tail
from zos.identity import Identity, write_key_file
from zos.primitives.capacity import cpu_seconds, rss_bytes
from zos.registry import Capacity, Farm, Location, Node, RegistryClient, Twin
from zos.registry import heartbeats as hb
from zos.registry.models import HEARTBEAT_PERIOD
from zos.registry.signing import RegistrySigner
from zos.registry.store import Store

GiB = 1 << 30
FARM_SIZE = 1000  # nodes per seeded farm
SAMPLE_EVERY = 997  # nodes whose last acknowledged status is checked in the stream
ACK_WAIT = 5.0  # seconds before a status not acknowledged is sent again
RETRIES = 3


def node_identity(i: int) -> Identity:
    return Identity(hashlib.sha256(b"grid-scale node %d" % i).digest())


# -- seeding ---------------------------------------------------------------------------


async def until_done(
    step: Callable[[], Awaitable[object]], errors: type[Exception], seconds: float = 60
) -> None:
    """Run `step` until it does not raise `errors`, retrying for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await step()
            return
        except errors:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def seed(
    urls: list[str], registry: Identity, n: int, spawn: Callable[[dict[str, Any]], Awaitable[Any]]
) -> tuple[int, list[int], float]:
    """Twins, farms and nodes as the service writes them; (first node id, farm ids, s).
    This process takes the ids and writes the farms; the workers write the nodes."""
    t0 = time.perf_counter()
    conn = await connect(urls, registry, name="zos-registry-seed")
    try:
        store = Store(conn.nc.jetstream(timeout=20.0), RegistrySigner(registry), replicas=3)
        # A cluster just started elects its JetStream leaders first.
        await until_done(store.setup, Exception)
        farmer = Identity.generate()
        farmer_id = await store.next_id("twin")
        await store.create("twin-keys", farmer.public_hex, farmer_id)
        await store.create(
            "twins",
            farmer_id,
            Twin(id=farmer_id, public_key=farmer.public_hex, created=time.time()),
        )
        farms = (n + FARM_SIZE - 1) // FARM_SIZE
        first_farm = await store.next_id("farm", farms)
        for f in range(farms):
            farm = Farm(
                id=first_farm + f,
                name=f"scale-{first_farm + f}",
                owner_twin=farmer_id,
                created=time.time(),
            )
            await store.create("farm-names", farm.name.lower(), farm.id)
            await store.create("farms", farm.id, farm)
        first_twin = await store.next_id("twin", n)
        first_node = await store.next_id("node", n)
        await hb.setup_stream(store.js, 3)
    finally:
        await conn.close()
    await spawn({"first_twin": first_twin, "first_node": first_node, "first_farm": first_farm})
    return first_node, list(range(first_farm, first_farm + farms)), time.perf_counter() - t0


async def settle(urls: list[str], insider: Identity, timeout: float = 900.0) -> float:
    """Seconds until every stream's replicas are current with their leader. Seeding
    100,000 nodes is 400,000 R3 writes in minutes; the servers catch their followers up
    for a while after, and service copies started meanwhile timed out making their
    consumers (a real grid does not gain 100,000 nodes in minutes)."""
    t0 = time.perf_counter()
    conn = await connect(urls, insider)
    try:
        js = conn.nc.jetstream(timeout=30)
        while True:
            behind = []
            for info in await js.streams_info():
                peers = (info.cluster.replicas or []) if info.cluster else []
                if any(not p.current or p.offline or p.lag for p in peers):
                    behind.append(info.config.name)
            if not behind:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"streams still catching up after {timeout:.0f} s: {behind}")
            await asyncio.sleep(1)
    finally:
        await conn.close()


async def seed_nodes(conn: Connection, spec: dict[str, Any]) -> dict[str, Any]:
    """This worker's share of the nodes and their twins, through the registry's Store on
    a connection of the registry key: the four records `register_twin` and
    `register_node` write, each signed by that key, each index before its record, with
    many writes in flight."""
    store = Store(conn.nc.jetstream(timeout=20.0), RegistrySigner(conn.identity), replicas=3)
    await until_done(store.setup, Exception)
    first_twin, first_node, first_farm = spec["first_twin"], spec["first_node"], spec["first_farm"]

    async def write(op: Awaitable[int | None]) -> None:
        assert await op is not None, "the seed wrote over a key the registry had"

    async def one(i: int) -> None:
        now = time.time()
        key = node_identity(i).public_hex
        twin = Twin(id=first_twin + i, public_key=key, created=now)
        await asyncio.gather(  # the two indexes, then the two records
            write(store.create("twin-keys", key, twin.id)),
            write(store.create("node-twins", twin.id, first_node + i)),
        )
        node = Node(
            id=first_node + i,
            farm_id=first_farm + i // FARM_SIZE,
            twin_id=twin.id,
            capacity=Capacity(cru=1 + i % 32, mru=(1 + i % 64) * GiB, sru=(10 + i % 500) * GiB),
            location=Location(country="BE", city=f"city-{i % 97}"),
            created=now,
            last_heartbeat=now,
        )
        await asyncio.gather(
            write(store.create("twins", twin.id, twin)),
            write(store.create("nodes", node.id, node)),
        )

    mine = iter(range(spec["index"], spec["nodes"], spec["workers"]))

    async def lane() -> None:  # one node at a time, two writes in flight
        for i in mine:
            await one(i)

    # in_flight writes at once, without a semaphore (its waiters cost per wake-up)
    await asyncio.gather(*(lane() for _ in range(max(1, spec["in_flight"] // 2))))
    return {}


# -- workers (separate processes) ------------------------------------------------------


async def worker(spec: dict[str, Any]) -> dict[str, Any]:
    who = "GRID_SCALE_REGISTRY" if spec["phase"] == "seed" else "GRID_SCALE_INSIDER"
    identity = Identity(bytes.fromhex(os.environ[who]))
    # Signed before connecting: a connection idle for that long would be dropped.
    signed = presign(spec) if spec["phase"] == "beat" else ([], [])
    conn = await connect(spec["urls"], identity, name=f"grid-scale-{spec['index']}")
    try:
        if spec["phase"] == "seed":
            return await seed_nodes(conn, spec)
        if spec["phase"] == "kv":  # the baseline: bare KV puts of status-sized values
            kv = await conn.nc.jetstream(timeout=10.0).key_value("bench-kv")
            sem = asyncio.Semaphore(spec["in_flight"])
            t0 = time.perf_counter()

            async def put(k: int) -> None:
                async with sem:
                    await kv.put(f"k{spec['index']}.{k}", b"x" * 250)

            await asyncio.gather(*(put(k) for k in range(spec["kv_puts"])))
            return {"kv_rate": spec["kv_puts"] / (time.perf_counter() - t0)}
        return await beat(conn, spec, *signed)
    finally:
        await conn.close()


def presign(spec: dict[str, Any]) -> tuple[list[int], list[bytes]]:
    """Every status this worker's nodes send in the run, signed by each node's key and
    dated when it is due (from spec["start"]). Signing is the nodes' own work, done on
    as many machines as there are nodes; done here during the run it would take this
    machine's cores from the servers and services measured."""
    mine = list(range(spec["index"], spec["nodes"], spec["workers"]))
    rate = len(mine) / spec["period"]
    count = int(spec["duration"] * rate)
    signers = [RegistrySigner(node_identity(i)) for i in mine[: min(len(mine), count)]]
    first_node, start_ms = spec["first_node"], spec["start"] * 1000
    nodes, blobs = [], []
    for k in range(count):
        i = mine[k % len(mine)]
        used = Capacity(cru=k % 2, mru=(k % 3) * GiB)
        nodes.append(i)
        blobs.append(
            hb.sign(signers[k % len(mine)], first_node + i, used, int(start_ms + k / rate * 1000))
        )
    return nodes, blobs


async def beat(
    conn: Connection, spec: dict[str, Any], nodes: list[int], blobs: list[bytes]
) -> dict[str, Any]:
    """Publish the signed statuses at their rate, up to spec["in_flight"] waiting for
    JetStream's ack at once (acks come to one subscription, matched by a token in the
    reply subject); a status not acknowledged in ACK_WAIT s is sent again, up to
    RETRIES times, and counted lost if it never is."""
    signed_by = time.time()
    first_node, duration = spec["first_node"], spec["duration"]
    rate = len(blobs) / duration if blobs else 1.0
    pending: dict[int, tuple[float, int]] = {}  # beat -> (sent at, attempts)
    room = asyncio.Event()
    room.set()
    acked = retried = lost = 0
    per_second: list[int] = []  # acks in each second of the run
    last_at: dict[int, int] = {}
    nc = conn.nc
    start = time.perf_counter() + 3600  # set when the run starts

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        k = int(last_token(msg.subject))
        if k not in pending:
            return  # acknowledged already (a retry's answer)
        try:
            hb.stored(msg.data, first_node + nodes[k])
        except BusError:
            pending[k] = (time.perf_counter() - ACK_WAIT + 0.2, pending[k][1])  # again soon
            return
        del pending[k]
        acked += 1
        second = int(time.perf_counter() - start)
        per_second.extend([0] * (second + 1 - len(per_second)))
        per_second[second] += 1
        if nodes[k] % SAMPLE_EVERY == 0:
            last_at[nodes[k]] = hb.unverified(blobs[k]).at  # type: ignore[union-attr]
        if len(pending) < spec["in_flight"]:
            room.set()

    async def send(k: int) -> None:
        subject = node_status_subject(first_node + nodes[k])
        await nc.publish(subject, blobs[k], reply=f"{conn.inbox}.hb.{k}")

    async def resend_late(now: float) -> None:
        nonlocal retried, lost
        for k, (sent, attempts) in list(pending.items()):
            if now - sent < ACK_WAIT:
                continue
            if attempts > RETRIES:
                del pending[k]
                lost += 1
                continue
            pending[k] = (now, attempts + 1)
            retried += 1
            await send(k)

    await nc.subscribe(f"{conn.inbox}.hb.*", cb=on_ack)
    await nc.flush()
    await asyncio.sleep(max(0.0, spec["start"] - time.time()))
    start, cpu0 = time.perf_counter(), time.process_time()
    late_start = time.time() - spec["start"]
    k, checked = 0, start
    while (now := time.perf_counter() - start) < duration:
        due = min(len(blobs), int(now * rate))
        while k < due:
            if len(pending) >= spec["in_flight"]:
                room.clear()
                try:  # acks lost with a stream leader are sent again, not waited for
                    await asyncio.wait_for(room.wait(), 1.0)
                except TimeoutError:
                    await resend_late(time.perf_counter())
                continue
            pending[k] = (time.perf_counter(), 0)
            await send(k)
            k += 1
        if time.perf_counter() - checked > 1.0:
            checked = time.perf_counter()
            await resend_late(checked)
        await asyncio.sleep(0.002)
    sent_in_run = k
    while pending:  # the last ones' acks, and their retries
        await resend_late(time.perf_counter())
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - start
    return {
        "acked": acked,
        "retried": retried,
        "lost": lost,
        "sent": sent_in_run,
        "behind": len(blobs) - sent_in_run,
        "elapsed": elapsed,
        "late_start": late_start,
        "signed_late": signed_by - spec["start"],
        "last_at": last_at,
        "per_second": per_second,
        "cpu": (time.process_time() - cpu0) / elapsed,  # its share of a core while beating
        "sign_cpu": cpu0,  # seconds, before the run
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# -- users -----------------------------------------------------------------------------


async def register_users(urls: list[str], key: bytes, m: int) -> list[RegistryClient]:
    clients = []
    for i in range(m):
        c = await RegistryClient(
            urls[i % len(urls)], Identity.generate(), registry_key=key, timeout=20
        ).connect()
        clients.append(c)
        await until_done(c.register_twin, BusError)
    return clients


async def users(
    clients: list[RegistryClient],
    farms: list[int],
    first_node: int,
    n: int,
    stop: asyncio.Event,
) -> tuple[dict[str, list[tuple[float, float]]], int, float]:
    """Searches (time into the run, seconds taken) and contracts until `stop`."""
    lat: dict[str, list[tuple[float, float]]] = {
        "farm page": [],
        "up, free mru": [],
        "after id": [],
    }
    contracts = 0
    refusals: dict[str, int] = {}
    reasons: dict[str, str] = {}  # the first message of each refusal code
    t0 = time.perf_counter()

    async def user(c: RegistryClient) -> None:
        nonlocal contracts
        while not stop.is_set():
            kind = random.choice(list(lat))
            t = time.perf_counter()
            try:
                if kind == "farm page":
                    page = await c.list_nodes(farm=random.choice(farms), limit=50)
                elif kind == "up, free mru":
                    page = await c.list_nodes(
                        status="up", free_mru=random.randint(1, 64) * GiB, limit=50
                    )
                else:
                    page = await c.list_nodes(after_id=first_node + random.randrange(n), limit=50)
                lat[kind].append((t - t0, time.perf_counter() - t))
                if page and random.random() < 0.3:
                    await c.create_node_contract(random.choice(page).id, os.urandom(16).hex())
                    contracts += 1
            except BusError as e:  # e.g. a node not beaten yet since the seed: down
                refusals[e.code] = refusals.get(e.code, 0) + 1
                reasons.setdefault(e.code, f"{kind}: {e.message}")
                await asyncio.sleep(0.2)

    try:
        await asyncio.gather(*(user(c) for c in clients))
        if refusals:
            print(f"users were refused: {refusals} (first: {reasons})")
        return lat, contracts, time.perf_counter() - t0
    finally:
        for c in clients:
            await c.close()


async def own_connections(urls: list[str], key: bytes, first_node: int, count: int) -> str:
    """A few nodes beat over their own connection, with their role's permissions."""
    ok = 0
    refused = False
    for i in range(count):
        c = await RegistryClient(urls[i % 3], node_identity(i), registry_key=key).connect()
        try:
            await c.heartbeat(first_node + i, Capacity(cru=1))
            ok += 1
            if i == 0:
                try:
                    await c.heartbeat(first_node + 1, Capacity(cru=9))
                except BusError as e:
                    refused = e.code == "not_permitted"
        finally:
            await c.close()
    return f"{ok}/{count} beat over their own connection; another node's subject refused: {refused}"


# -- main ------------------------------------------------------------------------------


def signing_time(args: argparse.Namespace) -> float:
    """Seconds a worker will take to sign its statuses (timed on a few here, with room)."""
    t0 = time.perf_counter()
    for i in range(200):
        hb.sign(RegistrySigner(node_identity(i)), 1 + i, Capacity())
    per = (time.perf_counter() - t0) / 200
    return 1.5 * per * args.nodes * max(1.0, args.duration / args.period) / args.workers


def proc_stats(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    return {name: (cpu_seconds(pid), rss_bytes(pid)) for name, pid in pids.items()}


async def main(args: argparse.Namespace) -> None:
    registry, insider = Identity.generate(), Identity.generate()
    load0 = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory(prefix="grid-scale-") as tmp:
        servers = start_cluster(Path(tmp), registry.public_key, 3, insiders=[insider.public_key])
        urls = [s.url for s in servers]
        services: list[subprocess.Popen[bytes]] = []
        workers: list[subprocess.Popen[bytes]] = []
        try:
            env = {
                **os.environ,
                "GRID_SCALE_INSIDER": insider.seed.hex(),
                "GRID_SCALE_REGISTRY": registry.seed.hex(),
            }

            def spawn(phase: str, **more: Any) -> list[subprocess.Popen[bytes]]:
                procs = []
                for w in range(args.workers):
                    spec = {
                        **more,
                        "phase": phase,
                        "index": w,
                        "workers": args.workers,
                        "nodes": args.nodes,
                        "urls": urls[w % 3 :] + urls[: w % 3],
                        "period": args.period,
                        "duration": args.duration,
                        "in_flight": args.in_flight,
                        "kv_puts": args.kv_puts // args.workers,
                    }
                    argv = [sys.executable, __file__, "--worker", json.dumps(spec)]
                    procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, env=env))
                workers.extend(procs)
                return procs

            async def results_of(procs: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
                outs = await asyncio.gather(*(asyncio.to_thread(p.communicate) for p in procs))
                return [json.loads(o[0]) for o in outs]

            async def seeding(ids: dict[str, Any]) -> None:
                await results_of(spawn("seed", **ids))

            first_node, farms, seeded = await seed(urls, registry, args.nodes, seeding)
            print(
                f"seeded {args.nodes} nodes in {len(farms)} farms in {seeded:.1f} s "
                f"({4 * args.nodes / seeded:.0f} signed records/s, as the service writes them)"
            )
            print(f"every stream's replicas current {await settle(urls, insider):.1f} s later")
            key_file = Path(tmp) / "registry.key"
            write_key_file(key_file, registry)
            t0 = time.perf_counter()
            for i in range(args.copies):
                services.append(
                    subprocess.Popen(
                        [
                            str(Path(sys.executable).parent / "zos"),
                            "registry",
                            "serve",
                            "--nats",
                            urls[i % 3],
                            "--key-file",
                            str(key_file),
                            "--replicas",
                            "3",
                            "--log-level",
                            "warning",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=open(Path(tmp) / f"service-{i}.log", "wb"),  # noqa: SIM115
                    )
                )
            probe = RegistryClient(
                urls, Identity.generate(), registry_key=registry.public_key, timeout=120
            )
            while True:  # let in by the auth callout once a copy has read the buckets
                try:
                    await probe.connect()
                    await probe.register_twin()
                    break
                except BusError:
                    if any(p.poll() is not None for p in services):
                        logs = [tail(Path(tmp) / f"service-{i}.log") for i in range(args.copies)]
                        raise SystemExit("a service copy exited:\n" + "\n".join(logs)) from None
                    await probe.close()
                    await asyncio.sleep(0.5)
            print(
                f"{args.copies} service copies answering {time.perf_counter() - t0:.1f} s "
                f"after start (each mirrors {args.nodes} nodes)"
            )
            print(
                await own_connections(urls, registry.public_key, first_node, args.own_connections)
            )
            conn = await connect(urls, insider)
            await conn.nc.jetstream().create_key_value(bucket="bench-kv", history=1, replicas=3)
            before = (await conn.nc.jetstream().stream_info(hb.STREAM)).state.last_seq

            kv_rate = sum(r["kv_rate"] for r in await results_of(spawn("kv")))
            clients = await register_users(urls, registry.public_key, args.users)
            start = time.time() + signing_time(args) + 3
            beating = spawn("beat", first_node=first_node, start=start)
            pids = {f"nats-server {i}": s.pid or 0 for i, s in enumerate(servers)}
            pids |= {f"service {i}": p.pid for i, p in enumerate(services)}
            print(f"workers sign {args.nodes * args.duration / args.period:,.0f} statuses first")
            await asyncio.sleep(max(0.0, start - time.time()))
            stats0, wall0, cpu0 = proc_stats(pids), time.perf_counter(), time.process_time()
            stop = asyncio.Event()
            user_run = asyncio.create_task(users(clients, farms, first_node, args.nodes, stop))
            killed_at = None
            if args.kill_server:
                await asyncio.sleep(args.duration / 2)
                servers[2].kill()
                killed_at = time.perf_counter() - wall0
                print(f"killed nats-server 2 at {killed_at:.1f} s")
            results = await results_of(beating)
            stats1, wall = proc_stats(pids), time.perf_counter() - wall0
            stop.set()
            lat, contracts, user_time = await user_run
            t1 = time.perf_counter()
            statuses, after = {"up": 0, "down": 0}, 0
            while page := await probe.list_nodes(after_id=after, limit=1000):
                for n in page:
                    statuses[n.status] += 1
                after = page[-1].id
            listed = (
                f"service, right after the run: {statuses['up']} of {args.nodes} seeded nodes up, "
                f"{statuses['down']} down (paged by after_id, 1000 a page, each status checked: "
                f"{time.perf_counter() - t1:.0f} s)"
            )

            acked = sum(r["acked"] for r in results)
            elapsed = max(r["elapsed"] for r in results)
            need = args.nodes / HEARTBEAT_PERIOD
            print(
                f"\nheartbeats: {acked / elapsed:,.0f}/s acknowledged "
                f"(target {args.nodes / args.period:,.0f}/s "
                f"= {args.nodes} nodes every {args.period:g} s; {args.nodes} nodes at the default "
                f"{HEARTBEAT_PERIOD:g} s need {need:,.0f}/s)"
            )
            print(
                f"  sent {sum(r['sent'] for r in results)}, acknowledged {acked}, retried "
                f"{sum(r['retried'] for r in results)}, lost {sum(r['lost'] for r in results)}; "
                f"{sum(r['behind'] for r in results)} not sent (their turn came after the run)"
            )
            seconds = [
                sum(r["per_second"][t] for r in results if t < len(r["per_second"]))
                for t in range(int(args.duration))
            ]
            print(f"  acknowledged per second of the run: {seconds}")
            if killed_at is not None:
                cut = int(killed_at)
                pre, post = seconds[:cut], seconds[cut + 1 :]
                print(
                    f"  before the kill {sum(pre) / max(1, len(pre)):,.0f}/s, after it "
                    f"{sum(post) / max(1, len(post)):,.0f}/s (the second of the kill left out); "
                    f"slowest second after it {min(post, default=0):,}"
                )
            print(
                f"baseline, bare KV puts (R3, same workers, {args.in_flight} in flight each): "
                f"{kv_rate:,.0f}/s"
            )
            js = conn.nc.jetstream(timeout=20.0)
            info = (await js.stream_info(hb.STREAM)).state
            print(
                f"stream: {info.messages} statuses held (one per node beaten), sequence "
                f"{before} -> {info.last_seq} ({info.last_seq - before} appended)"
            )
            behind, ages = 0, []
            sample = {int(i): at for r in results for i, at in r["last_at"].items()}
            for i, at in sample.items():
                msg = await js.get_last_msg(hb.STREAM, node_status_subject(first_node + i))
                status = hb.unverified(msg.data or b"")
                behind += status is None or status.at < at
                seen = await probe.get_node(first_node + i)
                ages.append(f"{seen.status} {time.time() - seen.last_heartbeat:.0f}s")
            print(
                f"sampled {len(sample)} nodes: {behind} hold a status older than "
                f"their last acknowledged one; read through the service: {', '.join(ages)}"
            )
            for kind, timed in lat.items():
                parts = [("", [d for _, d in timed])]
                if killed_at is not None:
                    parts.append((" after the kill", [d for t, d in timed if t > killed_at]))
                for when, samples in parts:
                    if not samples:
                        print(f"search {kind + when:<29} none answered")
                        continue
                    print(
                        f"search {kind + when:<29} p50 {pct(samples, 0.5) * 1e3:7.1f} ms  p99 "
                        f"{pct(samples, 0.99) * 1e3:7.1f} ms  ({len(samples)} searches)"
                    )
            print(listed)
            print(f"contracts: {contracts / user_time:.1f} created/s by {args.users} users")
            print(f"\n{'process':<14} {'CPU % of a core':>16} {'RSS MiB':>9}")
            for name in pids:
                cpu = (stats1[name][0] - stats0[name][0]) / wall * 100
                if stats1[name][1] == 0:
                    print(f"{name:<14} {'(killed)':>16}")
                    continue
                print(f"{name:<14} {cpu:16.0f} {stats1[name][1] / 2**20:9.0f}")
            for i, r in enumerate(results):
                print(
                    f"{'worker ' + str(i):<14} {r['cpu'] * 100:16.0f} {r['rss'] / 2**20:9.0f}"
                    f"  (signed before the run in {r['sign_cpu']:.0f} CPU s; started "
                    f"{r['late_start']:+.1f} s from the planned start)"
                )
            print(f"this process   {(time.process_time() - cpu0) / wall * 100:16.0f} (users)")
            print(
                f"load average before/after: {load0} / {os.getloadavg()[0]:.1f} (a shared machine)"
            )
            for i in range(args.copies):  # warnings only (--log-level warning)
                if logged := tail(Path(tmp) / f"service-{i}.log", 8):
                    print(f"service {i} logged, last lines:\n{logged}")
            await probe.close()
            await conn.close()
        finally:
            for p in workers + services:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for s in servers:
                s.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--period", type=float, default=HEARTBEAT_PERIOD, help="seconds between a node's beats"
    )
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--copies", type=int, default=2, help="registry service copies")
    parser.add_argument("--kv-puts", type=int, default=50_000)
    parser.add_argument("--own-connections", type=int, default=10)
    parser.add_argument("--kill-server", action="store_true", help="kill one nats-server mid-run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        print(json.dumps(asyncio.run(worker(json.loads(ns.worker)))))
    else:
        asyncio.run(main(ns))
