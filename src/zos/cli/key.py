"""`zos key new | show`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from zos.cli import CliError
from zos.cli._io import add_key_options, identity_from_args
from zos.cli._options import add_actions
from zos.identity import Identity, write_key_file

DEFAULT_KEY_FILE = Path(os.environ.get("ZOS_KEY_FILE", Path.home() / ".config/zos/key.json"))


def register(sub: argparse._SubParsersAction) -> None:
    ks = add_actions(sub, "key", "create and show keys")

    new = ks.add_parser("new", help="create a key: prints its mnemonic, writes a key file (0600)")
    new.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE)
    new.add_argument("--force", action="store_true", help="overwrite an existing key file")
    new.add_argument("--json", action="store_true")
    new.set_defaults(handler=cmd_new)

    show = ks.add_parser("show", help="print the public key")
    add_key_options(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)


def _describe(identity: Identity) -> dict[str, str]:
    return {
        "public_key": identity.public_hex,
        "x25519_public_key": identity.x25519_public.hex(),
        "sr25519_public_key": identity.sr25519_public_key.hex(),
    }


def cmd_new(args: argparse.Namespace) -> int:
    from zos.identity import new_mnemonic

    path: Path = args.key_file
    if path.exists() and not args.force:
        raise CliError(f"{path} exists; pass --force to replace it (the old key is then lost)")
    mnemonic = new_mnemonic()
    identity = Identity.from_mnemonic(mnemonic)
    write_key_file(path, identity, mnemonic)
    if args.json:
        print(json.dumps({"mnemonic": mnemonic, "key_file": str(path), **_describe(identity)}))
    else:
        print(mnemonic)
        print(f"public key: {identity.public_hex}")
        print(f"key file:   {path}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    identity = identity_from_args(args)
    assert identity is not None
    if args.json:
        print(json.dumps(_describe(identity)))
    else:
        print(identity.public_hex)
    return 0
