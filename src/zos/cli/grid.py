"""`zos grid up | down | status`: a whole grid on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zos.cli import CliError
from zos.cli._options import add_actions, add_command


def register(sub: argparse._SubParsersAction) -> None:
    gs = add_actions(sub, "grid", "a local grid: NATS, registry, hub, farm and nodes")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            type=Path,
            help="where the grid keeps its state (default /var/lib/zos-grid, env ZOS_GRID_DIR)",
        )
        p.add_argument("--json", action="store_true", help="print the grid as JSON")

    up = gs.add_parser("up", help="start a grid on this machine (or show the running one)")
    common(up)
    up.add_argument("--nodes", type=int, default=2, help="how many nodes (default 2)")
    up.add_argument("--nats", help="join this NATS (cluster) instead of starting one")
    up.add_argument(
        "--registry-key-file",
        type=Path,
        help="with --nats: the registry key the joined servers are configured for",
    )
    up.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="how many of the nodes serve gateways: a public config with a domain, "
        "certificates from the grid's pebble (default 1)",
    )
    up.add_argument(
        "--hidden",
        type=int,
        default=0,
        help="how many of the nodes (the last ones) are hidden: each behind a NAT of its "
        "own, no public endpoint, reached only through an access node (default 0)",
    )
    up.set_defaults(handler=cmd_up)

    add_command(gs, "down", cmd_down, "stop the grid and remove everything it made", common)
    add_command(
        gs, "status", cmd_status, "where the grid's pieces are and whether they run", common
    )


def _state_dir(args: argparse.Namespace) -> Path:
    from zos.grid.state import default_state_dir

    return (args.state_dir or default_state_dir()).absolute()


def describe(state) -> dict:  # GridState -> JSON-able summary (no secrets)
    from zos.grid.local import stopped

    return {
        "state_dir": state.state_dir,
        "nats": state.nats_url,
        "hub": state.hub_url,
        "registry_key": state.registry_key,
        "explorer": state.explorer_url,
        "acme": state.acme_url,
        "acme_root": state.acme_root,
        "farm_id": state.farm_id,
        "bridge": f"{state.bridge} {state.host_address}",
        "nodes": [
            {
                "node_id": n.node_id,
                "twin_id": n.twin_id,
                "address": n.address.split("/")[0],
                "netns": n.netns,
                "data_dir": n.data_dir,
                "domain": n.domain,
                "hidden": n.hidden,
            }
            for n in state.nodes
        ],
        "processes": {p.name: p.pid for p in state.procs},
        "not_running": stopped(state),
        "logs": str(Path(state.state_dir) / "logs"),
    }


def _print(state, as_json: bool, started: bool | None = None) -> None:
    info = describe(state)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    if started is False:
        print("a grid is already running here (zos grid down stops it)")
    print(f"NATS:   {info['nats']}")
    print(f"hub:    {info['hub']}")
    print(f"registry key: {info['registry_key']}")
    print(f"explorer: {info['explorer']} (read-only; your deployments: zos explorer serve --mine)")
    print(f"farm:   {info['farm_id']}")
    for n in info["nodes"]:
        gateway = f", gateway *.{n['domain']}" if n["domain"] else ""
        gateway += ", hidden behind NAT" if n["hidden"] else ""
        print(
            f"node {n['node_id']}: {n['address']} (namespace {n['netns']}, twin {n['twin_id']}"
            f"{gateway})"
        )
    if info["acme"]:
        print(
            f"ACME:   {info['acme']} (pebble; gateway certificates verify with {info['acme_root']})"
        )
    print(f"state:  {info['state_dir']} (logs in {info['logs']})")
    if info["not_running"]:
        print(f"NOT RUNNING: {', '.join(info['not_running'])} (zos grid up restarts the grid)")
    print(
        f"use it: export ZOS_NATS={info['nats']} ZOS_HUB={info['hub']} "
        f"ZOS_REGISTRY_KEY={info['registry_key']}  (or --state-dir)"
    )


def cmd_up(args: argparse.Namespace) -> int:
    import sys

    from zos.grid.local import GridError, up

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        state, started = up(
            _state_dir(args),
            nodes=args.nodes,
            nats=args.nats,
            say=say,
            registry_key_file=args.registry_key_file,
            gateways=args.gateways,
            hidden=args.hidden,
        )
    except GridError as e:
        raise CliError(str(e)) from None
    _print(state, args.json, started)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    import sys

    from zos.grid.local import GridError, down

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        found = down(_state_dir(args), say=say)
    except GridError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps({"stopped": found}))
    elif not found:
        print(f"no grid in {_state_dir(args)}")
    else:
        print("grid stopped and removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from zos.grid.state import load

    state = load(_state_dir(args))
    if state is None:
        raise CliError(f"no grid in {_state_dir(args)}: start one with `zos grid up`", code=3)
    _print(state, args.json)
    return 0
