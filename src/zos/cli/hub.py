"""`zos hub serve`: the flist hub (blocks and published flists over HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path

from zos.cli import CliError
from zos.cli._io import parse_listen, parse_twin_keys
from zos.cli._options import add_actions, add_twin_key_option
from zos.identity import Identity, KeyError_, load_key_file, public_key_from_hex, write_key_file
from zos.primitives.signals import serve_until_stopped


def register(sub: argparse._SubParsersAction) -> None:
    hs = add_actions(sub, "hub", "the flist hub")
    s = hs.add_parser("serve", help="serve blocks and flists; writes signed by registered twins")
    s.add_argument("--root", type=Path, required=True, help="where blocks and flists are kept")
    s.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    s.add_argument("--nats", help="NATS URL of the grid: twins' keys come from the registry")
    s.add_argument(
        "--registry-key",
        help="with --nats: the grid registry's public key, hex; every answer must be "
        "signed by it (env ZOS_REGISTRY_KEY)",
    )
    s.add_argument(
        "--key-file",
        type=Path,
        help="with --nats: the hub's own key, its twin on the grid (default: "
        "ROOT/hub-key.json, made on first start)",
    )
    add_twin_key_option(s, "a twin allowed to write, without a registry (repeatable)")
    s.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    static = parse_twin_keys(args.twin_key)
    if not static and not args.nats:
        raise CliError("pass --nats URL (registry) or at least one --twin-key TWIN=PUBHEX")
    registry_key = None
    if args.nats:
        text = args.registry_key or os.environ.get("ZOS_REGISTRY_KEY")
        if not text:
            raise CliError("--nats needs --registry-key HEX (or ZOS_REGISTRY_KEY)")
        try:
            registry_key = public_key_from_hex(text)
        except KeyError_ as e:
            raise CliError(f"--registry-key: {e}") from None
    key_file = args.key_file or args.root / "hub-key.json"
    asyncio.run(
        _serve(args.root, host or "127.0.0.1", port, args.nats, registry_key, key_file, static)
    )
    return 0


def _hub_identity(path: Path) -> Identity:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key_file(path, Identity.generate())
    try:
        return load_key_file(path)
    except KeyError_ as e:
        raise CliError(f"--key-file: {e}") from None


async def _serve(
    root: Path,
    host: str,
    port: int,
    nats: str | None,
    registry_key: bytes | None,
    key_file: Path,
    static: dict,
) -> None:
    from zos.hub import Hub

    registry = None
    lookup_registry = None
    if nats and registry_key:
        from zos.registry import RegistryClient

        identity = _hub_identity(key_file)
        registry = await RegistryClient(nats, identity, registry_key=registry_key).connect()
        await registry.ensure_twin()  # the hub reads the registry as a twin of its own
        lookup_registry = await registry.key_resolver()

    async def lookup(twin_id: int) -> bytes | None:
        if twin_id in static:
            return static[twin_id]
        return await lookup_registry(twin_id) if lookup_registry else None

    hub = await Hub(root, lookup).start(host, port)
    print(f"hub serving {root} at {hub.url}", flush=True)

    async def close_registry() -> None:
        if registry is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(registry.close(), 5)

    await serve_until_stopped(hub.stop, close_registry)
