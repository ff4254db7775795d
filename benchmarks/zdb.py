"""zos zdb beside redis-server (and, when given, the real 0-db) under the same load.

    .venv/bin/python benchmarks/zdb.py [--requests 20000] [--dataset-keys 100000]
        [--quick] [--redis-noaof] [--idle]
    ZDB_REFERENCE=/tmp/0db/bin/zdb .venv/bin/python benchmarks/zdb.py   # adds 0-db

Starts `zos zdb serve` and `redis-server --save "" --appendonly yes --appendfsync no`
(an append-only file like zdb's, no fsync per write: the closest durability), each on
a free port with its data in a temp dir; `--redis-noaof` adds a redis without any
persistence, and ZDB_REFERENCE=<path of a 0-db binary> adds the real 0-db. Then:

- idle: start time and RSS with an empty directory (`--idle`: only these);
- dataset: keys `g<size>:%012d` (64 B x --dataset-keys, 4 KiB x requests, 512 KiB x
  requests/50) written by one connection, pipelined (up to 256 KiB a batch): time,
  on-disk bytes, RSS (VmRSS);
- restart: stop, start, time until PING answers, with that dataset (zdb rebuilds
  its index from the data files' headers; redis reloads its AOF); start time with
  an empty directory beside it, most of which is the interpreter starting;
- redis-benchmark, -c 16, pipeline 1 and 16: SET with -r 1e8 (nearly every key is
  new, so each SET appends; zdb skips a SET of an unchanged value), and GET of the
  dataset's keys (`GET g<size>:__rand_int__`, every GET a hit);
- a one-connection asyncio client: p50/p99 of SET and GET of 4 KiB values, and
  MB/s of SET and GET of 512 KiB values.

Ratio = zos zdb / redis (AOF): above 1 is better for zdb in req/s and MB/s, worse
in ms, bytes and seconds. Every process and temp dir is removed on exit, Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from figures import pct  # beside this script

KiB = 1024
SIZES = (64, 4 * KiB, 512 * KiB)
PIPELINES = (1, 16)
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def size_label(n: int) -> str:
    return f"{n // KiB} KiB" if n >= KiB else f"{n} B"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- a minimal RESP client: nothing shared with the server under test ------------------


def encode(*args: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


class Resp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Resp:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=1 << 20))

    async def reply(self) -> bytes | None:
        line = await self.reader.readuntil(b"\r\n")
        if line[:1] == b"-":
            raise RuntimeError(f"server error: {line[1:-2].decode(errors='replace')}")
        if line[:1] == b"$":
            n = int(line[1:-2])
            return None if n < 0 else (await self.reader.readexactly(n + 2))[:-2]
        return line[1:-2]  # +simple or :integer; arrays are never asked for

    async def call(self, *args: bytes) -> bytes | None:
        self.writer.write(encode(*args))
        await self.writer.drain()
        return await self.reply()

    async def pipeline(self, commands: list[bytes]) -> None:
        """Send already-encoded commands in one write, read every reply."""
        self.writer.write(b"".join(commands))
        await self.writer.drain()
        for _ in commands:
            await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def ping(port: int) -> bool:
    try:
        c = await Resp.connect(port)
    except OSError:
        return False
    try:
        return await c.call(b"PING") == b"PONG"
    except (OSError, asyncio.IncompleteReadError, RuntimeError):
        return False
    finally:
        await c.close()


# -- servers -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    data: Path  # what counts as its bytes on disk
    log: Path
    persistent: bool = True  # False: a restart has nothing to reload
    proc: subprocess.Popen | None = None
    figures: dict[str, float] = field(default_factory=dict)

    def start(self, timeout: float = 120.0) -> float:
        """Seconds from spawn until PING answers."""
        self.data.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        while not asyncio.run(ping(self.port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.perf_counter() - t > timeout:
                raise RuntimeError(f"{self.name}: no PONG after {timeout}s:\n{self.tail()}")
            time.sleep(0.005)
        return time.perf_counter() - t

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
        return 0

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return ""


def make_servers(work: Path, redis_noaof: bool) -> list[Server]:
    def port_dir(name: str) -> tuple[int, Path, Path]:
        (work / name).mkdir()
        return free_port(), work / name / "data", work / name / "log"

    port, data, log = port_dir("zdb")
    listen = f"127.0.0.1:{port}"
    zdb = [sys.executable, "-m", "zos.cli", "zdb", "serve", "--data", str(data), "--listen", listen]
    servers = [Server("zos zdb", zdb, port, data, log)]
    redis = ["redis-server", "--bind", "127.0.0.1", "--protected-mode", "no", "--save", ""]
    port, data, log = port_dir("redis")
    aof = ["--appendonly", "yes", "--appendfsync", "no"]
    argv = [*redis, "--port", str(port), "--dir", str(data), *aof]
    servers.append(Server("redis AOF", argv, port, data, log))
    if redis_noaof:
        port, data, log = port_dir("redis-mem")
        argv = [*redis, "--port", str(port), "--dir", str(data), "--appendonly", "no"]
        servers.append(Server("redis no-AOF", argv, port, data, log, persistent=False))
    reference = os.environ.get("ZDB_REFERENCE")
    if reference:
        port, data, log = port_dir("0db")
        index = work / "0db" / "index"
        argv = [reference, "--listen", "127.0.0.1", "--port", str(port)]
        argv += ["--data", str(data), "--index", str(index)]
        servers.append(Server("0-db", argv, port, data, log))
    return servers


# -- loads ---------------------------------------------------------------------------


def dataset_plan(keys64: int, requests: int) -> list[tuple[int, int]]:
    """(value size, key count) of the keys GET reads."""
    return [(64, keys64), (4 * KiB, requests), (512 * KiB, max(50, requests // 50))]


def gkey(size: int, i: int) -> bytes:
    return b"g%d:%012d" % (size, i)  # the form redis-benchmark gives __rand_int__


async def fill(port: int, plan: list[tuple[int, int]]) -> None:
    c = await Resp.connect(port)
    try:
        for size, count in plan:
            value = os.urandom(size)  # incompressible: redis's AOF rewrite gains nothing
            batch = max(1, min(256, (256 * KiB) // size))
            for start in range(0, count, batch):
                end = min(count, start + batch)
                await c.pipeline([encode(b"SET", gkey(size, i), value) for i in range(start, end)])
            # every key is there: GET in the benchmark always hits
            if await c.call(b"GET", gkey(size, count - 1)) != value:
                raise RuntimeError(f"port {port}: the dataset did not read back")
    finally:
        await c.close()


def redis_benchmark(port: int, size: int, pipeline: int, n: int, get_range: int | None) -> float:
    """req/s of SET (get_range None) or of GET over the dataset's keys."""
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS)]
    argv += ["-n", str(n), "-P", str(pipeline), "-d", str(size), "--csv"]
    if get_range is None:
        argv += ["-r", "100000000", "-t", "set"]
    else:
        argv += ["-r", str(get_range), "GET", f"g{size}:__rand_int__"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    rows = list(csv.reader(io.StringIO(done.stdout)))
    if done.returncode != 0 or len(rows) < 2:
        raise RuntimeError(f"redis-benchmark failed ({done.returncode}): {done.stderr[-500:]}")
    return float(rows[-1][1])


async def latencies(port: int, n: int) -> dict[str, float]:
    """p50/p99 ms of SET then GET of new 4 KiB keys, one request at a time."""
    c = await Resp.connect(port)
    value = os.urandom(4 * KiB)
    sets: list[float] = []
    gets: list[float] = []
    try:
        for i in range(n):
            t = time.perf_counter()
            await c.call(b"SET", b"lat:%d" % i, value)
            sets.append(time.perf_counter() - t)
        for i in range(n):
            t = time.perf_counter()
            if await c.call(b"GET", b"lat:%d" % i) != value:
                raise RuntimeError(f"port {port}: lat:{i} did not read back")
            gets.append(time.perf_counter() - t)
    finally:
        await c.close()
    return {
        "SET p50": pct(sets, 0.5) * 1e3,
        "SET p99": pct(sets, 0.99) * 1e3,
        "GET p50": pct(gets, 0.5) * 1e3,
        "GET p99": pct(gets, 0.99) * 1e3,
    }


async def bandwidth(port: int, n: int) -> dict[str, float]:
    """MB/s of SET then GET of n new 512 KiB values over one connection, one at a time."""
    c = await Resp.connect(port)
    values = [os.urandom(512 * KiB) for _ in range(4)]
    try:
        t = time.perf_counter()
        for i in range(n):
            await c.call(b"SET", b"mb:%d" % i, values[i % 4])
        set_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(n):
            await c.call(b"GET", b"mb:%d" % i)
        get_s = time.perf_counter() - t
    finally:
        await c.close()
    mb = n * 512 * KiB / 1e6
    return {"SET MB/s": mb / set_s, "GET MB/s": mb / get_s}


# -- the table -----------------------------------------------------------------------


@dataclass
class Row:
    label: str
    unit: str
    values: dict[str, float | None]


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        return f"{v / 2**20:.1f} MiB"
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "ms":
        return f"{v:.3f} ms"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def print_table(rows: list[Row], names: list[str]) -> None:
    head = ["test", "unit", *names, "zdb/redis"]
    body = []
    for r in rows:
        zdb, redis = r.values.get("zos zdb"), r.values.get("redis AOF")
        ratio = f"{zdb / redis:.2f}" if zdb is not None and redis else "-"
        body.append([r.label, r.unit, *(fmt(r.values.get(n), r.unit) for n in names), ratio])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for i, line in enumerate([head, *body]):
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(line[2:], widths[2:], strict=True)]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# -- the run -------------------------------------------------------------------------


def each(servers: list[Server], fn: Callable[[Server], float | None]) -> dict[str, float | None]:
    """One figure per server, the servers taken one after the other for each test so
    that a change in the machine's load falls on all of them alike."""
    return {s.name: fn(s) for s in servers}


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(servers: list[Server], args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    rows.append(Row("start, empty data dir", "s", each(servers, lambda s: s.start())))
    rows.append(Row("RSS idle, empty data dir", "bytes", each(servers, lambda s: float(s.rss()))))
    if args.idle:
        return rows
    plan = dataset_plan(args.dataset_keys, args.requests)
    desc = ", ".join(f"{n} x {size_label(s)}" for s, n in plan)
    note(f"dataset: {desc}")

    def write(s: Server) -> float:
        t = time.perf_counter()
        asyncio.run(fill(s.port, plan))
        return time.perf_counter() - t

    rows.append(Row("write dataset, 1 conn, pipelined", "s", each(servers, write)))

    def disk(s: Server) -> float | None:
        return float(dir_bytes(s.data)) if s.persistent else None

    rows.append(Row(f"on disk after dataset ({desc})", "bytes", each(servers, disk)))
    rows.append(Row("RSS after dataset", "bytes", each(servers, lambda s: float(s.rss()))))

    def restart(s: Server) -> float | None:
        if not s.persistent:
            return None
        s.stop()
        return s.start()

    note("restart")
    rows.append(Row("restart with dataset, until PING", "s", each(servers, restart)))

    for size in SIZES:
        n = args.requests if size < 512 * KiB else max(50, args.requests // 50)
        keys = next(count for s, count in plan if s == size)
        for pipeline in PIPELINES:
            label = f"{size_label(size)} P{pipeline}"
            note(f"redis-benchmark {label}, -n {n}")
            for op, keyspace in (("SET", None), ("GET", keys)):
                bench = partial(redis_benchmark, size=size, pipeline=pipeline, n=n)
                figures = each(servers, lambda s, b=bench, k=keyspace: b(s.port, get_range=k))
                rows.append(Row(f"{op} {label}", "req/s", figures))

    note("one-connection client")
    per = {s.name: asyncio.run(latencies(s.port, args.latency_requests)) for s in servers}
    for k in ("SET p50", "SET p99", "GET p50", "GET p99"):
        lat = {name: figures[k] for name, figures in per.items()}
        rows.append(Row(f"{k[:3]} 4 KiB, 1 conn, {k[4:]}", "ms", lat))
    mbn = max(20, args.requests // 100)
    per = {s.name: asyncio.run(bandwidth(s.port, mbn)) for s in servers}
    for k in ("SET MB/s", "GET MB/s"):
        rows.append(Row(f"{k[:3]} 512 KiB, 1 conn", "MB/s", {n: f[k] for n, f in per.items()}))
    rows.append(Row("RSS after the whole load", "bytes", each(servers, lambda s: float(s.rss()))))
    return rows


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run as Ctrl-C does, so every `finally` runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=20000, help="per redis-benchmark run (512 KiB: /50)"
    )
    parser.add_argument("--dataset-keys", type=int, default=100_000, help="64 B keys to GET")
    parser.add_argument("--latency-requests", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--redis-noaof", action="store_true", help="add redis --appendonly no")
    parser.add_argument("--idle", action="store_true", help="only start time and idle RSS")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.quick:
        args.requests, args.dataset_keys, args.latency_requests = 2000, 5000, 500
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run scripts/setup")
    work = Path(tempfile.mkdtemp(prefix="zos-zdb-bench-", dir=args.workdir))
    servers: list[Server] = []
    try:
        with cleanup_on_signals():
            servers = make_servers(work, args.redis_noaof)
            version = (
                subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
                .stdout.split()[2]
                .removeprefix("v=")
            )
            note(f"{', '.join(s.name for s in servers)}; redis {version}; {os.cpu_count()} CPUs")
            t = time.perf_counter()
            rows = run(servers, args)
            note(f"total {time.perf_counter() - t:.0f}s")
            if not args.idle:
                print(
                    f"redis-benchmark -c {CLIENTS}; SET with -r 1e8 (new keys), GET of the "
                    f"dataset's keys; {os.cpu_count()} CPUs, redis {version}"
                )
            print_table(rows, [s.name for s in servers])
    except KeyboardInterrupt:
        note("interrupted")
        sys.exit(130)
    finally:
        for s in servers:
            with contextlib.suppress(Exception):
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
