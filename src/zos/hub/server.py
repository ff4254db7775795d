"""The flist hub: content-addressed blocks and published flists over HTTP (aiohttp).

    GET|HEAD /<hex[0:2]>/<hex>      a block, to anyone (what the http store reads)
    PUT      /<hex[0:2]>/<hex>      store a block: signed by a registered twin, and the
                                    id must be the BLAKE2b-256 of the bytes
    GET      /flists                twins that published flists
    GET      /flists/<twin>         that twin's flists (name, size, hash, published)
    GET      /flists/<twin>/<name>  download one
    PUT|DELETE /flists/<twin>/<name>  publish / remove, signed by that same twin

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from zos.flist.blocks import MAX_CIPHERTEXT
from zos.flist.errors import FlistError
from zos.flist.files import hash_file, write_atomic
from zos.flist.format import read_flist
from zos.flist.hubsign import HEADER_HASH
from zos.hub.auth import AuthError, KeyLookup, RequestVerifier

MAX_FLIST_BYTES = 256 * 1024 * 1024
FLIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.fl$")
BAD_FLIST_NAME = "flist names are [A-Za-z0-9._-] ending in .fl"
BAD_BLOCK_ID = "block id must be 64 lowercase hex under its first 2"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refuse(status: int, message: str) -> web.Response:
    """An answer before the body was read: the connection closes, the body is never read."""
    resp = _error(status, message)
    resp.force_close()
    return resp


class _Refused(Exception):
    """A write turned down before its body is read (answered by `_refusals`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def _refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Refused as e:
        return _refuse(e.status, str(e))


def _send_file(path: Path | None, bad_name: str, missing: str) -> web.StreamResponse:
    """A stored file, 400 `bad_name` when the request names none, 404 `missing` when absent."""
    if path is None:
        return _error(400, bad_name)
    if not path.is_file():
        return _error(404, missing)
    return web.FileResponse(path)


def _declared_length(request: web.Request, limit: int, what: str) -> int:
    """The body's size, from Content-Length, checked before any of it is read."""
    length = request.content_length
    if length is None:
        raise AuthError(411, "a write needs a Content-Length (no chunked bodies)")
    if length > limit:
        raise AuthError(413, f"{what} is at most {limit} bytes")
    return length


class Hub:
    def __init__(self, root: Path, lookup: KeyLookup, max_skew: int = 300) -> None:
        self.root = Path(root)
        self.blocks = self.root / "blocks"
        self.flists = self.root / "flists"
        self.verifier = RequestVerifier(lookup, max_skew)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_FLIST_BYTES, middlewares=[_refusals])
        app.router.add_get("/", self._index)
        app.router.add_get("/flists", self._list_twins)
        app.router.add_get(r"/flists/{twin:\d+}", self._list_flists)
        app.router.add_get(r"/flists/{twin:\d+}/{name}", self._get_flist)
        app.router.add_put(r"/flists/{twin:\d+}/{name}", self._put_flist)
        app.router.add_delete(r"/flists/{twin:\d+}/{name}", self._delete_flist)
        app.router.add_get(r"/{prefix:[0-9a-f]{2}}/{id}", self._get_block)
        app.router.add_put(r"/{prefix:[0-9a-f]{2}}/{id}", self._put_block)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Hub:
        self.blocks.mkdir(parents=True, exist_ok=True)
        self.flists.mkdir(parents=True, exist_ok=True)
        # a short grace period: reads are idempotent and writes are renamed in whole
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1] if sockets else port
        self.url = f"http://{host}:{bound}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- helpers -----------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> int:
        """The signing twin, from the headers alone (before the body is read)."""
        return await self.verifier.verify(request.method, request.rel_url.raw_path, request.headers)

    async def _admit(
        self, request: web.Request, path: Path | None, bad_name: str, limit: int, what: str
    ) -> tuple[Path, int, int]:
        """A PUT before its body is read: (path, declared length, signing twin), or
        _Refused (a bad name, then a missing or too large length, then a bad signature)."""
        if path is None:
            raise _Refused(400, bad_name)
        try:
            length = _declared_length(request, limit, what)
            twin = await self._authorize(request)
        except AuthError as e:
            raise _Refused(e.status, str(e)) from None
        return path, length, twin

    def _block_path(self, request: web.Request) -> Path | None:
        block_id = request.match_info["id"]
        if not _HEX64.match(block_id) or block_id[:2] != request.match_info["prefix"]:
            return None
        return self.blocks / block_id[:2] / block_id

    def _flist_path(self, request: web.Request) -> Path | None:
        name = request.match_info["name"]
        if not FLIST_NAME.match(name):
            return None
        return self.flists / str(int(request.match_info["twin"])) / name

    # -- blocks ------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.json_response({"service": "zos hub", "block_path": "/<hex[0:2]>/<hex>"})

    async def _get_block(self, request: web.Request) -> web.StreamResponse:
        return _send_file(self._block_path(request), BAD_BLOCK_ID, "no such block")

    async def _put_block(self, request: web.Request) -> web.Response:
        path, length, _ = await self._admit(
            request, self._block_path(request), BAD_BLOCK_ID, MAX_CIPHERTEXT, "a block"
        )
        if request.headers[HEADER_HASH] != path.name:
            return _refuse(400, "block id is not the BLAKE2b-256 hash of its bytes")
        body = await _read_limited(request, length)
        digest = hashlib.blake2b(body or b"", digest_size=32).hexdigest()
        if body is None or digest != path.name:
            return _refuse(400, f"the body does not hash to its {HEADER_HASH}")
        if path.exists():
            return web.json_response({"id": digest, "stored": False}, status=200)
        await asyncio.to_thread(write_atomic, path, body)
        return web.json_response({"id": digest, "stored": True}, status=201)

    # -- flists ------------------------------------------------------------------------

    async def _list_twins(self, request: web.Request) -> web.Response:
        twins = sorted(
            int(p.name) for p in self.flists.iterdir() if p.name.isdigit() and any(p.iterdir())
        )
        return web.json_response({"twins": twins})

    async def _list_flists(self, request: web.Request) -> web.Response:
        directory = self.flists / str(int(request.match_info["twin"]))
        items = []
        if directory.is_dir():
            for p in sorted(directory.iterdir()):
                if FLIST_NAME.match(p.name) and p.is_file():
                    st = p.stat()
                    items.append(
                        {
                            "name": p.name,
                            "size": st.st_size,
                            "hash": await asyncio.to_thread(hash_file, p),
                            "published": int(st.st_mtime),
                            "url": f"/flists/{directory.name}/{p.name}",
                        }
                    )
        return web.json_response({"twin": int(directory.name), "flists": items})

    async def _get_flist(self, request: web.Request) -> web.StreamResponse:
        return _send_file(self._flist_path(request), BAD_FLIST_NAME, "no such flist")

    async def _put_flist(self, request: web.Request) -> web.Response:
        path, length, twin = await self._admit(
            request, self._flist_path(request), BAD_FLIST_NAME, MAX_FLIST_BYTES, "an flist"
        )
        if twin != int(request.match_info["twin"]):
            return _refuse(403, f"twin {twin} cannot publish under another twin's name")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.part")
        try:
            digest = await self._receive(request, tmp, length)
            if digest != request.headers[HEADER_HASH]:
                return _refuse(400, f"the body does not hash to its {HEADER_HASH}")
            try:
                flist = await asyncio.to_thread(read_flist, tmp, setuid="strip", name=path.name)
            except FlistError as e:
                return _error(400, f"not a valid flist: {e}")
            os.replace(tmp, path)
            os.utime(path, (time.time(), time.time()))
        finally:
            tmp.unlink(missing_ok=True)
        return web.json_response(
            {"name": path.name, "hash": digest, "files": len(flist.entries)}, status=201
        )

    async def _receive(self, request: web.Request, tmp: Path, limit: int) -> str:
        """Write at most `limit` bytes of the body to `tmp`; the BLAKE2b-256 of what came."""
        h = hashlib.blake2b(digest_size=32)
        size = 0
        with open(tmp, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    break  # more than declared: it cannot hash to what was signed
                h.update(chunk)
                f.write(chunk)
        return h.hexdigest()

    async def _delete_flist(self, request: web.Request) -> web.Response:
        path = self._flist_path(request)
        if path is None:
            return _error(400, BAD_FLIST_NAME)
        try:
            twin = await self._authorize(request)
        except AuthError as e:
            return _refuse(e.status, str(e))
        if request.headers[HEADER_HASH] != hashlib.blake2b(b"", digest_size=32).hexdigest():
            return _refuse(400, f"a DELETE has no body: {HEADER_HASH} must be the empty hash")
        if twin != int(request.match_info["twin"]):
            return _error(403, f"twin {twin} cannot remove another twin's flist")
        if not path.is_file():
            return _error(404, "no such flist")
        path.unlink()
        return web.json_response({"deleted": path.name})


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`."""
    parts, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)
