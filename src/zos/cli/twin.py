"""`zos twin register | show`: a key's twin in the grid registry."""

from __future__ import annotations

import argparse

from zos.cli._io import add_key_options
from zos.cli.registry import add_nats_option, print_result, with_registry
from zos.registry.client import RegistryClient
from zos.registry.models import Twin


def register(sub: argparse._SubParsersAction) -> None:
    twin = sub.add_parser("twin", help="register and look up twins")
    ts = twin.add_subparsers(dest="twin_command", metavar="ACTION")
    ts.required = True

    reg = ts.add_parser("register", help="register this key as a twin (prints its id)")
    show = ts.add_parser("show", help="a twin by id, or this key's twin")
    show.add_argument("id", nargs="?", type=int)
    for p in (reg, show):
        add_key_options(p)
        add_nats_option(p)
        p.add_argument("--json", action="store_true")
    reg.set_defaults(handler=cmd_register)
    show.set_defaults(handler=cmd_show)


def cmd_register(args: argparse.Namespace) -> int:
    twin = with_registry(args, RegistryClient.ensure_twin)
    print_result(args, twin, str(twin.id))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def show(client: RegistryClient) -> Twin:
        if args.id is not None:
            return await client.get_twin(args.id)
        return await client.get_twin(await client.my_twin_id())

    twin = with_registry(args, show, key=args.id is None)
    print_result(args, twin, f"twin {twin.id}  key {twin.public_key}")
    return 0
