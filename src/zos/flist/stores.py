"""Block stores (dir://, http(s):// hub, zdb://) and the router that spreads blocks over them.

A route `[start, end]` sends every block whose id's first byte is in that range to its
store; overlapping routes replicate (writes go to all, reads try each in turn). Reads
verify `BLAKE2b-256(data) == id`, so a store that returns wrong bytes is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Protocol

import aiohttp

from zos.flist.blocks import ID_LEN, MAX_CIPHERTEXT, check_id
from zos.flist.errors import BlockError, StoreError
from zos.flist.files import write_atomic
from zos.flist.format import Route
from zos.flist.hubsign import HubSigner
from zos.flist.policy import FetchPolicy, endpoint
from zos.zdb.client import RespClient, RespError, RespUnavailable


class Store(Protocol):
    url: str  # the address written into a published flist (no password)

    async def get(self, block_id: bytes) -> bytes | None: ...
    async def put(self, block_id: bytes, data: bytes) -> None: ...
    async def close(self) -> None: ...


def _hex(block_id: bytes) -> str:
    if len(block_id) != ID_LEN:
        raise ValueError(f"block id must be {ID_LEN} bytes")
    return block_id.hex()


class DirStore:
    """Blocks as files `PATH/<hex[0:2]>/<hex>`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = f"dir://{self.path}"

    def _file(self, block_id: bytes) -> Path:
        h = _hex(block_id)
        return self.path / h[:2] / h

    async def get(self, block_id: bytes) -> bytes | None:
        return await asyncio.to_thread(self._read, self._file(block_id))

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(MAX_CIPHERTEXT + 1)
        except FileNotFoundError:
            return None

    async def put(self, block_id: bytes, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._file(block_id), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if not path.exists():  # content addressed: the same id is the same bytes
            write_atomic(path, data)

    async def close(self) -> None:
        return None


def fetch_error(e: BaseException) -> str:
    """What went wrong with a fetch, in our words only: never what the remote sent (a
    tenant could point the node at any service and read its banner back)."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(e, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(e, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "did not answer as an HTTP server"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "closed the connection"
    if isinstance(e, aiohttp.InvalidURL):
        return "not a valid URL"
    return "the request failed"


def http_session(guard: FetchPolicy | None, total: float) -> aiohttp.ClientSession:
    """A session for fetches; with a guard, every name it connects to is checked."""
    timeout = aiohttp.ClientTimeout(total=total, sock_connect=15)
    if guard is None:
        return aiohttp.ClientSession(timeout=timeout)
    connector = aiohttp.TCPConnector(resolver=guard.resolver(), family=socket.AF_INET)
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


async def check_address(guard: FetchPolicy | None, url: str) -> None:
    """An IP literal in `url` is not resolved (so not checked) by the session: check it."""
    where = endpoint(url)
    if guard is not None and where is not None:
        await guard.address(*where)


class HttpStore:
    """A hub: GET `BASE/<hex[0:2]>/<hex>` for anyone; PUT the same path, signed, to write.

    With a `guard` (a tenant's flist on a node), reads connect only where it allows."""

    def __init__(
        self, base: str, signer: HubSigner | None = None, guard: FetchPolicy | None = None
    ) -> None:
        parsed = urllib.parse.urlsplit(base)
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        self.base = base.rstrip("/")
        self.url = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", "")).rstrip("/")
        self.signer = signer
        self.guard = guard
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = http_session(self.guard, 120)
        return self._session

    def _url(self, block_id: bytes) -> str:
        h = _hex(block_id)
        return f"{self.base}/{h[:2]}/{h}"

    async def get(self, block_id: bytes) -> bytes | None:
        try:
            await check_address(self.guard, self.base)
            async with self.session.get(self._url(block_id), allow_redirects=False) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise StoreError(f"{self.url}: GET block answered {resp.status}")
                parts, size = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_CIPHERTEXT:
                        raise StoreError(f"{self.url}: block larger than any block")
                    parts.append(chunk)
                return b"".join(parts)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"{self.url}: {fetch_error(e)}") from None

    async def put(self, block_id: bytes, data: bytes) -> None:
        if self.signer is None:
            raise StoreError(f"{self.url}: writing to a hub needs a twin id and key")
        url = self._url(block_id)
        try:  # a block the hub has is the same bytes: do not send it again
            async with self.session.head(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError as e:
            raise StoreError(f"{self.url}: {e}") from None
        path = urllib.parse.urlsplit(url).path
        headers = self.signer.headers("PUT", path, data)
        try:
            async with self.session.put(url, data=data, headers=headers) as resp:
                if resp.status not in (200, 201):
                    text = (await resp.text())[:200]
                    raise StoreError(f"{self.url}: PUT block answered {resp.status}: {text}")
        except aiohttp.ClientError as e:
            raise StoreError(f"{self.url}: {e}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ZdbStore:
    """A 0-db namespace over RESP; the key is the raw 32-byte block id.

    With a `guard`, each connection goes only to an address it allows."""

    def __init__(
        self,
        host: str,
        port: int,
        namespace: str,
        password: str | None,
        guard: FetchPolicy | None = None,
    ) -> None:
        self.namespace = namespace
        self.password = password
        self.url = f"zdb://{host}:{port}/{namespace}"
        self.host, self.guard = host, guard
        self._client = RespClient(host, port, on_connect=self._select)
        self._lock = asyncio.Lock()

    async def _connect_to(self) -> None:
        if self.guard is not None and not self._client.connected:
            self._client.host = await self.guard.address(self.host, self._client.port)

    async def _select(self, client: RespClient) -> None:
        if self.namespace and self.namespace != "default":
            args = [b"SELECT", self.namespace.encode()]
            if self.password:
                args.append(self.password.encode())
            await client.raw_command(*args)

    async def get(self, block_id: bytes) -> bytes | None:
        try:
            async with self._lock:
                await self._connect_to()
                reply = await self._client.command(b"GET", block_id)
        except RespUnavailable as e:
            raise StoreError(f"{self.url}: GET: {e}") from None
        except RespError:  # what the server said stays there (it may not be a zdb at all)
            if self.guard is not None:
                # For a tenant's flist a refusal (a wrong password) looks like a missing
                # block: the node must not tell a namespace's password apart for anyone.
                return None
            raise StoreError(f"{self.url}: GET: the server refused it") from None
        if reply is not None and not isinstance(reply, bytes):
            raise StoreError(f"{self.url}: GET answered {type(reply).__name__}, not a value")
        return reply

    async def put(self, block_id: bytes, data: bytes) -> None:
        try:
            async with self._lock:
                reply = await self._client.command(b"SET", block_id, data)
        except (RespError, OSError) as e:
            raise StoreError(f"{self.url}: SET: {e}") from None
        # 0-db answers the key it stored, or nil when the same value is already there.
        if reply is not None and reply != block_id:
            raise StoreError(f"{self.url}: SET answered {reply!r:.80}, expected the key")

    async def close(self) -> None:
        await self._client.close()


_RANGE = re.compile(r"^(?P<start>[0-9a-fA-F]{2})-(?P<end>[0-9a-fA-F]{2})=(?P<url>.+)$")


def split_spec(spec: str) -> tuple[int, int, str]:
    """(first, last id byte, URL) of a store spec `[xx-yy=]URL`."""
    m = _RANGE.match(spec)
    if m is None:
        return 0, 255, spec
    start, end = int(m["start"], 16), int(m["end"], 16)
    if start > end:
        raise StoreError(f"{spec}: range start is after its end")
    return start, end, m["url"]


def make_store(
    url: str, signer: HubSigner | None = None, guard: FetchPolicy | None = None
) -> Store:
    """The store at `url`; with a `guard`, only a network store it allows (never dir://)."""
    parsed = urllib.parse.urlsplit(url)
    if guard is not None:
        guard.check_route(url)
    if parsed.scheme == "dir":
        path = parsed.netloc + parsed.path
        if not path:
            raise StoreError(f"{url}: dir:// needs a path")
        return DirStore(Path(path))
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise StoreError(f"{url}: needs a host")
        return HttpStore(url, signer, guard)
    if parsed.scheme == "zdb":
        if not parsed.hostname:
            raise StoreError(f"{url}: zdb:// needs host:port/namespace")
        namespace = parsed.path.strip("/").split("/")[-1] or "default"
        password = urllib.parse.unquote(parsed.password) if parsed.password else None
        return ZdbStore(parsed.hostname, parsed.port or 9900, namespace, password, guard)
    raise StoreError(f"{url}: unknown store type {parsed.scheme!r} (dir, http, https, zdb)")


class Router:
    """Stores by the first byte of the block id."""

    def __init__(self, routes: list[tuple[int, int, Store]] | None = None) -> None:
        self.routes: list[tuple[int, int, Store]] = list(routes or [])

    @classmethod
    def parse(cls, specs: list[str], signer: HubSigner | None = None) -> Router:
        """`[xx-yy=]URL` for each store, as `rfs pack --store` takes them."""
        router = cls()
        for spec in specs:
            start, end, url = split_spec(spec)
            router.routes.append((start, end, make_store(url, signer)))
        return router

    @classmethod
    def from_routes(
        cls, routes: list[Route], signer: HubSigner | None = None, guard: FetchPolicy | None = None
    ) -> Router:
        return cls([(r.start, r.end, make_store(r.url, signer, guard)) for r in routes])

    def public_routes(self) -> list[Route]:
        return [Route(s, e, store.url) for s, e, store in self.routes]

    def _stores(self, block_id: bytes) -> list[Store]:
        stores = [store for s, e, store in self.routes if s <= block_id[0] <= e]
        if not stores:
            raise StoreError(f"no store is routed for blocks starting with {block_id[0]:02x}")
        return stores

    async def get(self, block_id: bytes) -> bytes:
        """The block's ciphertext, checked against its id; tries each matching store."""
        errors = []
        for store in self._stores(block_id):
            try:
                data = await store.get(block_id)
                if data is None:
                    errors.append(f"{store.url}: not found")
                    continue
                check_id(block_id, data)
                return data
            except BlockError as e:
                # Say which store served the bad bytes; the block id is said once, below.
                errors.append(f"{store.url}: " + str(e).removeprefix(f"block {block_id.hex()}: "))
            except StoreError as e:
                errors.append(str(e))
        raise StoreError(f"block {block_id.hex()}: " + "; ".join(errors))

    async def put(self, block_id: bytes, data: bytes) -> None:
        await asyncio.gather(*(store.put(block_id, data) for store in self._stores(block_id)))

    async def close(self) -> None:
        for _, _, store in self.routes:
            with contextlib.suppress(Exception):
                await store.close()
