"""The local grid's state file (`<state-dir>/grid.json`): what runs, where, and its keys.

Written whole (temp file + rename) after every step of `zos grid up`, so `down` finds
everything even when `up` stopped half way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_STATE_DIR = Path("/var/lib/zos-grid")
STATE_FILE = "grid.json"
REGISTRY_KEY_FILE = "registry-key.json"  # the registry's own key (mode 0600)


def default_state_dir() -> Path:
    return Path(os.environ.get("ZOS_GRID_DIR") or DEFAULT_STATE_DIR)


class Proc(BaseModel):
    """A detached process: its pid, its start time (to tell it from a reused pid), its log."""

    model_config = ConfigDict(extra="ignore")

    name: str
    pid: int
    start_time: int = 0
    log: str = ""
    argv: list[str] = Field(default_factory=list)  # to start it again the same way


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    netns: str  # the namespace the agent runs in
    address: str  # its address on the grid bridge
    host_veth: str
    data_dir: str
    netns_prefix: str  # prefix of every namespace the node makes
    node_id: int = 0
    twin_id: int = 0
    # A gateway node: its public config's domain (name proxies are <name>.<domain>) and
    # a zone the grid's DNS also points at it (fqdn proxies: <anything>.<sites>).
    domain: str = ""
    sites: str = ""
    # Behind a NAT router of its own (`hostnet.ensure_hidden_node`): no public endpoint;
    # `address` is then its LAN address.
    hidden: bool = False


class Forward(BaseModel):
    """A port that reaches another: listen on `listen_host:listen_port` (in namespace
    `listen_netns`, "" for the host) and connect to `ip:port` in `netns` ("" the host).

    A machine's port on the host: listen on the host, connect in the machine's namespace.
    A NATS the grid joins (`--nats`): listen in each node's namespace, connect on the host.
    """

    model_config = ConfigDict(extra="ignore")

    deployment: str = ""
    machine: str = ""
    contract_id: int = 0
    listen_netns: str = ""
    listen_host: str
    listen_port: int
    netns: str
    ip: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"


class GridState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tag: str
    state_dir: str
    nats_url: str
    external_nats: bool = False
    hub_url: str = ""
    explorer_url: str = ""  # the web explorer, on the host's loopback
    bridge: str = ""
    host_address: str = ""  # host side of the bridge, with prefix
    farm_id: int = 0
    farm_name: str = ""
    farmer_seed: str = ""  # hex; the farm owner's key (the state dir is 0700)
    registry_key: str = ""  # hex; the registry's public key, which clients pin
    acme_url: str = ""  # the grid's pebble, where its gateway nodes get certificates
    acme_root: str = ""  # the root pebble issues under (PEM file): what clients trust
    procs: list[Proc] = Field(default_factory=list)
    nodes: list[NodeEntry] = Field(default_factory=list)
    ready: bool = False


def grid_tag(state_dir: Path) -> str:
    """A short tag, stable for one state dir, that prefixes every link and namespace."""
    return "zg" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:4]


class StateError(ValueError):
    """grid.json exists but cannot be read."""


def load(state_dir: Path) -> GridState | None:
    path = Path(state_dir) / STATE_FILE
    try:
        return GridState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as e:  # pydantic's ValidationError is one
        first = str(e).splitlines()[0]
        raise StateError(
            f"{path} is damaged ({first}); `zos grid down` removes what it can find"
        ) from None


def save(state: GridState) -> None:
    path = Path(state.state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(state.model_dump_json(indent=1))
    os.replace(tmp, path)


FORWARDS_FILE = "forwards.json"


def load_forwards(state_dir: Path) -> list[Forward]:
    try:
        raw = json.loads((Path(state_dir) / FORWARDS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [Forward.model_validate(f) for f in raw]


def save_forwards(state_dir: Path, forwards: list[Forward]) -> None:
    path = Path(state_dir) / FORWARDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([f.model_dump() for f in forwards], indent=1))
    os.replace(tmp, path)


def edit_forwards(state_dir: Path, change: Callable[[list[Forward]], list[Forward]]) -> None:
    """Change forwards.json under a lock (the client and `zos grid up` both write it)."""
    with open(Path(state_dir) / ".forwards.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        save_forwards(state_dir, change(load_forwards(state_dir)))
