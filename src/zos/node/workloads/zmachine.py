"""`zmachine`: a machine on a twin's private network, run by a runtime (runc or a VM).

The manager makes the machine's plan and asks its runtime (`zos.node.runtimes`) to run
it; which runtime is recorded in the machine's state.

For workload `<wid>` the node makes:
- a writable layer: `<data>/storage/zmachines/<wid>.img`, an ext4 image of the
  machine's root size, loop-mounted at `<data>/storage/zmachines/<wid>/` (upper + work;
  under `data/`, encrypted, when the deployment has a data key);
- its rootfs: the flist's prepared tree (node flist cache, read-only, shared) with that
  layer on top (overlayfs) at `<data>/zmachines/<wid>/rootfs`;
- its interface on the network, from the node's networks service (`attach`, kind
  "veth": namespace `c-<wid>` with `eth0`, its other end on the network's bridge, its
  ip and a default route via the subnet's `.1`; `zos.node.networks`);
- its process (entrypoint, env, working directory: the workload's or the flist's),
  run by the runtime (runc: container `zm-<wid>`, supervised, output in bounded log
  files; `zos.node.runtimes.runc`).
`<data>/zmachines/<wid>/state.json` records what was made, before it is made, so a
crash half way is finished or removed by the next provision or cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import re
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field, fields
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from zos.gridtypes.names import network_id
from zos.node.networks import AddressError, Attachment, NetworkInfo
from zos.node.runtimes import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    MachinePlan,
    MachineRuntime,
    MachineRuntimeError,
    MachineStats,
    Mount,
)
from zos.node.workloads.base import Manager, NodeServices, WorkloadContext, WorkloadError
from zos.node.workloads.encrypted import deployment_key, open_tree
from zos.node.workloads.volume import volume_mount, volume_path
from zos.node.workloads.zmount import zmount_path
from zos.primitives import blockdev, filesystem, links, logd, loop, overlay
from zos.primitives.command import CommandError
from zos.primitives.fscrypt import KeyringKey
from zos.primitives.trees import remove_tree

MiB = 1 << 20
VM_RUNTIME = "vm"  # the runtime of `runtime: vm` (zos.node.runtimes.vm)
VM_IMAGE = "image.raw"  # an flist with it is a VM image: always run as a VM
DEFAULT_ROOT_SIZE = 500 * MiB
# Where a user's volume may not be mounted (the container's own kernel file systems).
FORBIDDEN_MOUNTPOINTS = ("/", "/proc", "/sys", "/dev", "/.zos")
_ENV_KEY = re.compile(r"^[^=\x00]+$")


@dataclass
class MachineState:
    """What `provision` made for one zmachine (enough to find and remove all of it)."""

    wid: str
    netid: str
    ip: str
    tree: str  # the prepared flist tree (the overlay's lower)
    cached: bool  # whether `tree` is held in the node's flist cache
    mounts: list[dict[str, str]] = field(default_factory=list)
    runtime: str = DEFAULT_RUNTIME  # what runs it (an older agent's machines: runc)


@contextlib.contextmanager
def _interface_field() -> Iterator[None]:
    """An address refused by the networks service, named as the machine's field."""
    try:
        yield
    except AddressError as exc:
        raise WorkloadError(f"network.interfaces[0].{exc}") from None


_STATE_FIELDS = {f.name for f in fields(MachineState)}


def _etc_files(name: str, ip: IPv4Address) -> dict[str, str]:
    return {
        "/etc/hostname": f"{name}\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{ip}\t{name}\n",
        "/etc/resolv.conf": "nameserver 1.1.1.1\nnameserver 8.8.8.8\n",
    }


def _mount_record(m: Mount) -> dict[str, str]:
    # A zmount's disk too: no other machine may use it while this one exists.
    image = {"image": str(m.image)} if m.image is not None else {}
    return {"source": str(m.source), "destination": m.destination} | image


class ZMachineManager(Manager):
    type = "zmachine"
    rank = 70

    def __init__(self, node: NodeServices) -> None:
        super().__init__(node)
        self._runtimes: dict[str, MachineRuntime] = {}
        self._held: set[str] = set()  # workloads whose flist tree this manager holds

    # ---- runtimes ----------------------------------------------------------------

    def runtime(self, name: str = DEFAULT_RUNTIME) -> MachineRuntime:
        """The node's runtime `name` (built on first use)."""
        if name not in self._runtimes:
            factory = RUNTIMES.get(name)
            if factory is None:
                raise WorkloadError(f"zmachine: runtime {name!r} is not available on this node")
            self._runtimes[name] = factory(self.node)
        return self._runtimes[name]

    def runtime_for(self, ctx: WorkloadContext, before: MachineState | None) -> MachineRuntime:
        """What runs this machine: the runtime it ran under, else the one it asks for
        (`runtime: vm`), else the node's choice for new machines."""
        if before is not None:
            return self.runtime(before.runtime)
        asked = getattr(ctx.workload.data, "runtime", "")
        return self.runtime(VM_RUNTIME if asked == "vm" else self.node.machine_runtime)

    def _runtime_of(self, wid: str) -> MachineRuntime:
        state = self._load(wid)
        if state is None:
            raise WorkloadError(f"no zmachine {wid} on this node")
        return self.runtime(state.runtime)

    # ---- places ------------------------------------------------------------------

    def _dir(self, wid: str) -> Path:
        return self.node.data_dir / "zmachines" / wid

    def _storage(self, wid: str) -> tuple[Path, Path]:
        base = self.node.storage_dir("zmachines")
        return base / f"{wid}.img", base / wid

    def _load(self, wid: str) -> MachineState | None:
        try:
            raw = json.loads((self._dir(wid) / "state.json").read_text())
        except FileNotFoundError:
            return None
        # An older agent's state also names the namespace and port (now the attachment's).
        return MachineState(**{k: v for k, v in raw.items() if k in _STATE_FIELDS})

    def _save(self, state: MachineState) -> None:
        path = self._dir(state.wid) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        os.replace(tmp, path)

    def states(self) -> list[MachineState]:
        base = self.node.data_dir / "zmachines"
        found = []
        if base.is_dir():
            for d in sorted(base.iterdir()):
                st = self._load(d.name)
                if st is not None:
                    found.append(st)
        return found

    def disk_holder(self, image: Path, other_than: str = "") -> tuple[str, str] | None:
        """(machine, mount point) of the machine whose state records zmount disk `image`
        (a VM's drive or a container's file system), if any but `other_than` does."""
        for s in self.states():
            for m in s.mounts:
                if s.wid != other_than and m.get("image") == str(image):
                    return s.wid, m["destination"]
        return None

    # ---- checks ------------------------------------------------------------------

    def _check(self, ctx: WorkloadContext) -> tuple[Any, NetworkInfo, IPv4Address]:
        data = ctx.workload.data
        wid = ctx.workload_id
        interfaces = list(data.network.interfaces)
        if len(interfaces) != 1:
            raise WorkloadError(
                f"network.interfaces: exactly one private network interface is supported, "
                f"got {len(interfaces)}"
            )
        inf = interfaces[0]
        try:
            info = self.node.networks.lookup(ctx.twin_id, inf.network)
        except WorkloadError as exc:
            raise WorkloadError(f"network.interfaces[0].network: {exc}") from None
        with _interface_field():
            ip = self.node.networks.check_address(info, str(inf.ip), wid)
        cpu = int(data.compute_capacity.cpu)
        if cpu < 1:
            raise WorkloadError("compute_capacity.cpu: must be at least 1")
        if int(data.compute_capacity.memory) < 16 * MiB:
            raise WorkloadError("compute_capacity.memory: must be at least 16 MiB")
        for key in data.env:
            if not _ENV_KEY.match(key):
                raise WorkloadError(f"env: invalid variable name {key!r}")
        return data, info, ip

    def _mounts(self, ctx: WorkloadContext) -> list[Mount]:
        result = []
        seen: set[str] = set()
        disks: set[str] = set()
        for i, m in enumerate(ctx.workload.data.mounts):
            where = f"mounts[{i}]"
            point = posixpath.normpath(str(m.mountpoint or ""))
            if not str(m.mountpoint).startswith("/") or ".." in str(m.mountpoint).split("/"):
                raise WorkloadError(
                    f"{where}.mountpoint: {m.mountpoint!r} must be an absolute path"
                )
            if any(ord(c) < 32 or c == "\x7f" for c in point):
                raise WorkloadError(f"{where}.mountpoint: may not contain control characters")
            if point in FORBIDDEN_MOUNTPOINTS or any(
                point.startswith(f"{f}/") for f in FORBIDDEN_MOUNTPOINTS[1:]
            ):
                raise WorkloadError(f"{where}.mountpoint: {point} cannot be mounted over")
            if point in seen:
                raise WorkloadError(f"{where}.mountpoint: {point} is used twice")
            seen.add(point)
            target = next((w for w in ctx.deployment.workloads if w.name == m.name), None)
            if target is None or target.type not in ("volume", "zmount"):
                raise WorkloadError(f"{where}.name: no volume named '{m.name}' in the deployment")
            target_id = ctx.workload_id_of(m.name)
            if target.type == "zmount":
                if m.name in disks:  # one disk, two file system mounts (or two VM drives)
                    raise WorkloadError(f"{where}.name: zmount '{m.name}' is mounted twice")
                disks.add(m.name)
                result.append(self._disk_mount(ctx.workload_id, target_id, m.name, point, where))
                continue
            source = volume_path(self.node, target_id)
            if filesystem.mount_of(volume_mount(self.node, target_id)) is None:
                raise WorkloadError(f"{where}.name: volume '{m.name}' is not ready on this node")
            result.append(Mount(source, point))
        return result

    def _disks_dir(self, wid: str) -> Path:
        return self.node.storage_dir("zmachines") / f"{wid}.disks"

    def _disk_mount(self, wid: str, zmount_id: str, name: str, point: str, where: str) -> Mount:
        """A zmount (a raw disk) for a container: its file system, loop-mounted on the node
        (ext4 made on first use of a blank disk), bind-mounted into the container."""
        image = zmount_path(self.node, zmount_id)
        if not image.exists():
            raise WorkloadError(f"{where}.name: zmount '{name}' is not ready on this node")
        mount = self._disks_dir(wid) / name
        mine = filesystem.mount_of(mount) is not None
        # One file system mounted twice at once would be corrupted: by a container (a loop
        # device of the node) or a VM (QEMU's drive, recorded in the machine's state).
        if (not mine and loop.devices_for(image)) or self.disk_holder(image, other_than=wid):
            raise WorkloadError(f"{where}.name: zmount '{name}' is in use by another machine")
        return Mount(mount, point, image=image)

    async def _mount_disks(self, mounts: list[Mount]) -> None:
        for m in mounts:
            if m.image is None or filesystem.mount_of(m.source) is not None:
                continue
            if await blockdev.fs_type(m.image) is None:
                await filesystem.mkfs_ext4(m.image)
            await filesystem.mount_image(m.image, m.source)

    async def _unmount_disks(self, wid: str) -> None:
        disks = self._disks_dir(wid)
        for m in reversed(filesystem.mounts_under(disks)):
            await filesystem.umount(m.target)
        await asyncio.to_thread(remove_tree, disks, ignore_errors=True)

    def _local_allowed(self, flist: str) -> bool:
        path = Path(flist).resolve()
        for allowed in self.node.local_flists:
            root = Path(allowed).resolve()
            if path == root or root in path.parents:
                return True
        return False

    def _tenant_text(self, exc: Exception) -> str:
        """An error for the tenant: never a path of the node's own."""
        return str(exc).replace(str(self.node.data_dir), "<node>")

    async def _rootfs_tree(self, flist: str, root_size: int) -> tuple[Path, bool, dict[str, str]]:
        """The read-only tree of `flist` and its tags (entrypoint, env, workdir); an flist
        declaring more than `root_size` bytes of files is refused before it is fetched."""
        from zos.flist.errors import FlistError, StoreError  # the flist package when used

        cache = self.node.flist_cache
        if not flist.startswith(("http://", "https://")):
            # A path on the node only where the operator allows it (tests, benchmarks, base
            # images): a user must not name the node's own files as a root file system.
            if not self._local_allowed(flist):
                raise WorkloadError(f"flist: {flist!r} is not an http(s) URL")
            if Path(flist).is_dir():
                return Path(flist), False, {}  # an already prepared tree
        if cache is None:
            raise WorkloadError("flist: this node has no flist cache")
        try:
            tree = await cache.prepare(flist, acquire=True, max_size=root_size)
        except (FlistError, StoreError) as exc:  # they name the flist and the rule
            raise WorkloadError(f"flist: {self._tenant_text(exc)}") from None
        except OSError as exc:
            why = exc.strerror or "I/O error"
            raise WorkloadError(f"flist: cannot prepare it on this node: {why}") from None
        tags: dict[str, str] = {}
        fl = Path(cache.flists_dir) / f"{Path(tree).name}.fl"
        with contextlib.suppress(Exception):
            from zos.flist.format import read_flist

            tags = (await asyncio.to_thread(read_flist, fl, setuid="strip")).tags
        return Path(tree), True, tags

    # ---- the manager -------------------------------------------------------------

    async def provision(self, ctx: WorkloadContext) -> dict[str, Any]:
        wid = ctx.workload_id
        data, info, ip = self._check(ctx)
        mounts = self._mounts(ctx)
        before = self._load(wid)
        runtime = self.runtime_for(ctx, before)
        try:
            runtime = await self._build(ctx, runtime, data, info, ip, mounts)
        except (WorkloadError, CommandError, MachineRuntimeError, OSError, links.LinkError) as exc:
            if before is None:
                await self._remove(wid, info.netid)
            if isinstance(exc, WorkloadError):
                raise
            raise WorkloadError(f"zmachine {ctx.workload.name}: {exc}") from None
        result = {
            "id": wid,
            "ip": str(ip),
            "planetary_ip": "",
            "mycelium_ip": "",
            "console_url": "",
        }
        return result | self._runtime_result(runtime, wid)

    @staticmethod
    def _runtime_result(runtime: MachineRuntime, wid: str) -> dict[str, str]:
        """What a runtime other than the default adds: its name, a VM its accelerator."""
        if runtime.name == DEFAULT_RUNTIME:
            return {}
        accel = getattr(runtime, "accel_of", lambda _wid: None)(wid)
        return {"runtime": runtime.name} | ({"accelerator": accel} if accel else {})

    async def _build(
        self,
        ctx: WorkloadContext,
        runtime: MachineRuntime,
        data: Any,
        info: NetworkInfo,
        ip: IPv4Address,
        mounts: list[Mount],
    ) -> MachineRuntime:
        """Make the machine and run it; the runtime that runs it (a VM image: a VM)."""
        wid = ctx.workload_id
        tree, cached, tags = await self._rootfs_tree(str(data.flist), int(data.root_size()))
        image = (tree / VM_IMAGE).is_file()
        if image:
            runtime = self.runtime(VM_RUNTIME)
        if cached and wid not in self._held:
            self._held.add(wid)
        elif cached and self.node.flist_cache is not None:
            self.node.flist_cache.release(tree)  # held once per workload
        state = MachineState(
            wid=wid,
            netid=info.netid,
            ip=str(ip),
            tree=str(tree),
            cached=cached,
            mounts=[_mount_record(m) for m in mounts],
            runtime=runtime.name,
        )
        self._save(state)
        args, env, cwd = self._process(data, tags, needs_entrypoint=not image)
        key = deployment_key(ctx)
        rootfs = await self._mount_rootfs(wid, tree, int(data.root_size()), key)
        if runtime.name != VM_RUNTIME:  # a VM's zmounts are its disks, never mounted here
            await self._mount_disks(mounts)
        attachment = await self._attach(ctx, info, ip, runtime.interface_kind)
        plan = MachinePlan(
            workload_id=wid,
            hostname=ctx.workload.name,
            workdir=self._dir(wid),
            rootfs=rootfs,
            args=tuple(args),
            env=env,
            cwd=cwd,
            cpu=int(data.compute_capacity.cpu),
            memory=int(data.compute_capacity.memory),
            mounts=tuple(mounts),
            files=_etc_files(ctx.workload.name, ip),
            interfaces=(attachment,),
        )
        await runtime.ensure(plan)
        return runtime

    async def _attach(
        self, ctx: WorkloadContext, info: NetworkInfo, ip: IPv4Address, kind: str
    ) -> Attachment:
        """The machine's interface on its network (checked again under the network's lock:
        two machines cannot both take one free ip)."""
        with _interface_field():
            return await self.node.networks.attach(
                ctx.twin_id, info.name, ctx.workload_id, str(ip), kind=kind
            )

    def _process(
        self, data: Any, tags: dict[str, str], needs_entrypoint: bool = True
    ) -> tuple[list[str], dict[str, str], str]:
        try:
            args = shlex.split(str(data.entrypoint or ""))
        except ValueError as exc:
            raise WorkloadError(f"entrypoint: cannot be parsed: {exc}") from None
        if not args:
            with contextlib.suppress(ValueError, TypeError):
                args = json.loads(tags.get("entrypoint", "[]")) + json.loads(tags.get("cmd", "[]"))
        if not args and needs_entrypoint:  # a VM image boots its own init
            raise WorkloadError("entrypoint: empty, and the flist names no entrypoint of its own")
        env: dict[str, str] = {}
        with contextlib.suppress(ValueError, TypeError):
            for item in json.loads(tags.get("env", "[]")):
                key, _, value = str(item).partition("=")
                env[key] = value
        env.update({str(k): str(v) for k, v in data.env.items()})
        return args, env, tags.get("workdir") or "/"

    async def _mount_rootfs(self, wid: str, tree: Path, size: int, key: KeyringKey | None) -> Path:
        image, layer = self._storage(wid)
        rootfs = self._dir(wid) / "rootfs"
        if filesystem.mount_of(layer) is None:
            if not image.exists():
                tmp = image.with_suffix(".img.tmp")
                filesystem.create_sparse(tmp, size or DEFAULT_ROOT_SIZE)
                await filesystem.mkfs_ext4(tmp, encrypt=key is not None)
                os.replace(tmp, image)
            await filesystem.mount_image(image, layer)
        # Encrypted: upper *and* work inside the encrypted tree (copy-ups pass through work).
        base = open_tree(layer, key) if key is not None else layer
        if not overlay.is_mounted(rootfs):
            await overlay.mount_overlay(tree, base / "upper", base / "work", rootfs)
        return rootfs

    async def deprovision(self, ctx: WorkloadContext) -> None:
        wid = ctx.workload_id
        state = self._load(wid)
        netid = state.netid if state else None
        if netid is None:
            with contextlib.suppress(Exception):
                inf = ctx.workload.data.network.interfaces[0]
                netid = network_id(ctx.twin_id, inf.network)
        await self._remove(wid, netid)

    async def _remove(self, wid: str, netid: str | None) -> None:
        """Remove every piece of `wid` (its interface on network `netid` last, and the
        network with it if nothing else uses it); each step is a no-op when its piece is
        gone."""
        state = self._load(wid)
        # A machine with no state yet was started by no runtime; its logs may be left.
        runtime = self.runtime(state.runtime if state else self.node.machine_runtime)
        try:
            await runtime.stop(wid)
            rootfs = self._dir(wid) / "rootfs"
            await overlay.unmount(rootfs)
            await self._unmount_disks(wid)
            image, layer = self._storage(wid)
            if filesystem.mount_of(layer) is not None:
                await filesystem.umount(layer)
            for dev in loop.devices_for(image):
                await loop.detach(dev)
        except (CommandError, MachineRuntimeError) as exc:
            raise WorkloadError(f"zmachine {wid}: cannot remove: {exc}") from None
        for path in (image, image.with_suffix(".img.tmp")):
            path.unlink(missing_ok=True)
        await asyncio.to_thread(remove_tree, layer, ignore_errors=True)
        await asyncio.to_thread(remove_tree, runtime.logs(wid), ignore_errors=True)
        if state is not None and state.cached and wid in self._held:
            self._held.discard(wid)
            if self.node.flist_cache is not None:
                self.node.flist_cache.release(state.tree)
        if netid is not None:  # None: the machine was refused before it had an interface
            await self.node.networks.detach(netid, wid, kind=runtime.interface_kind)
        await asyncio.to_thread(remove_tree, self._dir(wid), ignore_errors=True)
        in_use = {s.runtime for s in self.states()}
        for name, each in self._runtimes.items():
            if name not in in_use:  # its last machine: no log daemon or state directory stays
                await each.idle()

    async def cleanup(self, keep: set[str]) -> None:
        # Machines of this node that nothing records any more (or records under another
        # runtime).
        for name in RUNTIMES:
            runtime = self.runtime(name)
            for wid in await runtime.list():
                state = self._load(wid)
                if state is None or state.runtime != name:
                    await runtime.stop(wid)
        for state in self.states():
            if state.wid not in keep:
                await self._remove(state.wid, state.netid)

    async def close(self) -> None:
        """The agent is stopping: let go of the machines, leave them running."""
        for runtime in self._runtimes.values():
            runtime.close()

    # ---- logs --------------------------------------------------------------------

    async def logs_since(
        self, workload_id: str, offset: int = 0, wait: float = 0.0
    ) -> tuple[bytes, int]:
        """Output from `offset` on and the offset to ask from next; with `wait`, wait up
        to that many seconds for output when there is none yet (a long poll)."""
        directory = self._runtime_of(workload_id).logs(workload_id)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            data, after = await asyncio.to_thread(logd.read_from, directory, offset)
            if data or asyncio.get_running_loop().time() >= deadline:
                return data, after
            await asyncio.sleep(0.2)

    async def stats(self, workload_id: str) -> MachineStats | None:
        """What the machine uses, from its runtime (None: the runtime has no such machine)."""
        return await self._runtime_of(workload_id).stats(workload_id)

    async def read_logs(self, workload_id: str, follow: bool = False) -> AsyncIterator[bytes]:
        """The machine's output (stdout and stderr, at most 2 MiB kept); with `follow`, new
        output as it comes until the machine is removed. The caller checks the owner."""
        directory = self._runtime_of(workload_id).logs(workload_id)
        if not follow:
            yield await asyncio.to_thread(logd.read, directory)
            return
        async for chunk in logd.follow(directory):
            yield chunk
