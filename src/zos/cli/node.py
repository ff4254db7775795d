"""`zos node run`: the node agent, configured only by flags or environment."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

from zos.cli import CliError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str) -> int:
    """Bytes from `1073741824`, `512M`, `10G`, `1GiB`, `2T` (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise CliError(f"{what}: not a size: {text!r} (e.g. 10G, 512M or bytes)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


NETNS_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,16}")


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _env_option(
    parser: argparse.ArgumentParser, flag: str, text: str = "", *, default: Any = None, **kw: Any
) -> None:
    """A flag that falls back to the environment variable named after it (`--cache-size`:
    ZOS_CACHE_SIZE, named in its help), then to `default`."""
    env = "ZOS_" + flag.removeprefix("--").upper().replace("-", "_")
    help_text = f"{text} [{env}]" if text else f"[{env}]"
    parser.add_argument(flag, default=_env(env) or default, help=help_text, **kw)


def _stores(flags: list[str] | None) -> list[str]:
    """`--store` flags, else ZOS_STORES; each checked now so a typo ends the start."""
    from zos.flist.errors import StoreError
    from zos.flist.stores import Router

    specs = flags or [u.strip() for u in (_env("ZOS_STORES") or "").split(",") if u.strip()]
    for spec in specs:
        try:
            Router.parse([spec])
        except (StoreError, ValueError) as e:
            raise CliError(f"--store: {e}") from None
    return specs


def register(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="run a Zero-OS node agent")
    ns = node.add_subparsers(dest="node_command", metavar="ACTION")
    ns.required = True

    run = ns.add_parser(
        "run",
        help="register this machine as a node of a farm and serve deployments",
        description="Every setting also reads from the environment variable named in brackets.",
    )
    option = functools.partial(_env_option, run)
    option("--farm-id", type=int)
    option("--nats", "NATS URL(s), comma-separated")
    option("--data-dir", "node state", type=Path)
    option(
        "--join-token-file",
        "file holding the farm join token, needed on first start (or the token itself "
        "in ZOS_JOIN_TOKEN)",
        type=Path,
        metavar="FILE",
    )
    # Refused with a reason: argv is readable by every user of the machine.
    run.add_argument("--join-token", help=argparse.SUPPRESS)
    option("--cores", "cores offered", type=int)
    option("--memory", "memory offered, e.g. 8G")
    option("--disk", "disk offered, e.g. 100G")
    option(
        "--hdd",
        "of the disk, how much is offered as HDD units (hru: zdb namespaces), e.g. 50G; "
        "default: none",
    )
    option("--heartbeat", "seconds between heartbeats (default: the registry's period)", type=float)
    option("--cache-size", "flist cache size, e.g. 2G (default: 10%% of the data disk, at most 4G)")
    run.add_argument(
        "--store",
        action="append",
        dest="stores",
        metavar="URL",
        help="block store every flist is fetched from (dir://, http(s)://, zdb://); "
        "repeat for several; default: the stores each flist names "
        "[ZOS_STORES, comma-separated]",
    )
    option(
        "--netns-prefix",
        "prefix of every network namespace this node makes, so several nodes share one machine",
        default="",
    )
    option(
        "--zdb-listen",
        "where the zdb server listens while zdb workloads exist (default: the node's "
        "address, port 9900)",
        default="",
        metavar="[HOST]:PORT",
    )
    option(
        "--acme-url",
        "ACME directory gateway certificates come from (default: Let's Encrypt)",
        metavar="URL",
    )
    option(
        "--acme-ca",
        "CA (PEM) the ACME server's own TLS is checked with (default: the system's)",
        metavar="FILE",
    )
    option("--log-level", default="info")
    run.set_defaults(handler=cmd_run)

    wipe = ns.add_parser(
        "wipe",
        help="remove every workload this node made (containers, mounts, namespaces, images)",
        description="For a machine leaving the grid: run it after the agent has stopped. "
        "Works from the data directory alone.",
    )
    _env_option(wipe, "--data-dir")
    _env_option(wipe, "--netns-prefix", "the prefix the node ran with", default="")
    wipe.set_defaults(handler=cmd_wipe)


def join_token(args: argparse.Namespace) -> str | None:
    """The farm join token: from ZOS_JOIN_TOKEN or a file, never from the command line
    (any user of the machine reads /proc/<pid>/cmdline)."""
    if args.join_token is not None:
        raise CliError(
            "--join-token: a token on the command line is readable by every user of the "
            "machine (/proc/<pid>/cmdline); put it in ZOS_JOIN_TOKEN or in a file given "
            "with --join-token-file"
        )
    if args.join_token_file is None:
        return _env("ZOS_JOIN_TOKEN")
    path = Path(args.join_token_file)
    try:
        if path.stat().st_mode & 0o004:
            raise CliError(f"--join-token-file {path}: readable by every user; chmod 600 it")
        token = path.read_text().strip()
    except OSError as e:
        raise CliError(f"--join-token-file {path}: {e.strerror}") from None
    if not token:
        raise CliError(f"--join-token-file {path}: the file is empty")
    return token


def settings_from_args(args: argparse.Namespace):  # -> Settings (imported lazily)
    from zos.node.agent import Settings

    missing = [
        f"--{n}" for n in ("farm-id", "nats", "data-dir") if not getattr(args, n.replace("-", "_"))
    ]
    if missing:
        raise CliError(f"missing {', '.join(missing)} (or ZOS_FARM_ID, ZOS_NATS, ZOS_DATA_DIR)")
    try:
        farm_id = int(args.farm_id)
        cores = int(args.cores) if args.cores is not None else None
        heartbeat = float(args.heartbeat) if args.heartbeat is not None else None
    except ValueError as e:
        raise CliError(f"not a number: {e}") from None
    if farm_id <= 0:
        raise CliError("--farm-id: must be a farm id (1 or more)")
    if heartbeat is not None and not 0.1 <= heartbeat <= 3600:
        raise CliError("--heartbeat: must be between 0.1 and 3600 seconds")
    prefix = args.netns_prefix or ""
    if not NETNS_PREFIX.fullmatch(prefix):
        raise CliError(
            "--netns-prefix: at most 16 letters, digits, '-' or '_' "
            "(it begins every namespace name)"
        )
    if args.zdb_listen:
        from zos.node.workloads.zdbserver import parse_listen

        try:
            parse_listen(args.zdb_listen)
        except ValueError as e:
            raise CliError(f"--zdb-listen: {e}") from None
    acme: dict[str, Any] = {}
    if args.acme_url:
        if not args.acme_url.startswith("https://"):
            raise CliError(f"--acme-url {args.acme_url!r}: an https:// ACME directory URL")
        acme["acme_url"] = args.acme_url
    if args.acme_ca:
        ca = Path(args.acme_ca).absolute()
        if not ca.is_file():
            raise CliError(f"--acme-ca {ca}: no such file")
        acme["acme_ca"] = ca
    settings = Settings(
        farm_id=farm_id,
        nats=args.nats,
        data_dir=Path(args.data_dir).absolute(),
        join_token=join_token(args),
        cores=cores,
        memory=parse_size(args.memory, "--memory") if args.memory else None,
        disk=parse_size(args.disk, "--disk") if args.disk else None,
        hdd=parse_size(args.hdd, "--hdd") if args.hdd else None,
        cache_size=parse_size(args.cache_size, "--cache-size") if args.cache_size else None,
        stores=_stores(args.stores),
        netns_prefix=prefix,
        zdb_listen=args.zdb_listen,
        **acme,
    )
    if heartbeat is not None:
        settings.heartbeat = heartbeat
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from zos.node.agent import Agent

    try:
        asyncio.run(Agent(settings).run())
    except ValueError as e:  # an offer larger than the machine
        raise CliError(str(e)) from None
    return 0


def cmd_wipe(args: argparse.Namespace) -> int:
    from zos.node.agent import KEY_FILE, Settings, wipe

    if not args.data_dir:
        raise CliError("missing --data-dir (or ZOS_DATA_DIR)")
    data_dir = Path(args.data_dir).absolute()
    if not (data_dir / KEY_FILE).exists():
        raise CliError(f"--data-dir {data_dir}: not a node's data directory (no {KEY_FILE})")
    if not NETNS_PREFIX.fullmatch(args.netns_prefix):
        raise CliError("--netns-prefix: at most 16 letters, digits, '-' or '_'")
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(farm_id=0, nats="", data_dir=data_dir, netns_prefix=args.netns_prefix)
    asyncio.run(wipe(settings))
    return 0
