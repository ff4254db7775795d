"""`zos flist pack | inspect | unpack | publish | list`."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
import time
from pathlib import Path

from zos.cli import CliError
from zos.cli._io import add_key_options, identity_from_args
from zos.cli._options import add_actions


def register(sub: argparse._SubParsersAction) -> None:
    fs = add_actions(sub, "flist", "pack, inspect, unpack and publish flists (rfs .fl)")

    p = fs.add_parser("pack", help="pack a directory, tar or container image into an .fl")
    p.add_argument("source", type=Path, help="directory, tar archive, OCI layout or docker save")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .fl to write")
    p.add_argument(
        "--store",
        action="append",
        required=True,
        metavar="[xx-yy=]URL",
        help="dir://PATH, http(s)://HUB or zdb://HOST:PORT/NS; repeat to route or replicate",
    )
    p.add_argument("--format", choices=["auto", "dir", "tar", "image"], default="auto")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--twin", type=int, help="twin id that signs block writes to a hub")
    add_key_options(p)
    p.set_defaults(handler=cmd_pack)

    i = fs.add_parser("inspect", help="show an flist's tree, sizes, tags, blocks and stores")
    i.add_argument("flist", help="path or hub URL of the .fl")
    i.add_argument("--json", action="store_true")
    i.add_argument("--summary", action="store_true", help="leave out the tree")
    i.set_defaults(handler=cmd_inspect)

    u = fs.add_parser("unpack", help="fetch, verify and write an flist's tree")
    u.add_argument("flist", help="path or hub URL of the .fl")
    u.add_argument("target", type=Path, help="new or empty directory")
    u.add_argument("--store", action="append", metavar="[xx-yy=]URL", help="instead of routes")
    u.add_argument("--strip-setuid", action="store_true", help="clear setuid/setgid, not refuse")
    u.add_argument("--no-owners", action="store_true", help="do not set uid/gid")
    u.set_defaults(handler=cmd_unpack)

    pub = fs.add_parser("publish", help="upload an .fl to a hub under your twin")
    pub.add_argument("flist", type=Path)
    pub.add_argument("--hub", required=True, help="hub base URL")
    pub.add_argument("--twin", type=int, required=True)
    pub.add_argument("--name", help="name on the hub (default: the file name)")
    add_key_options(pub)
    pub.set_defaults(handler=cmd_publish)

    ls = fs.add_parser("list", help="list the flists a twin published on a hub")
    ls.add_argument("--hub", required=True)
    ls.add_argument("--twin", type=int, required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)


def _signer(args: argparse.Namespace, needed: bool):  # -> HubSigner | None
    from zos.flist import HubSigner

    identity = identity_from_args(args, required=needed)
    if identity is None:
        return None
    if args.twin is None:
        if needed:
            raise CliError("--twin is needed to sign writes to a hub")
        return None
    return HubSigner(identity, args.twin)


def _errors():
    from zos.flist import FlistError, StoreError
    from zos.flist.errors import BlockError

    return (FlistError, StoreError, BlockError)


def cmd_pack(args: argparse.Namespace) -> int:
    from zos.flist import Router, pack

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    needs_hub = any("http://" in s or "https://" in s for s in args.store)
    try:
        router = Router.parse(args.store, _signer(args, needs_hub))
    except _errors() as e:
        raise CliError(str(e)) from None

    async def run():
        try:
            return await pack(args.source, args.output, router, fmt=args.format, tags=tags)
        finally:
            await router.close()

    started = time.monotonic()
    try:
        result = asyncio.run(run())
    except _errors() as e:
        raise CliError(str(e)) from None
    took = time.monotonic() - started
    for line in result.skipped:
        print(f"skipped {line}")
    print(
        f"{result.path}: {result.files} files, {result.dirs} dirs, {result.symlinks} symlinks,"
        f" {result.bytes} bytes in {result.blocks} blocks ({result.new_blocks} distinct)"
        f" in {took:.1f}s"
    )
    return 0


def _mode_string(mode: int) -> str:
    return stat.filemode(mode)


def cmd_inspect(args: argparse.Namespace) -> int:
    from zos.flist import open_flist

    try:
        flist = asyncio.run(open_flist(args.flist, setuid="strip"))
    except _errors() as e:
        raise CliError(str(e)) from None
    counts: dict[str, int] = {}
    for e in flist.entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    summary = {
        "files": counts.get("file", 0),
        "dirs": counts.get("dir", 0),
        "symlinks": counts.get("symlink", 0),
        "fifos": counts.get("fifo", 0),
        "hard_links": sum(1 for e in flist.entries if e.link_to is not None),
        "size": flist.total_size,
        "blocks": flist.block_count,
        "distinct_blocks": len(flist.unique_blocks),
        "tags": flist.tags,
        "stores": [f"{r.start:02x}-{r.end:02x}={r.url}" for r in flist.routes],
    }
    if args.json:
        if not args.summary:
            summary["tree"] = [
                {
                    "path": "/" + e.path,
                    "type": e.kind,
                    "mode": oct(e.permissions),
                    "uid": e.uid,
                    "gid": e.gid,
                    "size": e.size,
                    "mtime": e.mtime,
                    **({"target": e.target} if e.target else {}),
                    **({"blocks": len(e.blocks)} if e.kind == "file" else {}),
                }
                for e in flist.entries
            ]
        print(json.dumps(summary, indent=2))
        return 0
    if not args.summary:
        by_ino = flist.by_ino
        for e in flist.entries:
            extra = f" -> {e.target}" if e.target else ""
            if e.link_to is not None:
                extra = f" => /{by_ino[e.link_to].path} (hard link)"
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime))
            print(
                f"{_mode_string(e.mode)} {e.uid:>5} {e.gid:>5} {e.size:>12} {when} /{e.path}{extra}"
            )
    print(
        f"files: {summary['files']}  dirs: {summary['dirs']}  symlinks: {summary['symlinks']}"
        f"  hard links: {summary['hard_links']}  size: {summary['size']} bytes"
    )
    print(f"blocks: {summary['blocks']} ({summary['distinct_blocks']} distinct)")
    for key, value in sorted(flist.tags.items()):
        print(f"tag {key}: {value}")
    for store in summary["stores"]:
        print(f"store {store}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from zos.flist import unpack_flist

    try:
        _, result = asyncio.run(
            unpack_flist(
                args.flist,
                args.target,
                stores=args.store,
                setuid="strip" if args.strip_setuid else "refuse",
                owners=False if args.no_owners else None,
            )
        )
    except _errors() as e:
        raise CliError(str(e)) from None
    print(f"{args.target}: {result.files} files, {result.bytes} bytes, {result.blocks} blocks")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from zos.hub.client import publish_flist

    signer = _signer(args, True)
    try:
        answer = asyncio.run(publish_flist(args.hub, signer, args.flist, args.name))
    except _errors() as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{args.flist}: {e.strerror}") from None
    print(f"{args.hub.rstrip('/')}/flists/{args.twin}/{answer['name']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from zos.hub.client import list_flists

    try:
        items = asyncio.run(list_flists(args.hub, args.twin))
    except _errors() as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for item in items:
        print(f"{item['name']}\t{item['size']}\t{args.hub.rstrip('/')}{item['url']}")
    return 0
