"""`zos twin register | show | rotate-key`: a key's twin in the grid registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from zos.cli import CliError
from zos.cli._options import add_actions, add_registry_client_options
from zos.cli.registry import print_result, with_registry
from zos.identity import KeyError_, load_key_file
from zos.registry.client import RegistryClient
from zos.registry.models import Twin


def register(sub: argparse._SubParsersAction) -> None:
    ts = add_actions(sub, "twin", "register and look up twins")

    reg = ts.add_parser("register", help="register this key as a twin (prints its id)")
    show = ts.add_parser("show", help="a twin by id, or this key's twin")
    show.add_argument("id", nargs="?", type=int)
    rotate = ts.add_parser(
        "rotate-key",
        help="make another key this twin's (signed by the current key, proven by the new)",
        description="Afterwards the old key no longer acts as the twin; use the new key file.",
    )
    rotate.add_argument("--new-key-file", type=Path, required=True, help="from `zos key new`")
    for p in (reg, show, rotate):
        add_registry_client_options(p)
    reg.set_defaults(handler=cmd_register)
    show.set_defaults(handler=cmd_show)
    rotate.set_defaults(handler=cmd_rotate)


def cmd_register(args: argparse.Namespace) -> int:
    twin = with_registry(args, RegistryClient.ensure_twin)
    print_result(args, twin, str(twin.id))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def show(client: RegistryClient) -> Twin:
        if args.id is not None:
            return await client.get_twin(args.id)
        return await client.get_twin(await client.my_twin_id())

    twin = with_registry(args, show)
    print_result(args, twin, f"twin {twin.id}  key {twin.public_key}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    try:
        new = load_key_file(args.new_key_file)
    except KeyError_ as e:
        raise CliError(f"--new-key-file: {e}") from None
    twin = with_registry(args, lambda client: client.rotate_key(new))
    print_result(args, twin, f"twin {twin.id}  key {twin.public_key}")
    return 0
