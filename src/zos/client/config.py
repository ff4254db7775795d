"""Where the grid is and who the user is, for the CLI and the SDK.

The grid: `nats` (and `hub`) given, else ZOS_NATS (and ZOS_HUB), else the local grid's
state file (`zos grid up`: --state-dir, ZOS_GRID_DIR or /var/lib/zos-grid). Its registry
key, which every registry answer must be signed by: `registry_key` given, else
ZOS_REGISTRY_KEY, else the local grid's (never learnt from the bus itself).
The user: an Identity given, else ZOS_MNEMONIC, else the key file (ZOS_KEY_FILE or
~/.config/zos/key.json, written by `zos key new`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zos.grid.state import GridState, StateError, default_state_dir, load
from zos.identity import Identity, KeyError_, load_key_file, public_key_from_hex


class ConfigError(Exception):
    """No grid or no key to use; the message says what to do."""


@dataclass
class GridLocation:
    nats_url: str
    registry_key: bytes
    hub_url: str = ""
    local: GridState | None = None  # set when this is a local grid started here


def _load_quiet(state_dir: Path) -> GridState | None:
    try:
        return load(state_dir)
    except PermissionError:
        return None
    except StateError as e:
        raise ConfigError(str(e)) from None


def find_grid(
    nats: str | None = None,
    hub: str | None = None,
    state_dir: Path | None = None,
    registry_key: str | None = None,
) -> GridLocation:
    state = _load_quiet(Path(state_dir or default_state_dir()))
    if state_dir is None:
        nats = nats or os.environ.get("ZOS_NATS")
        hub = hub or os.environ.get("ZOS_HUB")
        registry_key = registry_key or os.environ.get("ZOS_REGISTRY_KEY")
    local = None
    if nats:
        local = state if state is not None and state.nats_url == nats else None
    elif state is not None and state.nats_url:
        nats, local = state.nats_url, state
    else:
        where = state_dir or default_state_dir()
        raise ConfigError(
            f"no grid found: no local grid in {where} and no --nats or ZOS_NATS; "
            "start one with `zos grid up`"
        )
    key_hex = registry_key or (local.registry_key if local else "")
    if not key_hex:
        raise ConfigError(
            f"no registry key for {nats}: pass --registry-key HEX or set ZOS_REGISTRY_KEY "
            "(the grid's operator publishes it; `zos grid status` shows a local grid's)"
        )
    try:
        key = public_key_from_hex(key_hex)
    except KeyError_ as e:
        raise ConfigError(f"registry key: {e}") from None
    return GridLocation(nats, key, hub or (local.hub_url if local else ""), local)


def default_key_file() -> Path:
    return Path(os.environ.get("ZOS_KEY_FILE") or Path.home() / ".config/zos/key.json")


def find_identity() -> Identity:
    try:
        if os.environ.get("ZOS_MNEMONIC"):
            return Identity.from_mnemonic(os.environ["ZOS_MNEMONIC"])
        path = default_key_file()
        if path.exists():
            return load_key_file(path)
    except KeyError_ as e:
        raise ConfigError(str(e)) from None
    raise ConfigError(
        f"no key: create one with `zos key new` (writes {default_key_file()}), or set ZOS_MNEMONIC"
    )
