"""The user commands: `zos nodes | deploy | ps | logs | rm | image push` (and, in
`zos.cli.unlock`, `unlock | share | unshare`).

They find the grid (--nats/--hub/--registry-key, ZOS_NATS/ZOS_HUB/ZOS_REGISTRY_KEY, or
the local grid's state) and the key (--mnemonic, --key-file, ZOS_MNEMONIC or
~/.config/zos/key.json), and run through the SDK (`zos.client.GridClient`), so the CLI
and Python do the same thing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from zos.cli import CliError
from zos.cli._io import identity_from_args
from zos.cli._options import add_actions, add_command, add_grid_options, connect_grid

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    n = add_command(
        sub,
        "nodes",
        cmd_nodes,
        "list the grid's nodes (by farm, status, free capacity) and their gateways",
        add_grid_options,
    )
    n.add_argument("--farm", type=int, help="only nodes of this farm")
    n.add_argument("--status", choices=["up", "down"], help="only nodes up or down")
    n.add_argument("--free-memory", default="0", help="at least this much memory free, e.g. 1G")
    n.add_argument("--free-disk", default="0", help="at least this much disk free, e.g. 10G")
    n.add_argument("--free-cores", type=int, default=0)
    n.add_argument(
        "--gateway", action="store_true", help="only nodes that serve gateways (with a domain)"
    )

    d = add_command(
        sub,
        "deploy",
        cmd_deploy,
        "deploy a manifest (replaces a deployment of that name)",
        add_grid_options,
    )
    d.add_argument("-f", "--file", required=True, type=Path, help="the manifest (YAML)")
    d.add_argument("--timeout", type=float, default=300, help="seconds to wait (default 300)")
    d.add_argument("--check", action="store_true", help="only check the manifest, send nothing")
    d.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="MACHINE=PATH",
        help="the image of a machine, from any path (a manifest's own images must be inside "
        "its directory); repeat for several",
    )

    add_command(
        sub, "ps", cmd_ps, "your deployments and the state of their workloads", add_grid_options
    )

    lg = add_command(sub, "logs", cmd_logs, "a machine's output")
    add_grid_options(lg, json_flag=False)
    lg.add_argument("name", help="deployment, deployment/machine, or a machine's name")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new output")

    rm = add_command(
        sub, "rm", cmd_rm, "remove a deployment (and cancel its contract)", add_grid_options
    )
    rm.add_argument("name")

    ims = add_actions(sub, "image", "container images as flists on the hub")
    push = add_command(
        ims,
        "push",
        cmd_image_push,
        "pack a directory or image archive and publish it",
        add_grid_options,
    )
    push.add_argument("path", type=Path, help="directory, tar, OCI layout or docker save")
    push.add_argument("--name", help="name on the hub (default: from the path)")


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    from zos.client import GridClientError, ManifestError

    identity = identity_from_args(args, required=False)

    async def go() -> T:
        client = await connect_grid(args, identity)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except (GridClientError, ManifestError) as e:
        raise CliError(str(e)) from None


def _size(n: int) -> str:
    from zos.client.placement import size

    return size(n)


def _bytes(text: str, flag: str) -> int:
    from zos.client.manifest import parse_size

    if text in ("0", ""):
        return 0
    try:
        return parse_size(text)
    except ValueError as e:
        raise CliError(f"{flag}: {e}") from None


def cmd_nodes(args: argparse.Namespace) -> int:
    mem, disk = _bytes(args.free_memory, "--free-memory"), _bytes(args.free_disk, "--free-disk")
    nodes = _run(
        args,
        lambda c: c.nodes(
            farm=args.farm,
            status=args.status,
            free_memory=mem,
            free_disk=disk,
            free_cores=args.free_cores,
            gateway=True if args.gateway else None,
        ),
    )
    if args.json:
        print(json.dumps([n.model_dump(mode="json") for n in nodes], indent=2))
        return 0
    print(
        f"{'NODE':>5} {'FARM':>5} {'TWIN':>5} {'STATUS':7} {'CORES':>5} {'MEMORY FREE':>15} "
        f"{'DISK FREE':>15}  GATEWAY"
    )
    for n in nodes:
        free = n.free
        # A gateway node's domain: names are served as <name>.<domain>.
        gateway = n.public_config.domain if n.public_config.gateway else "-"
        print(
            f"{n.id:>5} {n.farm_id:>5} {n.twin_id:>5} {n.status:7} {n.capacity.cru:>5} "
            f"{_size(free.mru) + ' / ' + _size(n.capacity.mru):>15} "
            f"{_size(free.sru) + ' / ' + _size(n.capacity.sru):>15}  {gateway}"
        )
    if not nodes:
        print("no nodes match")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from zos.client import ManifestError, load_manifest

    images: dict[str, str | Path] = {}
    for item in args.image:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CliError(f"--image {item}: expected MACHINE=PATH")
        images[name] = path
    try:
        manifest = load_manifest(args.file, images)
    except ManifestError as e:
        raise CliError(str(e)) from None
    if args.check:
        print(f"{args.file}: ok ({len(manifest.machines)} machines, {len(manifest.disks)} disks)")
        return 0
    out = sys.stderr if args.json else sys.stdout

    def progress(name: str, wtype: str, state: str, message: str) -> None:
        extra = f": {message}" if message and state == "error" else ""
        print(f"  {wtype:<10} {name:<20} {state}{extra}", file=out, flush=True)

    print(f"deploying {manifest.name} ...", file=out, flush=True)
    if manifest.spans_nodes:
        return _deploy_across(args, manifest, progress)
    info = _run(args, lambda c: c.deploy(manifest, progress=progress, timeout=args.timeout))
    if args.json:
        print(info.model_dump_json(indent=2))
        return 0
    _print_deployed(info)
    _offer_unlock(args, _run(args, lambda c: c.ps()))
    return 0


def _print_deployed(info: Any) -> None:
    print(f"{info.name}: ok on node {info.node_id} (contract {info.contract_id})")
    for m in info.machines:
        reach = f"  reachable at {', '.join(m.urls)}" if m.urls else ""
        print(f"  machine {m.name}: {m.ip}{reach}")
    for g in info.gateways:
        print(f"  gateway {g.name}: {g.url or g.state}")


def _deploy_across(args: argparse.Namespace, manifest: Any, progress: Any) -> int:
    """A manifest over several nodes: the network on each, then each node's machines."""
    done = _run(args, lambda c: c.deploy_across(manifest, progress=progress, timeout=args.timeout))
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in done.deployments], indent=2))
        return 0
    for info in done.deployments:
        _print_deployed(info)
    print(f"network {manifest.network_name}: `zos network show {manifest.network_name}`")
    return 0


def _offer_unlock(args: argparse.Namespace, deps: list[Any]) -> None:
    from zos.cli.unlock import offer_unlock

    offer_unlock(args, deps)


def cmd_ps(args: argparse.Namespace) -> int:
    deps = _run(args, lambda c: c.ps())
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in deps], indent=2))
        return 0
    if not deps:
        print("no deployments (zos deploy -f app.yaml makes one)")
        return 0
    print(f"{'NAME':<20} {'NODE':>4} {'CONTRACT':>8} {'STATE':<10} {'DATA':<9} MACHINES")
    for d in deps:
        machines = ", ".join(
            f"{m.name} {m.ip} {m.runtime}" + (f" {' '.join(m.urls)}" if m.urls else "")
            for m in d.machines
        )
        data = "encrypted" if d.encrypted else "plain"
        print(f"{d.name:<20} {d.node_id:>4} {d.contract_id:>8} {d.state:<10} {data:<9} {machines}")
        for g in d.gateways:
            print(f"  gateway {g.name}: {g.url or g.state}")
        for w in d.workloads:
            if w.state == "error":
                print(f"  {w.type} {w.name}: {w.message}")
        if d.message:
            print(f"  {d.message}")
    _offer_unlock(args, deps)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    async def work(client: Any) -> None:
        async for text in client.logs(args.name, follow=args.follow):
            sys.stdout.write(text)
            sys.stdout.flush()

    _run(args, work)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    removed = _run(args, lambda c: c.rm(args.name))
    if args.json:
        print(json.dumps([d.model_dump(mode="json") for d in removed]))
        return 0
    for d in removed:
        print(f"removed {d.name} (contract {d.contract_id} on node {d.node_id})")
    return 0


def cmd_image_push(args: argparse.Namespace) -> int:
    url = _run(args, lambda c: c.push_image(args.path, args.name))
    print(json.dumps({"url": url}) if args.json else url)
    return 0
