"""`zos network access | ls | show | grant | revoke`: a twin's networks across nodes.

The commands run through a `zos.client.networks.NetworkService`: `zos` gets the SDK's
(`GridClient.network_service`, over the grid's nodes); `add_commands` takes any other
(the tests' in-memory grid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from zos.cli import CliError
from zos.cli._io import add_key_options, identity_from_args
from zos.cli._options import add_actions, add_grid_options, connect_grid

if TYPE_CHECKING:
    from zos.client.networks.service import Applied, NetworkService

T = TypeVar("T")
Connect = Callable[[argparse.Namespace], AbstractAsyncContextManager["NetworkService"]]
Options = Callable[[argparse.ArgumentParser], None]


@asynccontextmanager
async def _grid_service(args: argparse.Namespace) -> AsyncIterator[NetworkService]:
    """The SDK's NetworkService on the grid the options name, for the key they name."""
    client = await connect_grid(args, identity_from_args(args))
    try:
        yield client.network_service()
    finally:
        await client.close()


def register(sub: argparse._SubParsersAction) -> None:
    add_commands(sub, _grid_service, lambda p: add_grid_options(p, json_flag=False))


def add_commands(
    sub: argparse._SubParsersAction, connect: Connect, options: Options = add_key_options
) -> None:
    """`zos network ...`, reaching a NetworkService through `connect(args)`; `options`
    adds the flags `connect` reads (the grid's, the key's)."""
    ns = add_actions(sub, "network", "private networks across nodes, laptops' access")

    def action(name: str, help: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        p = ns.add_parser(name, help=help)
        options(p)
        p.set_defaults(handler=lambda args: handler(args, connect))
        return p

    ls = action("ls", "your networks", cmd_ls)
    ls.add_argument("--json", action="store_true", help="print JSON")

    show = action("show", "a network's nodes, subnets and peers (handshake age)", cmd_show)
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")

    acc = action("access", "write a wg-quick file that puts this laptop on it", cmd_access)
    acc.add_argument("name")
    acc.add_argument("--node", type=int, default=0, help="the node to dial (default: chosen)")
    acc.add_argument("--name", dest="access", default="laptop", help="the access's name")
    acc.add_argument("-o", "--output", type=Path, help="the file (mode 0600; default: stdout)")
    acc.add_argument(
        "--key-file-on-laptop",
        default="",
        metavar="PATH",
        help="a teammate's access (--name): the file for them, naming where their "
        "WireGuard private key is on their laptop (the key never passes here)",
    )

    grant = action("grant", "admit a teammate's laptop by its WireGuard key", cmd_grant)
    grant.add_argument("name")
    grant.add_argument("--wg-key", required=True, help="the teammate's WireGuard public key")
    grant.add_argument("--name", dest="access", default="", help="a name for the access")

    revoke = action("revoke", "drop an access (by name or key), nobody else's", cmd_revoke)
    revoke.add_argument("name")
    who = revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", dest="access", default="", help="the access's name")
    who.add_argument("--wg-key", default="", help="the access's WireGuard public key")


def _run(args: argparse.Namespace, connect: Connect, work: Callable[[Any], Awaitable[T]]) -> T:
    from zos.client import GridClientError
    from zos.client.networks import NetworkPlanError

    async def go() -> T:
        async with connect(args) as service:
            return await work(service)

    try:
        return asyncio.run(go())
    except (NetworkPlanError, GridClientError) as e:
        raise CliError(str(e)) from None


def _report(applied: Applied) -> int:
    """One line per node changed, on stderr; 1 when any refused or did not answer."""
    for r in applied.results:
        state = "ok" if r.ok else f"error: {r.error}"
        print(f"  node {r.node_id:<6} {r.action:<7} {state}", file=sys.stderr)
    return 0 if applied.ok else 1


def cmd_ls(args: argparse.Namespace, connect: Connect) -> int:
    plans, bad = _run(args, connect, lambda svc: svc.readable())
    rows = [
        {
            "name": p.name,
            "ip_range": p.ip_range,
            "nodes": [n.node_id for n in p.nodes],
            "access_node": p.access_node,
            "accesses": [a.name for a in p.accesses],
        }
        for p in plans
    ]
    rows += [{"name": name, "error": why} for name, why in bad.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no networks")
        return 0
    print(f"{'NAME':<20} {'RANGE':<16} {'NODES':<20} ACCESSES")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<20} cannot be read: {r['error']}")
            continue
        nodes = ",".join(map(str, r["nodes"]))
        print(f"{r['name']:<20} {r['ip_range']:<16} {nodes:<20} {','.join(r['accesses'])}")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def cmd_show(args: argparse.Namespace, connect: Connect) -> int:
    plan, views = _run(args, connect, lambda svc: svc.show(args.name))
    if args.json:
        out = {"name": plan.name, "ip_range": plan.ip_range, "nodes": [asdict(v) for v in views]}
        out["accesses"] = [
            {"name": a.name, "subnet": a.subnet, "node_id": a.node_id, "granted": a.granted}
            for a in plan.accesses
        ]
        print(json.dumps(out, indent=2))
        return 0
    print(f"{plan.name} {plan.ip_range}")
    for v in views:
        where = v.endpoint or "hidden"
        role = " (access node)" if v.access_node else ""
        print(f"  node {v.node_id}: {v.subnet} at {where}{role}, version {v.version}")
        if v.error:
            print(f"    no status: {v.error}")
        if v.private_ips:
            print(f"    machines: {', '.join(v.private_ips)}")
        for p in v.peers:
            dial = p.endpoint or "dials in"
            age = _age(p.handshake_age)
            print(f"    peer {p.what:<16} {p.subnet:<16} {dial:<28} handshake {age}")
    for a in plan.accesses:
        kind = "granted key" if a.granted else "yours"
        print(f"  access {a.name}: {a.subnet} via node {a.node_id} ({kind})")
    return 0


def _write_private(path: Path, text: str) -> None:
    """A file only its owner reads: it holds a private key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode otherwise
        f.write(text)


def cmd_access(args: argparse.Namespace, connect: Connect) -> int:
    if args.key_file_on_laptop:
        path = args.key_file_on_laptop
        text = _run(args, connect, lambda svc: svc.teammate_file(args.name, args.access, path))
        code = 0
    else:
        text, applied = _run(
            args, connect, lambda svc: svc.access(args.name, args.node, args.access)
        )
        code = _report(applied)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            _write_private(args.output, text)
        except OSError as e:
            raise CliError(f"{args.output}: {e.strerror}") from None
        print(f"wrote {args.output} (wg-quick up {args.output})", file=sys.stderr)
    return code


def cmd_grant(args: argparse.Namespace, connect: Connect) -> int:
    applied = _run(args, connect, lambda svc: svc.grant(args.name, args.wg_key, args.access))
    return _report(applied)


def cmd_revoke(args: argparse.Namespace, connect: Connect) -> int:
    applied = _run(args, connect, lambda svc: svc.revoke(args.name, args.access, args.wg_key))
    return _report(applied)
