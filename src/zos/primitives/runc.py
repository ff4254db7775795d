"""OCI bundles and the `runc` command.

`build_config` writes what `runc spec` would, tightened: the container gets its own
pid, mount, uts and ipc namespaces and joins a network namespace we made (by path);
only runc's minimal default devices; a Docker-like capability set without NET_RAW,
NET_ADMIN or SYS_ADMIN; noNewPrivileges; runc's masked and read-only paths; a memory
limit and a CPU quota in its own cgroup.

Containers run detached (`runc run --detach`): the agent is not their parent, so they
outlive it; `state` finds them again by id.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zos.primitives import fscrypt

DEFAULT_ROOT = Path("/run/zos/runc")
CPU_PERIOD = 100_000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")

# Docker's default set minus NET_RAW (no raw sockets/ARP games on a shared bridge) and
# MKNOD (no device nodes).
CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
BASE_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
]


# Syscalls a container never needs that widen the kernel's attack surface (Docker's
# default profile refuses these too). Everything else is allowed: a deny list keeps
# ordinary programs working.
DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "delete_module", "finit_module", "fsconfig", "fsmount",
    "fsopen", "fspick", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
    "name_to_handle_at", "open_by_handle_at", "open_tree", "perf_event_open",
    "pivot_root", "quotactl", "reboot", "request_key", "setns", "swapoff",
    "swapon", "syslog", "umount2", "unshare", "userfaultfd", "vhangup",
]  # fmt: skip
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (
    0x20000,
    0x2000000,
    0x4000000,
    0x8000000,
    0x10000000,
    0x20000000,
    0x40000000,
)


def seccomp_profile() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            # no new namespaces (a user namespace first of all): one rule per flag, as a
            # rule's conditions all have to hold
            *(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                    "args": [
                        {"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}
                    ],
                }
                for flag in CLONE_NAMESPACE_FLAGS
            ),
            # clone3's flags sit behind a pointer seccomp cannot read: say "no such call" and
            # libc falls back to clone, which is filtered above
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            # The node's uid 0 holds the keys of encrypted volumes: a container's root must
            # not remove them (locking its own data, or a teammate's), nor add any. The
            # kernel reads ioctl's request as 32 bits: compare only those.
            *(
                {
                    "names": ["ioctl"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                    "args": [
                        {
                            "index": 1,
                            "value": 0xFFFFFFFF,
                            "valueTwo": request,
                            "op": "SCMP_CMP_MASKED_EQ",
                        }
                    ],
                }
                for request in fscrypt.KEY_IOCTLS
            ),
        ],
    }


class RuncError(Exception):
    pass


@dataclass
class BindMount:
    source: Path
    destination: str
    readonly: bool = False
    image: Path | None = None  # the disk image mounted at `source`, if any (not in the bundle)


@dataclass
class ContainerSpec:
    id: str
    rootfs: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    hostname: str = "zmachine"
    netns: Path | None = None  # None: a fresh, empty network namespace
    cpu: float = 1.0  # cores
    memory: int = 256 * 1024 * 1024  # bytes
    pids: int = 4096
    mounts: list[BindMount] = field(default_factory=list)
    readonly_rootfs: bool = False


def check_id(cid: str) -> str:
    if not _ID.match(cid):
        raise RuncError(f"invalid container id {cid!r}")
    return cid


def cgroups_path(cid: str) -> str:
    # Relative: under the agent's own cgroup, so a node inside a limited cgroup stays in it.
    return f"zos/{cid}"


def build_config(spec: ContainerSpec) -> dict[str, Any]:
    check_id(spec.id)
    if not spec.args:
        raise RuncError("the container needs a command to run")
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.hostname, **spec.env}
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
    ]
    namespaces.append(
        {"type": "network", "path": str(spec.netns)} if spec.netns else {"type": "network"}
    )
    # As many open files as the agent may have (a container cannot raise it past that).
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 20)
    mounts = [dict(m) for m in BASE_MOUNTS]
    for m in spec.mounts:
        opts = ["rbind", "nosuid", "nodev", "rprivate"] + (["ro"] if m.readonly else ["rw"])
        mounts.append(
            {"destination": m.destination, "type": "bind", "source": str(m.source), "options": opts}
        )
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.cwd or "/",
            "capabilities": {
                key: list(CAPABILITIES) for key in ("bounding", "effective", "permitted")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(spec.rootfs), "readonly": spec.readonly_rootfs},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path(spec.id),
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": int(spec.memory), "swap": int(spec.memory)},
                "cpu": {"quota": int(spec.cpu * CPU_PERIOD), "period": CPU_PERIOD},
                "pids": {"limit": spec.pids},
            },
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "seccomp": seccomp_profile(),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def write_bundle(bundle: Path, spec: ContainerSpec) -> Path:
    """Write `bundle/config.json` (atomically); returns its path."""
    bundle.mkdir(parents=True, exist_ok=True)
    config = bundle / "config.json"
    tmp = bundle / "config.json.tmp"
    tmp.write_text(json.dumps(build_config(spec), indent=2))
    os.replace(tmp, config)
    return config


class Runc:
    """The `runc` command with its own state directory."""

    def __init__(self, root: Path = DEFAULT_ROOT, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary

    async def _run(
        self,
        *args: str,
        stdout: int | None = None,
        stderr: int | None = None,
        log: Path | None = None,
    ) -> tuple[int, str, str]:
        argv = [self.binary, "--root", str(self.root)]
        if log is not None:
            argv += ["--log", str(log), "--log-format", "json"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
            stderr=stderr if stderr is not None else asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return (
            proc.returncode or 0,
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    async def run_detached(self, cid: str, bundle: Path, output_fd: int) -> int:
        """Start the container; its stdout and stderr go to `output_fd`. Returns its pid."""
        check_id(cid)
        log = bundle / "runc.log"
        log.unlink(missing_ok=True)
        pid_file = bundle / "init.pid"
        code, _, _ = await self._run(
            "run",
            "--detach",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            cid,
            stdout=output_fd,
            stderr=output_fd,
            log=log,
        )
        if code != 0:
            raise RuncError(f"runc run {cid}: {_last_error(log)}")
        return int(pid_file.read_text().strip())

    async def state(self, cid: str) -> dict[str, Any] | None:
        """runc's state of the container (status, pid, bundle...), or None if it does not exist."""
        if not self.root.exists():
            return None  # (runc itself would create its state directory just to say so)
        code, out, err = await self._run("state", check_id(cid))
        if code != 0:
            if "does not exist" in err or "not exist" in err:
                return None
            raise RuncError(f"runc state {cid}: {err.strip()}")
        return json.loads(out)

    async def kill(self, cid: str, signal: str = "KILL") -> None:
        code, _, err = await self._run("kill", "--all", check_id(cid), signal)
        if code != 0 and "not exist" not in err and "not running" not in err:
            raise RuncError(f"runc kill {cid}: {err.strip()}")

    async def delete(self, cid: str) -> None:
        """Kill and remove the container (its processes and cgroup); a no-op if it is gone."""
        if not self.root.exists():
            return
        code, _, err = await self._run("delete", "--force", check_id(cid))
        if code != 0 and "not exist" not in err:
            raise RuncError(f"runc delete {cid}: {err.strip()}")

    async def list(self) -> list[dict[str, Any]]:
        if not self.root.exists():
            return []
        code, out, err = await self._run("list", "--format", "json")
        if code != 0:
            raise RuncError(f"runc list: {err.strip()}")
        return json.loads(out) if out.strip() and out.strip() != "null" else []


def _last_error(log: Path) -> str:
    msg = "failed"
    try:
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                msg = entry.get("msg", msg)
    except OSError:
        pass
    return msg
