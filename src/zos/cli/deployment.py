"""`zos deployment hash | sign | verify | validate`."""

from __future__ import annotations

import argparse
import json

from zos.cli import CliError
from zos.cli._io import add_key_options, identity_from_args, parse_twin_keys, read_input
from zos.cli._options import add_actions, add_twin_key_option
from zos.gridtypes import Deployment, GridTypeError, capacity, validate, verify_signatures


def register(sub: argparse._SubParsersAction) -> None:
    ds = add_actions(sub, "deployment", "hash, sign and verify deployments (zos JSON format)")

    h = ds.add_parser("hash", help="print the deployment hash (lowercase hex MD5 of the challenge)")
    h.add_argument("file", metavar="FILE", help="deployment JSON, or - for stdin")
    h.add_argument("--challenge", action="store_true", help="print the challenge text instead")
    h.set_defaults(handler=cmd_hash)

    s = ds.add_parser("sign", help="sign a deployment; writes the signed JSON to stdout")
    s.add_argument("file", metavar="FILE", help="deployment JSON, or - for stdin")
    add_key_options(s)
    s.add_argument("--twin", type=int, help="twin id to sign for (default: the deployment's)")
    s.add_argument(
        "--style",
        choices=["default", "polka-wallet"],
        help="signature style (default: keep the deployment's signature_style)",
    )
    s.add_argument("--type", dest="key_type", choices=["ed25519", "sr25519"], default="ed25519")
    s.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    s.set_defaults(handler=cmd_sign)

    v = ds.add_parser("verify", help="check the signatures against twin public keys")
    v.add_argument("file", metavar="FILE", help="deployment JSON, or - for stdin")
    add_twin_key_option(v, "public key (hex) of a twin; repeat for every signing twin")
    v.add_argument(
        "--validate", action="store_true", help="also check the structural rules (as a node does)"
    )
    v.set_defaults(handler=cmd_verify)

    c = ds.add_parser("check", help="validate a deployment and print its capacity as JSON")
    c.add_argument("file", metavar="FILE", help="deployment JSON, or - for stdin")
    c.set_defaults(handler=cmd_check)


def _load(name: str) -> Deployment:
    data = read_input(name)
    try:
        return Deployment.from_json(data)
    except GridTypeError as e:
        raise CliError(f"{name}: {e}") from None


def cmd_hash(args: argparse.Namespace) -> int:
    d = _load(args.file)
    try:
        print(d.challenge() if args.challenge else d.hash_hex())
    except GridTypeError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    d = _load(args.file)
    identity = identity_from_args(args)
    assert identity is not None
    twin = d.twin_id if args.twin is None else args.twin
    if twin <= 0:
        raise CliError("no twin to sign for: the deployment has twin_id 0; pass --twin N")
    style = None
    if args.style is not None:
        style = "" if args.style == "default" else args.style
    try:
        d.sign(twin, identity, style=style, key_type=args.key_type)
    except GridTypeError as e:
        raise CliError(str(e)) from None
    print(d.to_json(indent=args.indent))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    keys = parse_twin_keys(args.twin_key)
    d = _load(args.file)
    try:
        if args.validate:
            validate(d)
        verify_signatures(d, keys)
    except GridTypeError as e:
        raise CliError(f"invalid: {e}") from None
    print("valid")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    d = _load(args.file)
    try:
        validate(d)
        cap = capacity(d)
    except GridTypeError as e:
        raise CliError(f"invalid: {e}") from None
    print(json.dumps({"valid": True, "hash": d.hash_hex(), "capacity": cap.as_dict()}))
    return 0
