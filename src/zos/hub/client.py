"""Talk to a hub as a user: publish, list and download flists."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from zos.flist.errors import StoreError
from zos.flist.hubsign import HubSigner
from zos.flist.ops import download_flist


def _url(hub: str, path: str) -> str:
    return hub.rstrip("/") + path


async def _answer(resp: aiohttp.ClientResponse, what: str) -> Any:
    if resp.status >= 300:
        try:
            detail = (await resp.json()).get("error", "")
        except (aiohttp.ContentTypeError, ValueError):
            detail = (await resp.text())[:200]
        raise StoreError(f"{what}: hub answered {resp.status}: {detail}")
    return await resp.json()


async def publish_flist(hub: str, signer: HubSigner, flist: Path, name: str | None = None) -> Any:
    name = name or Path(flist).name
    url = _url(hub, f"/flists/{signer.twin_id}/{urllib.parse.quote(name, safe='')}")
    body = Path(flist).read_bytes()
    path = urllib.parse.urlsplit(url).path
    headers = signer.headers("PUT", path, body)
    try:
        async with aiohttp.ClientSession() as s, s.put(url, data=body, headers=headers) as resp:
            return await _answer(resp, f"publish {name}")
    except aiohttp.ClientError as e:
        raise StoreError(f"{hub}: {e}") from None


async def unpublish_flist(hub: str, signer: HubSigner, name: str) -> bool:
    """Remove one of the signer's flists from the hub; False if it was not there."""
    url = _url(hub, f"/flists/{signer.twin_id}/{urllib.parse.quote(name, safe='')}")
    path = urllib.parse.urlsplit(url).path
    headers = signer.headers("DELETE", path, b"")
    try:
        async with aiohttp.ClientSession() as s, s.delete(url, headers=headers) as resp:
            if resp.status == 404:
                return False
            await _answer(resp, f"remove {name}")
            return True
    except aiohttp.ClientError as e:
        raise StoreError(f"{hub}: {e}") from None


async def list_flists(hub: str, twin_id: int) -> list[dict[str, Any]]:
    try:
        async with aiohttp.ClientSession() as s, s.get(_url(hub, f"/flists/{twin_id}")) as resp:
            return (await _answer(resp, f"list flists of twin {twin_id}"))["flists"]
    except aiohttp.ClientError as e:
        raise StoreError(f"{hub}: {e}") from None


async def fetch_flist(hub: str, twin_id: int, name: str, dest: Path) -> Path:
    return await download_flist(
        _url(hub, f"/flists/{twin_id}/{urllib.parse.quote(name, safe='')}"), dest
    )
