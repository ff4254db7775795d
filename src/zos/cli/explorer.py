"""`zos explorer serve`: the web explorer of the grid.

Shared (default): it connects to the bus and reads the registry as a twin of its own
(`--key-file`, made on first start) and shows farms, nodes, capacity and contracts.
`--mine`: run by a user on their own machine with their key and connection (as `zos
ps`), on loopback only, it also shows that twin's deployments, read from their nodes; the
key never leaves this process. Either way every registry answer must be signed by the
registry key pinned here (`--registry-key`, ZOS_REGISTRY_KEY or the local grid's), never
one learnt from the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
from typing import TYPE_CHECKING

from zos.cli import CliError
from zos.cli._io import identity_from_args, parse_listen
from zos.cli._options import add_actions, add_grid_options, connect_grid

if TYPE_CHECKING:
    from zos.identity import Identity
    from zos.registry import RegistryClient


def register(sub: argparse._SubParsersAction) -> None:
    es = add_actions(sub, "explorer", "the web explorer of the grid")
    s = es.add_parser(
        "serve",
        help="serve the explorer's pages (read-only)",
        description="Shared: the grid's farms, nodes, capacity and contracts. With --mine, "
        "on your own machine with your key: your deployments too.",
    )
    s.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT", help="port 0: any")
    add_grid_options(s, json_flag=False)  # the grid, its registry key and the key, as `zos ps`
    s.add_argument(
        "--mine",
        action="store_true",
        help="your own explorer: with your key, on loopback only, showing your deployments",
    )
    s.add_argument(
        "--every", type=float, default=5.0, help="seconds between reads of the registry (5)"
    )
    s.add_argument("--log-level", default="info")
    s.set_defaults(handler=cmd_serve)


def _own_key(args: argparse.Namespace) -> Identity:
    """The shared explorer's own key: --mnemonic, ZOS_MNEMONIC, or --key-file (made the
    first time, as a node makes its key), never the operator's default key."""
    from zos.identity import Identity, write_key_file

    if (
        args.mnemonic
        or os.environ.get("ZOS_MNEMONIC")
        or (args.key_file and args.key_file.exists())
    ):
        identity = identity_from_args(args)
        assert identity is not None
        return identity
    if args.key_file is None:
        raise CliError(
            "the explorer needs a key of its own: --key-file F (made on first start) or "
            "--mnemonic; to see your deployments with your key, use --mine"
        )
    identity = Identity.generate()
    args.key_file.parent.mkdir(parents=True, exist_ok=True)
    write_key_file(args.key_file, identity)
    return identity


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    host = host or "127.0.0.1"
    if args.mine and not _loopback(host):
        raise CliError(
            f"--listen {args.listen}: --mine serves your key's view on loopback only "
            "(127.0.0.1, ::1 or localhost)"
        )
    if not 0.5 <= args.every <= 3600:
        raise CliError("--every: from 0.5 to 3600 seconds")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    identity = identity_from_args(args) if args.mine else _own_key(args)
    asyncio.run(_serve(args, identity, host, port))
    return 0


async def _shared_registry(args: argparse.Namespace, identity: Identity) -> RegistryClient:
    """The shared explorer's own registry client: its key on the bus, its own twin, the
    registry key pinned from the options or the local grid."""
    from zos.client.config import find_grid
    from zos.registry import RegistryClient

    where = find_grid(args.nats, args.hub, args.state_dir, args.registry_key)
    registry = RegistryClient(where.nats_url, identity, registry_key=where.registry_key)
    try:
        await registry.connect()
        await registry.ensure_twin()  # a twin like any user
    except BaseException:
        await registry.close()
        raise
    return registry


async def _serve(args: argparse.Namespace, identity: Identity, host: str, port: int) -> None:
    from zos.bus import BusError
    from zos.client import GridClientError
    from zos.client.config import ConfigError
    from zos.explorer import Explorer
    from zos.explorer.live import Live
    from zos.explorer.mine import MyDeployments
    from zos.explorer.snapshot import read_snapshot
    from zos.primitives.signals import serve_until_stopped

    mine = None
    try:
        if args.mine:
            grid = await connect_grid(args, identity)
            mine = MyDeployments(grid, max_age=args.every / 2)
            assert grid.registry is not None
            registry = grid.registry
        else:
            registry = await _shared_registry(args, identity)
    except (ConfigError, GridClientError) as e:
        raise CliError(str(e)) from None
    except BusError as e:
        if e.code == "bad_signature":
            raise CliError(
                f"the grid's answers are not signed by its registry key ({e.message}): "
                "refusing to show them"
            ) from None
        raise CliError(f"cannot reach the grid's registry: {e}") from None
    live = await Live(lambda: read_snapshot(registry), every=args.every).start()
    explorer = await Explorer(live, mine).start(host, port)
    who = f"yours, twin {mine.twin_id}" if mine else f"twin {registry.twin_id}"
    print(f"explorer ({who}) at {explorer.session_url}", flush=True)
    await serve_until_stopped(
        explorer.stop, live.stop, mine.close if mine is not None else registry.close
    )
