"""`zos unlock | share | unshare`: the data keys of your encrypted deployments.

A deployment's data is encrypted on its node under a key only your client makes; after
the node reboots it is `locked` (`zos ps`) until you, or a twin you shared it with, give
the key back with `zos unlock`. A teammate unlocks by node and contract:
`zos unlock --node N --contract C`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zos.cli import CliError
from zos.cli._options import add_grid_options
from zos.cli.apps import _run


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("unlock", help="give a locked deployment its key back (after a reboot)")
    add_grid_options(u, json_flag=False)
    u.add_argument("name", nargs="?", help="your deployment's name")
    u.add_argument("--node", type=int, help="a teammate's deployment: its node id")
    u.add_argument("--contract", type=int, help="a teammate's deployment: its contract id")
    u.set_defaults(handler=cmd_unlock)

    for verb, text in (
        ("share", "let another twin unlock a deployment of yours"),
        ("unshare", "stop letting a twin unlock a deployment of yours"),
    ):
        p = sub.add_parser(verb, help=text)
        add_grid_options(p, json_flag=False)
        p.add_argument("name", help="your deployment's name")
        p.add_argument("--twin", type=int, required=True, help="the twin id")
        p.set_defaults(handler=cmd_share if verb == "share" else cmd_unshare)


def cmd_unlock(args: argparse.Namespace) -> int:
    if args.name is None and (args.node is None or args.contract is None):
        raise CliError("unlock: give a deployment name, or --node and --contract")
    was = _run(args, lambda c: c.unlock(args.name, node_id=args.node, contract_id=args.contract))
    what = args.name or f"contract {args.contract} on node {args.node}"
    print(f"{what}: unlocked; its machines start again" if was else f"{what}: not locked")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    _run(args, lambda c: c.share(args.name, args.twin))
    print(f"{args.name}: twin {args.twin} may unlock it (`zos unshare` takes that back)")
    return 0


def cmd_unshare(args: argparse.Namespace) -> int:
    _run(args, lambda c: c.unshare(args.name, args.twin))
    print(
        f"{args.name}: twin {args.twin} may no longer unlock it (a key it saw before, it "
        "may still know)"
    )
    return 0


def offer_unlock(args: argparse.Namespace, deps: list[Any]) -> None:
    """What is locked: unlock it now if asked at a terminal, else say how."""
    locked = [d.name for d in deps if getattr(d, "locked", False)]
    if not locked:
        return
    out = sys.stderr
    if not sys.stdin.isatty():
        for name in locked:
            print(f"{name} is locked (its node restarted): `zos unlock {name}`", file=out)
        return
    for name in locked:
        print(f"{name} is locked (its node restarted). Unlock it now? [y/N] ", end="", file=out)
        out.flush()
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            _run(args, lambda c, n=name: c.unlock(n))
            print(f"{name}: unlocked", file=out)
