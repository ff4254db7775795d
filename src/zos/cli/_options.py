"""Option groups that several commands take, each declared once: the grid to talk to,
the registry key to trust, and a command's group of actions."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zos.cli._io import add_key_options

if TYPE_CHECKING:
    from zos.client import GridClient
    from zos.identity import Identity


def add_actions(
    sub: argparse._SubParsersAction, name: str, help: str
) -> argparse._SubParsersAction:
    """`zos NAME ACTION ...`: the command NAME, whose ACTION must be given."""
    command = sub.add_parser(name, help=help)
    actions = command.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    actions.required = True
    return actions


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
    *options: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    """`zos ... NAME`, run by `handler`, with the option groups `options` (e.g.
    add_grid_options); its own options are added to the parser it returns."""
    parser = sub.add_parser(name, help=help)
    for add in options:
        add(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_twin_key_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--twin-key TWIN=PUBHEX`, repeatable (read by zos.cli._io.parse_twin_keys)."""
    parser.add_argument("--twin-key", action="append", default=[], metavar="TWIN=PUBHEX", help=help)


def add_nats_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats",
        default=None,
        help="NATS URL(s), comma-separated (default: env ZOS_NATS or nats://127.0.0.1:4222)",
    )


def add_registry_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-key",
        help="the grid registry's public key, hex (default: env ZOS_REGISTRY_KEY, or the "
        "local grid's)",
    )


def add_registry_client_options(parser: argparse.ArgumentParser) -> None:
    """What a command that talks to the registry as a twin takes (`zos twin`, `zos farm`)."""
    add_key_options(parser)
    add_nats_option(parser)
    add_registry_key_option(parser)
    parser.add_argument("--json", action="store_true")


def add_grid_options(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """The grid (NATS, hub, registry key, local state) and the key, as the SDK needs them."""
    p.add_argument("--nats", help="NATS URL of the grid (or env ZOS_NATS; default: local grid)")
    p.add_argument("--hub", help="hub URL (or env ZOS_HUB; default: the local grid's)")
    p.add_argument(
        "--registry-key",
        help="the grid registry's public key, hex (or env ZOS_REGISTRY_KEY; default: the "
        "local grid's)",
    )
    p.add_argument("--state-dir", type=Path, help="the local grid's state dir (zos grid up)")
    add_key_options(p)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


async def connect_grid(args: argparse.Namespace, identity: Identity | None) -> GridClient:
    """A `GridClient` on the grid that add_grid_options' options name."""
    from zos.client import GridClient

    return await GridClient.connect(
        identity=identity,
        nats=args.nats,
        hub=args.hub,
        state_dir=args.state_dir,
        registry_key=args.registry_key,
    )
