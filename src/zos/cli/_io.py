"""Helpers shared by CLI modules: reading input files and key options."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zos.cli import CliError

# zos.identity (and its crypto) is imported by the helpers that take keys, so that a
# command without keys, such as `zos zdb serve`, does not load it.
if TYPE_CHECKING:
    from zos.identity import Identity

# Deployments and manifests are small; anything bigger is refused before parsing.
MAX_INPUT_BYTES = 16 * 1024 * 1024


def read_input(name: str) -> bytes:
    """Bytes of FILE, or of stdin when FILE is '-', bounded in size."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise CliError(f"{name}: {e.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise CliError(f"{name}: larger than {MAX_INPUT_BYTES} bytes")
    return data


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mnemonic", help="BIP-39 mnemonic (or env ZOS_MNEMONIC)")
    parser.add_argument("--key-file", type=Path, help="key file written by `zos key new`")


def identity_from_args(args: argparse.Namespace, required: bool = True) -> Identity | None:
    from zos.identity import Identity, KeyError_, load_key_file

    try:
        if getattr(args, "mnemonic", None):
            return Identity.from_mnemonic(args.mnemonic)
        if getattr(args, "key_file", None):
            return load_key_file(args.key_file)
        if os.environ.get("ZOS_MNEMONIC"):
            return Identity.from_mnemonic(os.environ["ZOS_MNEMONIC"])
        default = Path(os.environ.get("ZOS_KEY_FILE", Path.home() / ".config/zos/key.json"))
        if default.exists():
            return load_key_file(default)
    except KeyError_ as e:
        raise CliError(str(e)) from None
    if required:
        raise CliError(
            "no key: pass --mnemonic, --key-file, or set ZOS_MNEMONIC (see `zos key new`)"
        )
    return None


def parse_twin_keys(items: list[str]) -> dict[int, bytes]:
    """`--twin-key TWIN=PUBHEX` options as a map of twin id to public key."""
    from zos.identity import KeyError_, public_key_from_hex

    keys: dict[int, bytes] = {}
    for item in items:
        twin, sep, key = item.partition("=")
        if not sep or not twin.strip().isdigit():
            raise CliError(f"--twin-key {item!r}: expected TWIN=PUBHEX, e.g. 7=2f8c...")
        try:
            keys[int(twin)] = public_key_from_hex(key)
        except KeyError_ as e:
            raise CliError(f"--twin-key {twin}: {e}") from None
    return keys


def parse_listen(text: str, alternatives: str = "") -> tuple[str, int]:
    """`--listen HOST:PORT` as (host, port); the host may be empty."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"--listen {text!r}: expected HOST:PORT{alternatives}")
    return host, int(port)
