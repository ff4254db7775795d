"""`zos hub serve`: the flist hub (blocks and published flists over HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from zos.cli import CliError
from zos.cli._io import parse_listen, parse_twin_keys
from zos.primitives.signals import stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    hub = sub.add_parser("hub", help="the flist hub")
    hs = hub.add_subparsers(dest="hub_command", metavar="ACTION")
    hs.required = True
    s = hs.add_parser("serve", help="serve blocks and flists; writes signed by registered twins")
    s.add_argument("--root", type=Path, required=True, help="where blocks and flists are kept")
    s.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    s.add_argument("--nats", help="NATS URL of the grid: twins' keys come from the registry")
    s.add_argument(
        "--twin-key",
        action="append",
        default=[],
        metavar="ID=PUBHEX",
        help="a twin allowed to write, without a registry (repeatable)",
    )
    s.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    static = parse_twin_keys(args.twin_key)
    if not static and not args.nats:
        raise CliError("pass --nats URL (registry) or at least one --twin-key ID=PUBHEX")
    asyncio.run(_serve(args.root, host or "127.0.0.1", port, args.nats, static))
    return 0


async def _serve(root: Path, host: str, port: int, nats: str | None, static: dict) -> None:
    from zos.hub import Hub

    registry = None
    lookup_registry = None
    if nats:
        from zos.registry import RegistryClient

        registry = await RegistryClient(nats).connect()
        lookup_registry = registry.key_resolver()

    async def lookup(twin_id: int) -> bytes | None:
        if twin_id in static:
            return static[twin_id]
        return await lookup_registry(twin_id) if lookup_registry else None

    hub = await Hub(root, lookup).start(host, port)
    print(f"hub serving {root} at {hub.url}", flush=True)
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        await hub.stop()
        if registry is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(registry.close(), 5)
