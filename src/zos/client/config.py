"""Where the grid is and who the user is, for the CLI and the SDK.

The grid: `nats` (and `hub`) given, else ZOS_NATS (and ZOS_HUB), else the local grid's
state file (`zos grid up`: --state-dir, ZOS_GRID_DIR or /var/lib/zos-grid).
The user: an Identity given, else ZOS_MNEMONIC, else the key file (ZOS_KEY_FILE or
~/.config/zos/key.json, written by `zos key new`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zos.grid.state import GridState, StateError, default_state_dir, load
from zos.identity import Identity, KeyError_, load_key_file


class ConfigError(Exception):
    """No grid or no key to use; the message says what to do."""


@dataclass
class GridLocation:
    nats_url: str
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
    nats: str | None = None, hub: str | None = None, state_dir: Path | None = None
) -> GridLocation:
    state = _load_quiet(Path(state_dir or default_state_dir()))
    if state_dir is None:
        nats = nats or os.environ.get("ZOS_NATS")
        hub = hub or os.environ.get("ZOS_HUB")
    if nats:
        local = state if state is not None and state.nats_url == nats else None
        return GridLocation(nats, hub or (local.hub_url if local else ""), local)
    if state is not None and state.nats_url:
        return GridLocation(state.nats_url, hub or state.hub_url, state)
    where = state_dir or default_state_dir()
    raise ConfigError(
        f"no grid found: no local grid in {where} and no --nats or ZOS_NATS; "
        "start one with `zos grid up`"
    )


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
