"""`zos registry serve | nats-config`: the grid registry service and the nats-server
configuration it needs; helpers shared by `twin` and `farm`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from zos.bus.connection import connect, default_nats_url
from zos.bus.errors import BusError
from zos.cli import CliError
from zos.cli._io import identity_from_args
from zos.cli._options import add_actions, add_nats_option
from zos.identity import Identity, KeyError_, load_key_file, public_key_from_hex
from zos.primitives.signals import stop_on_signals
from zos.registry.client import RegistryClient

T = TypeVar("T")


def nats_url(args: argparse.Namespace) -> str:
    return args.nats or default_nats_url()


def load_registry_identity(path: Path | None) -> Identity:
    """The registry's own key, from `--key-file` (or ZOS_REGISTRY_KEY_FILE)."""
    path = path or (
        Path(os.environ["ZOS_REGISTRY_KEY_FILE"])
        if os.environ.get("ZOS_REGISTRY_KEY_FILE")
        else None
    )
    if path is None:
        raise CliError(
            "missing --key-file (or ZOS_REGISTRY_KEY_FILE): the registry's own key "
            "(`zos key new --key-file F` makes one)"
        )
    try:
        return load_key_file(path)
    except KeyError_ as e:
        raise CliError(f"--key-file: {e}") from None


def parse_duration(text: str) -> float:
    """Seconds from `3600`, `90s`, `30m`, `24h` or `7d`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise CliError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def with_registry(args: argparse.Namespace, work: Callable[[RegistryClient], Awaitable[T]]) -> T:
    """Run `work` with a connected client of the key options' twin (registered first if
    new: nobody reads the registry without a registered key)."""
    from zos.client.config import ConfigError, find_grid

    identity = identity_from_args(args)
    assert identity is not None
    try:
        where = find_grid(args.nats, registry_key=args.registry_key)
    except ConfigError as e:
        raise CliError(str(e)) from None

    async def run() -> T:
        try:
            conn = await connect(where.nats_url, identity, name="zos-cli", first_connect_timeout=5)
            try:
                client = RegistryClient(conn, identity, registry_key=where.registry_key)
                await client.ensure_twin()
                return await work(client)
            finally:
                await conn.close()
        except BusError as e:
            raise CliError(f"{e.code}: {e.message}") from None

    return asyncio.run(run())


def print_result(args: argparse.Namespace, value: Any, text: str) -> None:
    if getattr(args, "json", False):
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
        print(json.dumps(value))
    else:
        print(text)


def register(sub: argparse._SubParsersAction) -> None:
    rs = add_actions(sub, "registry", "the grid registry service")
    serve = rs.add_parser(
        "serve",
        help="check signed transactions and answer queries (state in JetStream KV)",
        description="Stateless: run as many copies as you like against the same NATS.",
    )
    add_nats_option(serve)
    serve.add_argument(
        "--key-file",
        type=Path,
        help="the registry's own key (env ZOS_REGISTRY_KEY_FILE); nats-server must name it "
        "(see `zos registry nats-config`)",
    )
    serve.add_argument(
        "--replicas", type=int, default=1, help="copies of each KV bucket (3 in a cluster)"
    )
    serve.add_argument(
        "--down-after",
        type=float,
        default=None,
        help="seconds without heartbeat before a node is down (default 30)",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=cmd_serve)

    conf = rs.add_parser(
        "nats-config",
        help="print the authorization block every nats-server of the grid needs",
        description="Put it in each server's configuration (with jetstream and, for a "
        "cluster, routes that authenticate): the registry's key is its only configured "
        "user and the issuer of its auth callout, which decides every other connection.",
    )
    which = conf.add_mutually_exclusive_group(required=True)
    which.add_argument("--key-file", type=Path, help="the registry's key file")
    which.add_argument("--registry-key", help="the registry's public key, hex")
    conf.set_defaults(handler=cmd_nats_config)


def cmd_serve(args: argparse.Namespace) -> int:
    from zos.registry.models import DOWN_AFTER
    from zos.registry.service import RegistryService

    if not 1 <= args.replicas <= 5:
        raise CliError("--replicas: 1 to 5")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = nats_url(args)
    identity = load_registry_identity(args.key_file)

    async def run() -> None:
        service = RegistryService(
            url,
            identity,
            replicas=args.replicas,
            down_after=args.down_after if args.down_after is not None else DOWN_AFTER,
        )
        stop = stop_on_signals()
        try:
            await service.start()
        except BusError as e:
            raise CliError(f"{e.code}: {e.message}") from None
        logging.getLogger("zos.registry").info(
            "registry %s serving on %s", identity.public_hex, url
        )
        try:
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(run())
    return 0


def cmd_nats_config(args: argparse.Namespace) -> int:
    from zos.grid.natsserver import authorization_config

    if args.key_file:
        key = load_registry_identity(args.key_file).public_key
    else:
        try:
            key = public_key_from_hex(args.registry_key)
        except KeyError_ as e:
            raise CliError(f"--registry-key: {e}") from None
    print(authorization_config(key))
    return 0
