"""The flist operations the CLI and the node use: fetch an `.fl`, unpack it, inspect it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import aiohttp

from zos.flist.errors import FlistError, StoreError
from zos.flist.format import Flist, SetuidPolicy, read_flist
from zos.flist.policy import FetchPolicy
from zos.flist.stores import Router, check_address, fetch_error, http_session
from zos.flist.unpack import UnpackResult, unpack
from zos.primitives.trees import clear_directory, remove_tree

MAX_FLIST_BYTES = 512 * 1024 * 1024


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


async def download_flist(url: str, dest: Path, guard: FetchPolicy | None = None) -> Path:
    """Download an `.fl` from a hub URL to `dest` (written whole or not at all); with a
    `guard` (a tenant's URL on a node), only from where it allows. Redirects are not
    followed, and an error never repeats what the remote sent."""
    tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.part")
    try:
        await check_address(guard, url)
        async with (
            http_session(guard, 600) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise FlistError(f"{url}: hub answered {resp.status}")
            size = 0
            with open(tmp, "wb") as f:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_FLIST_BYTES:
                        raise FlistError(f"{url}: larger than {MAX_FLIST_BYTES} bytes")
                    f.write(chunk)
        os.replace(tmp, dest)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise FlistError(f"{url}: {fetch_error(e)}") from None
    except StoreError as e:  # the guard refused it
        raise FlistError(f"{url}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


async def open_flist(location: str | Path, *, setuid: SetuidPolicy = "refuse") -> Flist:
    """Read and check a local `.fl` or one at a hub URL."""
    if isinstance(location, str) and is_url(location):
        with tempfile.TemporaryDirectory(prefix="zos-fl-") as tmp:
            path = await download_flist(location, Path(tmp) / "flist.fl")
            return read_flist(path, setuid=setuid)
    return read_flist(Path(location), setuid=setuid)


def router_for(
    flist: Flist, stores: list[str] | None = None, guard: FetchPolicy | None = None
) -> Router:
    """The given stores, or else the flist's own routes (with a `guard`: only routes to
    network stores it allows)."""
    if stores:
        return Router.parse(stores)
    if not flist.routes:
        raise FlistError("the flist has no routes: pass --store")
    return Router.from_routes(flist.routes, guard=guard)


async def unpack_flist(
    location: str | Path,
    target: Path,
    *,
    stores: list[str] | None = None,
    setuid: SetuidPolicy = "refuse",
    owners: bool | None = None,
) -> tuple[Flist, UnpackResult]:
    """Check, fetch, verify and write a tree; on any failure nothing is left in `target`."""
    flist = await open_flist(location, setuid=setuid)
    router = router_for(flist, stores)
    target = Path(target)
    existed = target.exists()
    if existed and (target.is_symlink() or not target.is_dir() or any(target.iterdir())):
        raise FlistError(f"{target}: target must be a new or empty directory")
    try:
        result = await unpack(flist, target, router.get, owners=owners)
    except BaseException:
        if target.is_dir() and not target.is_symlink():
            if existed:
                clear_directory(target)
            else:
                remove_tree(target)
        raise
    finally:
        await router.close()
    return flist, result
