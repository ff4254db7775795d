"""Identifiers zos derives from twins, contracts and names (stable across restarts)."""

from __future__ import annotations

import hashlib
import re

import base58

from zos.gridtypes.errors import GridTypeError

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_]+$")
MAX_NAME_LENGTH = 36


def name_error(name: str) -> str | None:
    """Why `name` is not a valid workload name, or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} characters, got {len(name)}"
    if not NAME_PATTERN.match(name) or not name.isascii():
        return "may only contain letters, digits and _ (^[a-zA-Z0-9_]+$)"
    return None


def workload_id(twin: int, contract: int, name: str) -> str:
    """`<twin>-<contract>-<name>`, the id zos gives a workload."""
    return f"{twin}-{contract}-{name}"


def parse_workload_id(wid: str) -> tuple[int, int, str]:
    """(twin, contract, name) of a workload id."""
    parts = wid.split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise GridTypeError(f"invalid workload id {wid!r}: expected <twin>-<contract>-<name>")
    return int(parts[0]), int(parts[1]), parts[2]


def _b58_md5(text: str) -> str:
    return base58.b58encode(hashlib.md5(text.encode()).digest()).decode()[:13]


def network_id(twin: int, name: str) -> str:
    """The network id: first 13 characters of base58(MD5("<twin>:<network name>"))."""
    return _b58_md5(f"{twin}:{name}")


def short_name(wid: str, n: int | str) -> str:
    """A per-workload short name: first 13 characters of base58(MD5("<workload id>:<n>"))."""
    return _b58_md5(f"{wid}:{n}")
