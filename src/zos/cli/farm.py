"""`zos farm create | token | list | show | nodes | remove-node | public-config`."""

from __future__ import annotations

import argparse

from zos.cli import CliError
from zos.cli._options import add_actions, add_registry_client_options
from zos.cli.registry import (
    parse_duration,
    print_result,
    with_registry,
)
from zos.registry.client import RegistryClient
from zos.registry.models import Farm, Node


def register(sub: argparse._SubParsersAction) -> None:
    fs = add_actions(sub, "farm", "create farms, hand out join tokens, list their nodes")

    create = fs.add_parser("create", help="create a farm owned by this key's twin")
    create.add_argument("name")
    token = fs.add_parser("token", help="print a join token for nodes of a farm you own")
    token.add_argument("farm_id", type=int)
    token.add_argument("--expires", default="24h", help="validity, e.g. 3600, 30m, 24h, 7d")
    token.add_argument(
        "--node-twin", type=int, default=0, help="only this twin may use it (default: any)"
    )
    lst = fs.add_parser("list", help="list farms")
    lst.add_argument("--owner", type=int, help="only farms of this twin")
    show = fs.add_parser("show", help="show a farm")
    show.add_argument("farm_id", type=int)
    nodes = fs.add_parser("nodes", help="list the nodes of a farm")
    nodes.add_argument("farm_id", type=int)
    nodes.add_argument("--status", choices=["up", "down"])
    remove = fs.add_parser("remove-node", help="remove a node from a farm you own")
    remove.add_argument("node_id", type=int)
    public = fs.add_parser(
        "public-config",
        help="set the public config of a node of a farm you own (a domain: it serves gateways)",
    )
    public.add_argument("node_id", type=int)
    public.add_argument("--ipv4", default="", help="public IPv4 address with prefix, a.b.c.d/N")
    public.add_argument("--gw4", default="", help="its gateway")
    public.add_argument("--ipv6", default="", help="public IPv6 address with prefix (optional)")
    public.add_argument("--gw6", default="", help="its gateway")
    public.add_argument("--domain", default="", help="the domain gateways serve names under")
    public.add_argument("--clear", action="store_true", help="remove the node's public config")

    for p in (create, token, lst, show, nodes, remove, public):
        add_registry_client_options(p)
    create.set_defaults(handler=cmd_create)
    token.set_defaults(handler=cmd_token)
    lst.set_defaults(handler=cmd_list)
    show.set_defaults(handler=cmd_show)
    nodes.set_defaults(handler=cmd_nodes)
    remove.set_defaults(handler=cmd_remove_node)
    public.set_defaults(handler=cmd_public_config)


def _farm_line(f: Farm) -> str:
    return f"{f.id}\t{f.name}\towner twin {f.owner_twin}"


def _node_line(n: Node) -> str:
    c, pc = n.capacity, n.public_config
    public = f"\t{pc.ipv4} gw {pc.gw4}" + (f" domain {pc.domain}" if pc.domain else "")
    return (
        f"{n.id}\t{n.status}\ttwin {n.twin_id}\tcru {c.cru}\tmru {c.mru >> 30}G"
        f"\tsru {c.sru >> 30}G\thru {c.hru >> 30}G" + (public if pc.ipv4 else "")
    )


def cmd_create(args: argparse.Namespace) -> int:
    farm = with_registry(args, lambda c: c.create_farm(args.name))
    print_result(args, farm, str(farm.id))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    expires = parse_duration(args.expires)
    if expires <= 0:
        raise CliError("--expires must be positive")
    token = with_registry(
        args, lambda c: c.farm_join_token(args.farm_id, args.node_twin, expires=expires)
    )
    print_result(args, {"token": token}, token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    farms = with_registry(args, lambda c: c.list_farms(args.owner))
    print_result(args, farms, "\n".join(_farm_line(f) for f in farms))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    farm = with_registry(args, lambda c: c.get_farm(args.farm_id))
    print_result(args, farm, _farm_line(farm))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    async def nodes(client: RegistryClient) -> list[Node]:
        await client.get_farm(args.farm_id)  # not_found for a farm that does not exist
        found: list[Node] = []
        while True:
            page = await client.list_nodes(
                farm=args.farm_id, status=args.status, offset=len(found), limit=1000
            )
            found.extend(page)
            if len(page) < 1000:
                return found

    found = with_registry(args, nodes)
    print_result(args, found, "\n".join(_node_line(n) for n in found))
    return 0


def cmd_remove_node(args: argparse.Namespace) -> int:
    result = with_registry(args, lambda c: c.remove_node(args.node_id))
    print_result(args, result, f"node {args.node_id} removed")
    return 0


def cmd_public_config(args: argparse.Namespace) -> int:
    fields = {k: getattr(args, k) for k in ("ipv4", "gw4", "ipv6", "gw6", "domain")}
    if args.clear == any(fields.values()):
        raise CliError("give --ipv4 and --gw4 (and optionally --ipv6/--gw6, --domain), or --clear")
    config = None if args.clear else fields
    node = with_registry(args, lambda c: c.set_node_public_config(args.node_id, config))
    print_result(args, node, _node_line(node))
    return 0
