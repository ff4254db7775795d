"""The deployment manifest: a short YAML file that says what to run, checked line by line.

    name: hello                 # the deployment's name (yours to pick, unique per twin)
    node: 1                     # a node id; or `nodes: {farm: 1}` to let zos pick one
    network: {name: hellonet, subnet: 10.20.1.0/24}   # optional; defaults shown in README
    disks:
      - {name: data, size: 100M}
    machines:
      - name: web
        image: ./rootfs         # a directory or image archive (packed and pushed), or
        # flist: http://hub/flists/7/web.fl   an flist already on a hub
        cpu: 1
        memory: 256M
        entrypoint: /bin/httpd -f -p 8080 -h /www
        env: {GREETING: hello}
        mounts: [{disk: data, mountpoint: /data}]
        ports: [8080]           # reachable from the host on a local grid
        runtime: container      # or `vm`: its own kernel (a light VM), beside runc
        # node: 2               # this machine on node 2 (or `nodes: {farm: 1}`): the
                                # manifest then spans nodes, one network across them
    gateways:                   # optional: published to the web (zos.client.gatewayspec)
      - {name: hello, machine: web, port: 8080}

`load_manifest` refuses a mistake before anything is sent, with the file, the line and
the rule: `app.yaml:12: machines[0].memory: ...`.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from zos.client.gatewayspec import GatewaySpec, check_gateways
from zos.gridtypes.names import name_error

MiB = 1 << 20
GiB = 1 << 30
MIN_MEMORY = 250 * MiB  # what a node accepts for a zmachine (gridtypes)
MAX_BYTES = 1 << 50
_UNITS = {"": 1, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
FORBIDDEN_MOUNTPOINTS = ("/", "/proc", "/sys", "/dev", "/etc", "/.zos")
DEPLOYMENT_NAME = r"^[a-z0-9][a-z0-9_-]{0,35}$"
MAX_MANIFEST = 1 << 20  # bytes: a manifest is short


class ManifestError(ValueError):
    """A manifest that cannot be deployed; `where` is `file:line` when known."""

    def __init__(self, message: str, where: str = "", field: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.field = field
        self.reason = message


def parse_size(value: Any) -> int:
    """Bytes from 1073741824, "512M", "1.5G", "10GiB" (binary units)."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.fullmatch(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a size (e.g. 256M, 1G or a number of bytes)")
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if not 0 < size < MAX_BYTES:
        raise ValueError(f"{value!r} is not a size between 1 byte and 1 PiB")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


def _workload_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    why = name_error(value)
    if why:
        raise ValueError(why)
    return value


WorkloadName = Annotated[str, BeforeValidator(_workload_name)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class DiskSpec(Model):
    name: WorkloadName
    size: Size


class MountSpec(Model):
    disk: WorkloadName
    mountpoint: str

    @field_validator("mountpoint")
    @classmethod
    def _point(cls, point: str) -> str:
        if not point.startswith("/") or ".." in point.split("/"):
            raise ValueError(f"{point!r} must be an absolute path without '..'")
        norm = posixpath.normpath(point)
        if norm in FORBIDDEN_MOUNTPOINTS or any(
            norm.startswith(f"{f}/") for f in FORBIDDEN_MOUNTPOINTS[1:]
        ):
            raise ValueError(f"{norm} is part of the system and cannot be mounted over")
        return norm


class NodeFilter(Model):
    farm: int | None = Field(default=None, ge=1)
    free_memory: Size | None = None


class MachineSpec(Model):
    name: WorkloadName
    flist: str | None = None
    image: str | None = None
    cpu: int = Field(default=1, ge=1, le=64)
    memory: Size = 256 * MiB
    disk_size: Size | None = None  # the root file system's size (default: the minimum)
    entrypoint: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[MountSpec] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)
    ip: str | None = None
    runtime: Literal["container", "vm"] = "container"
    # Where this machine runs, if not where the manifest's `node`/`nodes` say: a manifest
    # whose machines name nodes spans them, with one network across them all.
    node: int | None = Field(default=None, ge=1)
    nodes: NodeFilter | None = None

    @model_validator(mode="after")
    def _checks(self) -> MachineSpec:
        if self.node is not None and self.nodes is not None:
            raise ValueError("give `node` (an id) or `nodes` (a filter), not both")
        if bool(self.flist) == bool(self.image):
            raise ValueError(
                "needs exactly one of `flist` (an flist URL on a hub) or `image` "
                "(a directory or image archive to pack and push)"
            )
        if self.flist and not self.flist.startswith(("http://", "https://")):
            raise ValueError(f"flist: {self.flist!r} must be an http(s) URL of an .fl on a hub")
        return self

    @field_validator("memory")
    @classmethod
    def _memory(cls, memory: int) -> int:
        if memory < MIN_MEMORY:
            raise ValueError(f"at least 250M is needed, got {memory} bytes")
        return memory

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        for p in ports:
            if not 0 < p < 65536:
                raise ValueError(f"{p} is not a port (1-65535)")
        return ports

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not key or "=" in key or "\x00" in key:
                raise ValueError(f"{key!r} is not a variable name")
        return env


class NetworkSpec(Model):
    name: WorkloadName | None = None
    subnet: str | None = None
    ip_range: str = "10.20.0.0/16"


class Manifest(Model):
    name: str
    description: str = ""
    node: int | None = Field(default=None, ge=1)
    nodes: NodeFilter | None = None
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    disks: list[DiskSpec] = Field(default_factory=list)
    machines: list[MachineSpec] = Field(min_length=1)
    gateways: list[GatewaySpec] = Field(default_factory=list)
    base_dir: str = Field(default=".", exclude=True)  # where relative image paths start
    _source: str = PrivateAttr(default="manifest")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)
    # Machines whose image the user gave on the command line (any path, it is theirs).
    _given_images: set[str] = PrivateAttr(default_factory=set)

    def source_line(self, *path: Any) -> str:
        """`file:line` of a field (or of its nearest parent that is written down)."""
        loc = tuple(p for p in path if p is not None)
        while loc and loc not in self._lines:
            loc = loc[:-1]
        return f"{self._source}:{self._lines.get(loc, 1)}"

    def largest_machine(self) -> int:
        return max(range(len(self.machines)), key=lambda i: self.machines[i].memory)

    def index_of(self, machine: str | None) -> int | None:
        return next((i for i, m in enumerate(self.machines) if m.name == machine), None)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.match(DEPLOYMENT_NAME, name):
            raise ValueError(
                f"{name!r}: use lowercase letters, digits, - and _ (at most 36, starting "
                "with a letter or digit)"
            )
        return name

    @model_validator(mode="after")
    def _checks(self) -> Manifest:
        if self.node is not None and self.nodes is not None:
            raise ValueError("give `node` (an id) or `nodes` (a filter), not both")
        net = self.network
        try:
            ip_range = ipaddress.IPv4Network(net.ip_range)
        except ValueError:
            raise ValueError(f"network.ip_range: {net.ip_range!r} is not an IPv4 network") from None
        if self.spans_nodes:
            check_spanning(self, ip_range)
        if net.subnet is not None:
            try:
                subnet = ipaddress.IPv4Network(net.subnet)
            except ValueError:
                raise ValueError(
                    f"network.subnet: {net.subnet!r} is not an IPv4 network (e.g. 10.20.1.0/24)"
                ) from None
            if not subnet.subnet_of(ip_range):
                raise ValueError(f"network.subnet: {subnet} is not inside ip_range {ip_range}")
            if subnet.prefixlen > 29:
                raise ValueError(f"network.subnet: {subnet} is too small (at most /29)")
        names: dict[str, str] = {}
        for kind, items in (("disks", self.disks), ("machines", self.machines)):
            for i, item in enumerate(items):
                if item.name in names or item.name == self.network_name:
                    raise ValueError(f"{kind}[{i}].name: '{item.name}' is used twice")
                names[item.name] = kind
        disks = {d.name for d in self.disks}
        for i, m in enumerate(self.machines):
            seen = set()
            for j, mount in enumerate(m.mounts):
                if mount.disk not in disks:
                    raise ValueError(
                        f"machines[{i}].mounts[{j}].disk: no disk named '{mount.disk}' "
                        f"(disks: {', '.join(sorted(disks)) or 'none'})"
                    )
                if mount.disk in seen:
                    raise ValueError(f"machines[{i}].mounts[{j}].disk: '{mount.disk}' twice")
                seen.add(mount.disk)
        check_gateways(self.gateways, [x.name for x in self.machines], {*names, self.network_name})
        return self

    @property
    def spans_nodes(self) -> bool:
        """Its machines say where they run: one network across their nodes (issue 14)."""
        return any(x.node is not None or x.nodes is not None for x in self.machines)

    @property
    def network_name(self) -> str:
        return self.network.name or f"{re.sub(r'[^A-Za-z0-9_]', '_', self.name)}_net"[:36]

    def image_path(self, machine: MachineSpec) -> Path:
        """Where `machine`'s image is: inside the manifest's directory (no `..`, no
        absolute path, no symlink out of it), unless the user gave it on the command
        line. ManifestError (with the line) when it is not, or is not there."""
        assert machine.image is not None
        i = self.machines.index(machine)
        field, where = f"machines[{i}].image", self.source_line("machines", i, "image")
        if machine.name in self._given_images:
            path = Path(machine.image).expanduser().absolute()
        else:
            path = self._inside_base(machine.image, field, where)
        if not path.exists():
            raise ManifestError(f"{field}: {path} does not exist", where, field)
        return path

    def _inside_base(self, image: str, field: str, where: str) -> Path:
        if Path(image).is_absolute() or image.startswith("~"):
            raise ManifestError(
                f"{field}: {image!r} is an absolute path; a manifest names images inside "
                f"its own directory (give another path on the command line: "
                f"--image NAME=PATH)",
                where,
                field,
            )
        if ".." in Path(image).parts:
            raise ManifestError(
                f"{field}: {image!r} leaves the manifest's directory ('..')", where, field
            )
        base = Path(self.base_dir).absolute().resolve()
        path = base / image
        if path.exists() and not path.resolve().is_relative_to(base):
            raise ManifestError(
                f"{field}: {image!r} is a symlink out of the manifest's directory", where, field
            )
        return path

    def give_images(self, images: dict[str, str | Path]) -> None:
        """Images named on the command line (`--image NAME=PATH`): they replace the
        machines' own `image` or `flist`, and may be anywhere."""
        names = {m.name for m in self.machines}
        for name, path in images.items():
            if name not in names:
                raise ManifestError(
                    f"--image {name}=...: no machine named '{name}' "
                    f"(machines: {', '.join(sorted(names))})"
                )
            machine = next(m for m in self.machines if m.name == name)
            machine.image, machine.flist = str(path), None
            self._given_images.add(name)


def check_spanning(m: Manifest, ip_range: ipaddress.IPv4Network) -> None:
    """A manifest over several nodes: each node gets its own /24 of a private /16."""
    if m.network.subnet is not None:
        raise ValueError(
            "network.subnet: machines on several nodes get one /24 per node from "
            "network.ip_range; leave subnet out"
        )
    if ip_range.prefixlen != 16 or not ip_range.is_private:
        raise ValueError(
            f"network.ip_range: {ip_range} must be a private /16 (e.g. 10.40.0.0/16) for "
            "machines on several nodes"
        )
    for i, x in enumerate(m.machines):
        if x.ip is not None:
            raise ValueError(
                f"machines[{i}].ip: machines on several nodes take addresses of their "
                "node's /24, known only once the network is planned; leave ip out"
            )


# ---- YAML with line numbers -------------------------------------------------------------


def _lines(
    node: yaml.Node,
    path: tuple[Any, ...],
    out: dict[tuple[Any, ...], int],
    seen: set[int] | None = None,
) -> None:
    seen = set() if seen is None else seen
    if id(node) in seen:
        # An alias: refused, so that a small file cannot expand into a huge one.
        raise ManifestError(
            "anchors and aliases (&, *) are not supported", f"line {node.start_mark.line + 1}"
        )
    if not isinstance(node, yaml.ScalarNode):
        seen.add(id(node))
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            k = key.value
            if k in seen:
                raise ManifestError(f"'{k}' is given twice", f"line {key.start_mark.line + 1}")
            seen.add(k)
            out[(*path, k, "<key>")] = key.start_mark.line + 1
            _lines(value, (*path, k), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out, seen)


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int], unknown_key: bool) -> int:
    loc = tuple(loc)
    if unknown_key and (*loc, "<key>") in lines:
        return lines[(*loc[:-1], loc[-1], "<key>")]
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get((), 1)


def _field_line(message: str, lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of a field named at the start of a model-level message (`machines[0].x: ...`)."""
    m = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): ", message)
    if not m:
        return None
    loc: list[Any] = []
    for part in m.group(1).split("."):
        name, _, idx = part.partition("[")
        loc.append(name)
        if idx:
            loc.append(int(idx.rstrip("]")))
    return _line_of(tuple(loc), lines, False)


def parse_manifest(text: str, source: str = "manifest", base_dir: Path | None = None) -> Manifest:
    """A checked Manifest from YAML text; ManifestError names `source:line` and the rule."""
    if len(text) > MAX_MANIFEST:
        raise ManifestError(f"larger than {MAX_MANIFEST} bytes", source)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"{source}:{mark.line + 1}" if mark else source
        raise ManifestError(f"not valid YAML: {e.problem or e}", line) from None
    except yaml.YAMLError as e:
        raise ManifestError(f"not valid YAML: {e}", source) from None
    except RecursionError:
        raise ManifestError("nested too deeply", source) from None
    if not isinstance(data, dict) or node is None:
        raise ManifestError("must be a mapping (name:, machines:, ...)", f"{source}:1")
    lines: dict[tuple[Any, ...], int] = {}
    try:
        _lines(node, (), lines)
    except RecursionError:
        raise ManifestError("nested too deeply", source) from None
    except ManifestError as e:
        raise ManifestError(e.reason, e.where.replace("line ", f"{source}:")) from None
    if "base_dir" in data:
        raise ManifestError("unknown key 'base_dir'", f"{source}:{lines[('base_dir', '<key>')]}")
    data["base_dir"] = str(base_dir or Path("."))
    try:
        manifest = Manifest.model_validate(data)
        manifest._source, manifest._lines = source, lines
        return manifest
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # an unknown key is the likeliest mistake (a typo): name it first
        err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic puts union branches in loc (e.g. 'int'): keep only keys we know
        clean: list[Any] = []
        for p in loc:
            if (*clean, p) in lines or isinstance(p, int) or (*clean, p, "<key>") in lines:
                clean.append(p)
        unknown = err["type"] == "extra_forbidden"
        line: int | None = _line_of(tuple(clean), lines, unknown)
        if err["type"] == "missing" and loc and (not clean or clean[-1] != loc[-1]):
            clean.append(loc[-1])  # name the missing key (it has no line of its own)
        field = ".".join(f"[{p}]" if isinstance(p, int) else p for p in clean).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if unknown:
            msg = f"unknown key '{clean[-1] if clean else loc[-1]}'" + _known(clean, data)
        elif err["type"] == "missing":
            msg = "is missing"
        if err["type"] == "value_error":
            named = _field_line(msg, lines)
            if named is not None and not field:
                line = named
        full = f"{field}: {msg}" if field and not msg.startswith(f"{field}:") else msg
        if not field and line is None:
            line = 1
        raise ManifestError(full, f"{source}:{line}", field) from None


def _known(path: list[Any], data: Any) -> str:
    model: type[BaseModel] | None = Manifest
    for p in path[:-1]:
        if isinstance(p, int) or model is None:
            continue
        ann = model.model_fields.get(p)
        model = None
        if ann is not None:
            for cand in (DiskSpec, MountSpec, MachineSpec, NodeFilter, NetworkSpec, GatewaySpec):
                if cand.__name__ in str(ann.annotation):
                    model = cand
    if model is None:
        return ""
    keys = [k for k in model.model_fields if k != "base_dir"]
    return f" (known: {', '.join(keys)})"


def load_manifest(path: str | Path, images: dict[str, str | Path] | None = None) -> Manifest:
    """A checked manifest from a file; `images`: images given on the command line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_MANIFEST + 1).decode()
    except OSError as e:
        raise ManifestError(e.strerror or str(e), str(path)) from None
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text", str(path)) from None
    manifest = parse_manifest(text, str(path), path.parent.absolute())
    manifest.give_images(images or {})
    for m in manifest.machines:
        if m.image is not None:
            manifest.image_path(m)
    return manifest
