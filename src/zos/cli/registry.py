"""`zos registry serve`: run the grid registry service; helpers shared by `twin` and `farm`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from zos.bus.connection import connect_nats, default_nats_url
from zos.bus.errors import BusError
from zos.cli import CliError
from zos.cli._io import identity_from_args
from zos.primitives.signals import stop_on_signals
from zos.registry.client import RegistryClient

T = TypeVar("T")


def add_nats_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats",
        default=None,
        help="NATS URL(s), comma-separated (default: env ZOS_NATS or nats://127.0.0.1:4222)",
    )


def nats_url(args: argparse.Namespace) -> str:
    return args.nats or default_nats_url()


def parse_duration(text: str) -> float:
    """Seconds from `3600`, `90s`, `30m`, `24h` or `7d`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise CliError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def with_registry(
    args: argparse.Namespace,
    work: Callable[[RegistryClient], Awaitable[T]],
    *,
    key: bool = True,
) -> T:
    """Run `work` with a connected client (signing with the key options when `key`)."""
    identity = identity_from_args(args) if key else None

    async def run() -> T:
        try:
            nc = await connect_nats(nats_url(args), name="zos-cli", first_connect_timeout=5)
            try:
                return await work(RegistryClient(nc, identity))
            finally:
                await nc.close()
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
    reg = sub.add_parser("registry", help="the grid registry service")
    rs = reg.add_subparsers(dest="registry_command", metavar="ACTION")
    rs.required = True
    serve = rs.add_parser(
        "serve",
        help="check signed transactions and answer queries (state in JetStream KV)",
        description="Stateless: run as many copies as you like against the same NATS.",
    )
    add_nats_option(serve)
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

    async def run() -> None:
        service = RegistryService(
            url,
            replicas=args.replicas,
            down_after=args.down_after if args.down_after is not None else DOWN_AFTER,
        )
        stop = stop_on_signals()
        try:
            await service.start()
        except BusError as e:
            raise CliError(f"{e.code}: {e.message}") from None
        logging.getLogger("zos.registry").info("registry serving on %s", url)
        try:
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(run())
    return 0
