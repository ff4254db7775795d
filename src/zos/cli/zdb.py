"""`zos zdb serve`: the 0-db compatible key-value server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from pathlib import Path

from zos.cli import CliError
from zos.cli._io import parse_listen
from zos.cli._options import add_actions
from zos.primitives.signals import stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    zs = add_actions(sub, "zdb", "the 0-db compatible key-value server")
    s = zs.add_parser("serve", help="serve namespaces over RESP (TCP and/or a unix socket)")
    s.add_argument("--data", type=Path, required=True, help="directory of the namespaces")
    s.add_argument(
        "--listen",
        default="127.0.0.1:9900",
        metavar="HOST:PORT",
        help="TCP address; port 0 picks a free one; 'none' for the unix socket only",
    )
    s.add_argument("--socket", type=Path, help="also listen on this unix socket")
    s.add_argument(
        "--admin-file",
        type=Path,
        help="file holding the admin password (or set ZDB_ADMIN); without one, "
        "every client is admin, as in 0-db",
    )
    s.add_argument("--mode", choices=["user", "seq"], default="user", help="of new namespaces")
    s.add_argument(
        "--datasize", type=int, default=256 * 1024 * 1024, help="rotate data files at this size"
    )
    s.add_argument("--sync", action="store_true", help="every write reaches the disk first")
    s.add_argument("--synctime", type=float, default=0.0, help="flush to disk every N seconds")
    s.add_argument(
        "--protect", action="store_true", help="default namespace read-only for non-admin"
    )
    s.add_argument("--max-clients", type=int, default=1024)
    s.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    password = os.environ.get("ZDB_ADMIN") or None
    if args.admin_file is not None:
        try:
            password = args.admin_file.read_text().strip() or None
        except OSError as e:
            raise CliError(f"--admin-file {args.admin_file}: {e.strerror}") from None
    host: str | None = None
    port = 0
    if args.listen != "none":
        host, port = parse_listen(args.listen, " or none")
    elif args.socket is None:
        raise CliError("--listen none needs --socket PATH")
    logging.basicConfig(level=logging.INFO, format="zdb: %(message)s")
    asyncio.run(_serve(args, host or None, port, password))
    return 0


async def _serve(
    args: argparse.Namespace, host: str | None, port: int, password: str | None
) -> None:
    from zos.zdb import ZdbServer
    from zos.zdb.datalog import StorageError

    server = ZdbServer(
        args.data,
        admin_password=password,
        mode=args.mode,
        file_limit=args.datasize,
        sync=args.sync,
        sync_interval=args.synctime,
        protect=args.protect,
        max_clients=args.max_clients,
    )
    try:
        server.load()
        await server.start(host, port, args.socket)
    except (StorageError, OSError) as e:
        raise CliError(f"zdb: {e}") from None
    if server.address:
        print(f"zdb: listening on {server.address[0]}:{server.address[1]}", flush=True)
    if args.socket:
        print(f"zdb: listening on unix:{args.socket}", flush=True)
    if password is None:
        print("zdb: no admin password: every client is admin", flush=True)
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
