"""The registry's state in JetStream: KV buckets, a stream of events, CAS helpers.

Buckets (history 1, `replicas` copies each):
  zos-twins       <twin id>        -> Twin
  zos-twin-keys   <public key hex> -> twin id         (one twin per key)
  zos-farms       <farm id>        -> Farm
  zos-farm-names  <lowercase name> -> farm id         (farm names are unique)
  zos-nodes       <node id>        -> Node
  zos-node-twins  <twin id>        -> node id         (a twin is at most one node)
  zos-contracts   <contract id>    -> NodeContract | NameContract
  zos-names       <name>           -> contract id     (live name contracts)
  zos-counters    twin|farm|node|contract -> "<last id given> <nonce>"
  zos-txids       <tx id>          -> accepted time   (entries expire after TX_ID_TTL)

Stream ZOS_REGISTRY holds `zos.registry.audit.<kind>` (every accepted transaction, with
its result; heartbeats are no transactions: `heartbeats`), `zos.registry.contracts.<node
id>` (ContractEvent) and `zos.registry.keychanges.<twin id>` (KeyChange).

Every value and stream message is signed by the registry's key (`signing`, context
`kv/<bucket>/<key>` or `stream/<subject>`) and checked when read, mirrors included: a
value that does not verify is refused (`bad_signature`), never used. (A deletion is a
KV marker and carries no signature: it can make a value absent, never forge one.)
Only the registry's own connection may touch the buckets and the stream at all.

Every write is conditional: `create` for keys that must not exist, `update` with the
revision read for changes, so service copies running side by side never overwrite each
other; a lost race is retried by re-reading. Ids come from the counters the same way.
Index keys are written before the record they point to; a crash between the two leaves
an id gap or an index to a missing record, which lookups treat as absent.

`Mirror` keeps an in-memory copy of a bucket, fed by a KV watch, for list queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StreamConfig
from nats.js.kv import KeyValue
from pydantic import BaseModel, TypeAdapter

from zos.bus.errors import BusError
from zos.registry.signing import RegistryKey, RegistrySigner
from zos.registry.tx import TX_ID_TTL

log = logging.getLogger(__name__)

BUCKETS = (
    "twins",
    "twin-keys",
    "farms",
    "farm-names",
    "nodes",
    "node-twins",
    "contracts",
    "names",
    "counters",
    "txids",
)
STREAM = "ZOS_REGISTRY"
AUDIT_PREFIX = "zos.registry.audit"
CONTRACTS_PREFIX = "zos.registry.contracts"
KEYCHANGES_PREFIX = "zos.registry.keychanges"
EVENTS_MAX_AGE = 30 * 24 * 3600.0
CAS_ATTEMPTS = 50
# Errors of a cluster electing new leaders after a server died: worth retrying.
TRANSIENT: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

T = TypeVar("T")


def dump(model: BaseModel | int | str) -> bytes:
    if isinstance(model, (int, str)):
        return str(model).encode()
    return model.model_dump_json().encode()


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.2, 0.002 * (attempt + 1)) * random.random())


def kv_context(bucket: str, key: str) -> str:
    return f"kv/{bucket}/{key}"


class Store:
    def __init__(
        self,
        js: JetStreamContext,
        signer: RegistrySigner,
        replicas: int = 1,
        retry_for: float = 8.0,
        admin_js: JetStreamContext | None = None,
    ) -> None:
        self.js = js
        # For what the server takes long to answer on a big grid: creating the mirrors'
        # consumers (last per subject over every key) and the heartbeat stream.
        self.admin_js = admin_js or js
        self.signer = signer
        self.key = RegistryKey(signer.public_key)
        self.replicas = replicas
        self.retry_for = retry_for
        self.kv: dict[str, KeyValue] = {}
        self._counter_locks: dict[str, asyncio.Lock] = {}

    async def setup(self) -> None:
        """Create the buckets and the stream if missing (idempotent; any copy may do it)."""
        for name in BUCKETS:
            bucket = f"zos-{name}"
            ttl = TX_ID_TTL if name == "txids" else None
            try:
                self.kv[name] = await self.js.create_key_value(
                    bucket=bucket, history=1, replicas=self.replicas, ttl=ttl
                )
            except nats.js.errors.BadRequestError:
                # Exists with another config (e.g. replicas): use it as it is.
                self.kv[name] = await self.js.key_value(bucket)
        config = StreamConfig(
            name=STREAM,
            subjects=[f"{AUDIT_PREFIX}.>", f"{CONTRACTS_PREFIX}.>", f"{KEYCHANGES_PREFIX}.>"],
            num_replicas=self.replicas,
            max_age=EVENTS_MAX_AGE,
            duplicate_window=120.0,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.stream_info(STREAM)

    # -- retries -------------------------------------------------------------------

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, again while JetStream is between leaders (a server died)."""
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                return await op()
            except TRANSIENT as e:
                if time.monotonic() > deadline:
                    log.warning("storage %s failed: %r", what, e)
                    raise BusError(
                        "unavailable", "registry storage is not answering; retry"
                    ) from None
                await asyncio.sleep(min(0.5, 0.05 * 2**attempt))
                attempt += 1

    # -- reads -----------------------------------------------------------------------

    async def get_raw(self, bucket: str, key: str) -> tuple[bytes, int] | None:
        async def read() -> tuple[bytes, int] | None:
            try:
                entry = await self.kv[bucket].get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
            if entry.value is None:
                return None
            return entry.value, entry.revision or 0

        found = await self._retry(f"get {bucket}/{key}", read)
        if found is None:
            return None
        return self.open(bucket, key, found[0]), found[1]

    def open(self, bucket: str, key: str, blob: bytes) -> bytes:
        """A stored value's bytes, once its signature is checked."""
        return self.key.open(kv_context(bucket, key), blob, f"stored value {bucket}/{key}")

    async def get(self, bucket: str, key: str | int, parse: TypeAdapter[T]) -> tuple[T, int] | None:
        raw = await self.get_raw(bucket, str(key))
        if raw is None:
            return None
        return parse.validate_json(raw[0]), raw[1]

    async def get_int(self, bucket: str, key: str) -> int | None:
        raw = await self.get_raw(bucket, key)
        return int(raw[0]) if raw is not None else None

    # -- writes ----------------------------------------------------------------------

    async def _write(self, bucket: str, key: str, data: bytes, last: int) -> int | None:
        """Write if the key's revision is `last` (0: absent); None if it is not.

        A write whose acknowledgement was lost in a failover is retried; if the retry
        then finds our own bytes in place, the first attempt went through. Callers make
        their bytes unique to the write (ids, nonces, timestamps) so this cannot mistake
        another writer's value for ours.
        """
        kv = self.kv[bucket]
        signed = self.signer.sign(kv_context(bucket, key), data)
        interrupted = False
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                if last == 0:
                    return await kv.create(key, signed)
                return await kv.update(key, signed, last=last)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                # create() re-reads the key after a lost race to allow re-creating a deleted
                # one; on a cluster that read can reach a replica that has not seen the
                # winner yet and says "not found". Either way the key exists: we lost.
                if interrupted:
                    current = await self.get_raw(bucket, key)
                    if current is not None and current[0] == data:
                        return current[1]
                return None
            except TRANSIENT as e:
                interrupted = True
                if time.monotonic() > deadline:
                    log.warning("storage write %s/%s failed: %r", bucket, key, e)
                    raise BusError(
                        "unavailable", "registry storage is not answering; retry"
                    ) from None
                await asyncio.sleep(min(0.5, 0.05 * 2**attempt))
                attempt += 1

    async def create(self, bucket: str, key: str | int, value: BaseModel | int | str) -> int | None:
        """Write `key` if it does not exist; its revision, or None when it already does."""
        return await self._write(bucket, str(key), dump(value), 0)

    async def create_new(self, bucket: str, key: int, value: BaseModel) -> int:
        """Write the record of a freshly taken id; a clash means the counter went wrong."""
        rev = await self.create(bucket, key, value)
        if rev is None:
            raise BusError("conflict", f"{bucket[:-1]} {key} exists already")
        return rev

    async def update(
        self,
        bucket: str,
        key: str | int,
        parse: TypeAdapter[T],
        change: Callable[[T], T | Awaitable[T]],
    ) -> tuple[T, int]:
        """Read, change, write back only if nobody wrote in between; retried on a race.

        `change` may raise BusError to refuse; raises not_found when the key is absent.
        """
        for attempt in range(CAS_ATTEMPTS):
            current = await self.get(bucket, key, parse)
            if current is None:
                raise BusError("not_found", f"{bucket[:-1]} {key} does not exist")
            value, revision = current
            new = change(value)
            if asyncio.iscoroutine(new):
                new = await new
            rev = await self._write(bucket, str(key), dump(new), revision)  # type: ignore[arg-type]
            if rev is not None:
                return new, rev  # type: ignore[return-value]
            await _backoff(attempt)
        raise BusError("busy", f"{bucket[:-1]} {key} is being changed too often; try again")

    async def delete(self, bucket: str, key: str | int) -> int:
        """Delete `key` (a KV delete marker); the marker's revision."""

        # As KeyValue.delete does, but keeping the revision for the mirrors.
        async def delete() -> int:
            subject = f"$KV.zos-{bucket}.{key}"
            ack = await self.js.publish(subject, b"", headers={"KV-Operation": "DEL"})
            return ack.seq

        return await self._retry(f"delete {bucket}/{key}", delete)

    async def next_id(self, counter: str, count: int = 1) -> int:
        """The next id of `counter` (the first of `count` ids taken at once): a
        compare-and-set increment, never a duplicate.

        The stored value is "<id> <random>", unique to its writer, so a retried write
        recognises itself (see `_write`). Takes are serialised within this process, so
        only copies of the service contend with each other.
        """
        async with self._counter_locks.setdefault(counter, asyncio.Lock()):
            for attempt in range(CAS_ATTEMPTS):
                raw = await self.get_raw("counters", counter)
                value = 1 if raw is None else int(raw[0].split()[0]) + 1
                data = f"{value + count - 1} {os.urandom(8).hex()}".encode()
                if await self._write("counters", counter, data, raw[1] if raw else 0):
                    return value
                await _backoff(attempt)
        raise BusError("busy", f"could not take a {counter} id; try again")

    async def claim_tx(self, tx_id: str) -> bool:
        """Record a transaction id; False if it was already recorded (a replay)."""
        # The value is unique to this claim, so a retried claim recognises itself.
        stamp = f"{time.time():.6f} {os.urandom(8).hex()}"
        return await self.create("txids", tx_id, stamp) is not None

    async def publish(self, subject: str, payload: dict[str, Any], msg_id: str) -> int:
        """Append to the event stream, signed; its sequence number (a retry is
        deduplicated by the message id)."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        signed = self.signer.sign(f"stream/{subject}", data)

        async def publish() -> int:
            ack = await self.js.publish(subject, signed, headers={"Nats-Msg-Id": msg_id})
            return ack.seq

        return await self._retry(f"publish {subject}", publish)

    async def read_stream(
        self, subject: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` messages of `subject` after stream sequence `after_seq`:
        (sequence, checked bytes), oldest first."""
        found: list[tuple[int, bytes]] = []
        seq = after_seq + 1
        while len(found) < limit:

            async def get(seq: int = seq) -> Any:
                try:
                    return await self.js.get_msg(STREAM, seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    return None

            msg = await self._retry(f"read {subject}", get)
            if msg is None or msg.seq is None or msg.data is None:
                break
            body = self.key.open(f"stream/{subject}", msg.data, f"stream message {msg.seq}")
            found.append((msg.seq, body))
            seq = msg.seq + 1
        return found


M = TypeVar("M", bound=BaseModel)


class Mirror(Generic[M]):
    """An in-memory copy of one bucket, for list queries.

    Fed by an ordered push consumer on the bucket's stream (latest value per key, then
    every change) with a 1 s idle heartbeat, so a consumer lost with a server is noticed
    and recreated within seconds; and, as a backstop, re-read in full every
    `resync_every` seconds. Entries carry their revision, so an older value never
    replaces a newer one whatever the order they arrive in. `apply` lets the service put
    its own writes in at once, so a list query right after a change it made sees it.
    """

    def __init__(
        self, store: Store, bucket: str, parse: TypeAdapter[M], resync_every: float = 30.0
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.kv = store.kv[bucket]
        self.parse = parse
        self.resync_every = resync_every
        self.items: dict[str, tuple[int, M | None]] = {}  # None: deleted at that revision
        self._sorted: list[M] | None = None  # live values by id, rebuilt after a change
        self._dumped: dict[str, tuple[int, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # Told every change (key, value or None), as it is applied (the node index).
        self.listeners: list[Callable[[str, M | None], None]] = []

    def _has(self, key: str, revision: int) -> bool:
        """Whether the mirror holds `key` at `revision` or newer."""
        have = self.items.get(key)
        return have is not None and have[0] >= revision

    def apply(self, key: str, revision: int, value: M | None) -> None:
        if self._has(key, revision):
            return
        self.items[key] = (revision, value)
        self._sorted = None
        for listener in self.listeners:
            listener(key, value)

    def values(self) -> list[M]:
        """Live values ordered by numeric key (ids); do not modify the list."""
        if self._sorted is None:
            live = [(k, v) for k, (_, v) in self.items.items() if v is not None]
            live.sort(key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
            self._sorted = [v for _, v in live]
        return self._sorted

    def dumped(self, key: str) -> dict[str, Any]:
        """The JSON form of one live value, computed once per revision."""
        revision, value = self.items[key]
        cached = self._dumped.get(key)
        if cached is None or cached[0] != revision:
            assert value is not None
            cached = (revision, value.model_dump(mode="json"))
            self._dumped[key] = cached
        return cached[1]

    async def start(self, timeout: float = 120.0) -> None:
        # 100,000 nodes take a while to read on a loaded machine.
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _take(self, key: str, revision: int, deleted: bool, data: bytes | None) -> None:
        if self._has(key, revision):
            return  # read already (a resync re-reads every key: 100,000 signatures)
        if deleted or not data:
            self.apply(key, revision, None)
            return
        try:
            value = self.parse.validate_json(self.store.open(self.bucket, key, data))
        except (ValueError, BusError):
            log.warning("mirror %s: bad entry %s", self.bucket, key)
            return
        self.apply(key, revision, value)

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject.split(".", 2)[2]
        op = (msg.headers or {}).get("KV-Operation")
        seq, _, pending = position(msg)
        self._take(key, seq, op in ("DEL", "PURGE"), msg.data)
        if pending == 0:
            self._ready.set()

    async def resync(self) -> None:
        """Read the latest value of every key once (a one-shot watch)."""
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    return
                deleted = entry.operation in ("DEL", "PURGE")
                self._take(entry.key, entry.revision or 0, deleted, entry.value)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _run(self) -> None:
        bucket = f"zos-{self.bucket}"
        await follow(
            self.store.admin_js,
            f"$KV.{bucket}.>",
            f"KV_{bucket}",
            self._on_msg,
            self._ready.set,
            what=f"mirror {self.bucket}",
            every=self.resync_every,
            then=self.resync,
        )


def position(msg: Msg) -> tuple[int, float, int]:
    """A stream message's sequence, the time the stream stored it (unix seconds) and how
    many are pending after it, read from its reply subject. nats-py's `msg.metadata`
    builds datetimes and dataclasses for the same: 12 µs a message, a third of what
    reading 10,000 heartbeats a second cost a service copy."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<consumer seq>.<ns>.<pending>, or
        # with <domain>.<account hash> before the stream (and a random token at the end)
        at = 5 if len(tokens) == 9 else 7 if len(tokens) in (11, 12) else 0
        if at:
            return int(tokens[at]), int(tokens[at + 2]) / 1e9, int(tokens[at + 3])
    meta = msg.metadata  # raises NotJSMessageError
    return meta.sequence.stream, meta.timestamp.timestamp(), meta.num_pending


async def follow(
    js: JetStreamContext,
    subject: str,
    stream: str,
    on_msg: Callable[[Msg], Awaitable[None]],
    on_empty: Callable[[], None],
    *,
    what: str,
    every: float = 3600.0,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Feed `on_msg` the last message of every subject of `stream`, then every new one,
    for ever: an ordered push consumer with a 1 s idle heartbeat, recreated when lost
    (a server died). `on_empty` when there is nothing to read at the start; `then`
    every `every` seconds."""
    while True:
        sub = None
        try:
            sub = await js.subscribe(
                subject,
                stream=stream,
                cb=on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                idle_heartbeat=1.0,
            )
            if (await sub.consumer_info()).num_pending == 0:
                on_empty()  # an empty stream sends nothing to wait for
            while True:
                await asyncio.sleep(every)
                if then is not None:
                    await then()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s: watch failed (%r); restarting", what, e)
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        await asyncio.sleep(0.5)
