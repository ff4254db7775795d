"""The light VM: the init its initramfs runs, and the settings the host hands that init.

A container flist runs as a light VM: Debian's kernel, an initramfs built on the node
(`zos.primitives.initramfs`) whose init mounts the flist tree (a virtio-9p share) as the
root, configures the network, sets the hostname, mounts the volumes, and runs the
entrypoint with its environment and working directory inside that root (busybox
`nsenter -r -w`: a chroot that keeps the directory, so the entrypoint is found on the
machine's PATH and starts where runc would start it, the directory made if missing).
The init stays PID 1: when the entrypoint exits it logs the status and powers the
machine off (the host restarts it); the power button (QMP `system_powerdown`) stops the
entrypoint, syncs and powers off cleanly.

Two channels, each for what it carries best:
- the kernel command line, in the syntax other initramfs tools know too: `root=`,
  `rootfstype=`, `ifname=<name>:<mac>`, `ip=<ip>::<gw>:<mask>::<name>:off:<dns>…`,
  `rd.route=<net>:<gw>:<name>`. Only values we generated go there (addresses, MACs).
- everything a tenant chooses (hostname, environment, entrypoint, working directory,
  mount points, file contents) goes in a file QEMU hands the guest as fw_cfg
  `opt/zos/config`, never on the command line: a shell fragment in which every value is
  single-quoted (`shlex.quote`), so the init sources it without a value ever being
  parsed as shell. Keys, paths and serials are checked here, NUL bytes refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path, PurePosixPath

from zos.primitives import initramfs
from zos.primitives.vmnames import DISK_SERIAL, HOSTNAME, SHARE_TAG

CONFIG_NAME = "opt/zos/config"
ROOT_TAG = "root"
PROBE_ARG = "zos.probe"
PROBE_MARKER = b"ZOS-PROBE-OK"
READY_MARKER = "zos-init: starting entrypoint"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# zos's defaults, with `quiet` (a TCG guest spends seconds printing its boot) and a
# triple-fault reboot (microvm has no keyboard controller to reset through).
DEFAULT_ARGS = ("rw", "console=ttyS0", "quiet", "reboot=t", "panic=1")

# Transports (mmio for microvm, pci for q35), disks, network, the root share, ext4
# volumes, the settings file, and the power button.
MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "crc32c_generic",
    "ext4",
    "qemu_fw_cfg",
    "button",
    "evdev",
)

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FSTYPE = re.compile(r"^[a-z0-9]{1,16}$")


class GuestConfigError(ValueError):
    pass


def _no_nul(what: str, value: str) -> str:
    if "\0" in value:
        raise GuestConfigError(f"{what}: may not contain a NUL byte")
    return value


def _guest_path(what: str, path: str) -> str:
    _no_nul(what, path)
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts or str(p) == "/" or "\n" in path:
        raise GuestConfigError(f"{what}: {path!r} must be an absolute path below / without '..'")
    return str(p)


@dataclass(frozen=True)
class Mount:
    """A volume inside the machine: a disk found by its serial, or a 9p share by its tag."""

    kind: str  # "blk" or "9p"
    source: str  # the disk's serial or the share's tag
    target: str  # where in the machine's root
    fstype: str = "ext4"  # for disks

    def check(self) -> None:
        if self.kind == "blk":
            if not DISK_SERIAL.match(self.source):
                raise GuestConfigError(f"mount {self.target}: invalid disk serial {self.source!r}")
            if not _FSTYPE.match(self.fstype):
                raise GuestConfigError(f"mount {self.target}: invalid fstype {self.fstype!r}")
        elif self.kind == "9p":
            if not SHARE_TAG.match(self.source):
                raise GuestConfigError(f"mount {self.target}: invalid share tag {self.source!r}")
        else:
            raise GuestConfigError(f"mount {self.target}: kind must be blk or 9p")
        _guest_path("mount target", self.target)


@dataclass(frozen=True)
class GuestConfig:
    """What the init of one light VM is told through fw_cfg."""

    hostname: str
    entrypoint: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    # path -> content, bind-mounted read-only over the root (/etc/hosts, resolv.conf …)
    files: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"  # the entrypoint's working directory in the root

    def check(self) -> None:
        if not HOSTNAME.match(self.hostname):
            raise GuestConfigError(f"hostname: invalid {self.hostname!r}")
        if not self.entrypoint or not self.entrypoint[0]:
            raise GuestConfigError("entrypoint: empty")
        for arg in self.entrypoint:
            _no_nul("entrypoint", arg)
        for key, value in self.env.items():
            if not _ENV_KEY.match(key):
                raise GuestConfigError(f"env: invalid variable name {key!r}")
            _no_nul(f"env {key}", value)
        for m in self.mounts:
            m.check()
        for path, content in self.files.items():
            _guest_path("file", path)
            _no_nul(f"file {path}", content)
        if self.cwd != "/":
            _guest_path("cwd", self.cwd)

    def render(self) -> str:
        """The shell fragment the init sources: calls of its own functions, then the
        environment and the entrypoint as positional parameters split by `--` (an
        environment entry always holds `=`, so the first bare `--` is the split)."""
        self.check()
        q = shlex.quote
        lines = ["# zos light VM settings: every value single-quoted"]
        lines.append(f"zos_hostname {q(self.hostname)}")
        for m in self.mounts:
            lines.append(f"zos_mount {q(m.kind)} {q(m.source)} {q(m.target)} {q(m.fstype)}")
        for path, content in self.files.items():
            lines.append(f"zos_file {q(_guest_path('file', path))} {q(content)}")
        if self.cwd != "/":
            lines.append(f"zos_cwd {q(_guest_path('cwd', self.cwd))}")
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname, **self.env}
        words = [q(f"{k}={v}") for k, v in env.items()] + ["--"] + [q(a) for a in self.entrypoint]
        lines.append("set -- " + " ".join(words))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Interface:
    """One NIC as the init configures it from the kernel command line."""

    name: str  # eth0 …
    mac: str
    address: IPv4Interface
    gateway: IPv4Address | None = None
    routes: Sequence[tuple[IPv4Network, IPv4Address]] = ()
    dns: Sequence[IPv4Address] = ()

    def args(self) -> list[str]:
        gw = str(self.gateway) if self.gateway else ""
        dns = [str(d) for d in self.dns[:2]]
        ip = [str(self.address.ip), "", gw, str(self.address.netmask), "", self.name, "off", *dns]
        out = [f"ifname={self.name}:{self.mac.lower()}", "ip=" + ":".join(ip)]
        out += [f"rd.route={net}:{via}:{self.name}" for net, via in self.routes]
        return out


def kernel_cmdline(
    interfaces: Sequence[Interface] = (),
    root: str = ROOT_TAG,
    rootfstype: str = "9p",
    extra: Sequence[str] = (),
) -> str:
    """The light VM's kernel command line: zos's defaults, the root, the network."""
    args = [*DEFAULT_ARGS, f"root={root}", f"rootfstype={rootfstype}"]
    for nic in interfaces:
        args += nic.args()
    return " ".join([*args, *extra])


def probe_cmdline() -> str:
    """Boots the light initramfs only to print PROBE_MARKER and power off."""
    return " ".join([*DEFAULT_ARGS, "panic=-1", PROBE_ARG])


def ensure_initramfs(cache: Path, kernel: initramfs.Kernel) -> Path:
    """The light VM initramfs for `kernel`, from the cache (built on first use)."""
    return initramfs.ensure(cache, initramfs.Recipe(kernel, INIT, MODULES))


INIT = r"""#!/bin/sh
# zos light VM init (PID 1). Settings: kernel command line (root, network) and the
# fw_cfg file opt/zos/config (hostname, mounts, files, environment, entrypoint).
export PATH=/bin
set -f
log() { echo "zos-init: $*"; }
halt_now() { sync; umount -a -r 2>/dev/null; poweroff -f; while :; do sleep 1000; done; }
fail() { log "$*"; halt_now; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -onlcr 2>/dev/null  # the log gets the program's own line ends, as a container's
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load
cmdline=$(cat /proc/cmdline)
for arg in $cmdline; do
    [ "$arg" = zos.probe ] && { echo ZOS-PROBE-OK; poweroff -f; }
done

# ---- network: ifname=NAME:MAC, ip=IP::GW:MASK::NAME:off:DNS0:DNS1, rd.route=NET:GW:NAME
ip link set lo up
dns=""
for arg in $cmdline; do
    case $arg in
    ifname=*)
        v=${arg#ifname=}; name=${v%%:*}; mac=${v#*:}
        set +f
        for d in /sys/class/net/*; do
            [ "$(cat "$d/address")" = "$mac" ] || continue
            [ "${d##*/}" = "$name" ] || ip link set "${d##*/}" name "$name"
        done
        set -f
        ;;
    esac
done
for arg in $cmdline; do
    case $arg in
    ip=*)
        IFS=: read -r addr peer gw mask host dev auto dns0 dns1 <<EOF
${arg#ip=}
EOF
        prefix=$(ipcalc -p "$addr" "$mask") && prefix=${prefix#PREFIX=}
        ip link set "$dev" up && ip addr add "$addr/$prefix" dev "$dev" \
            || log "cannot configure $dev"
        [ -n "$gw" ] && { ip route add default via "$gw" dev "$dev" || log "no route via $gw"; }
        for d in $dns0 $dns1; do dns="$dns $d"; done
        ;;
    esac
done
for arg in $cmdline; do
    case $arg in
    rd.route=*)
        IFS=: read -r net via dev <<EOF
${arg#rd.route=}
EOF
        ip route add "$net" via "$via" ${dev:+dev "$dev"} || log "no route to $net"
        ;;
    esac
done

# ---- root
root=""; rootfstype=ext4
for arg in $cmdline; do
    case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) rootfstype=${arg#rootfstype=} ;;
    esac
done
p9="trans=virtio,version=9p2000.L,msize=262144"
wait_dev() { n=0; while [ ! -b "$1" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; }
if [ "$rootfstype" = 9p ]; then
    mount -t 9p -o "$p9" "$root" /newroot || fail "cannot mount the root share $root"
else
    wait_dev "$root"
    mount -t "$rootfstype" "$root" /newroot || fail "cannot mount the root disk $root"
fi
for d in proc sys dev; do mkdir -p "/newroot/$d"; done
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o nosuid,nodev shm /newroot/dev/shm
if [ -n "$dns" ]; then
    : > /run/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /run/resolv.conf; done
fi

# ---- settings (every value single-quoted by the host)
zos_hostname() { hostname "$1"; }
disk() {
    set +f
    for s in /sys/block/*/serial; do
        [ "$(cat "$s" 2>/dev/null)" = "$1" ] || continue
        b=${s%/serial}; set -f; echo "/dev/${b##*/}"; return 0
    done
    set -f; return 1
}
zos_mount() {
    mkdir -p "/newroot$3" || fail "cannot make mount point $3"
    if [ "$1" = 9p ]; then
        mount -t 9p -o "$p9" "$2" "/newroot$3" || fail "cannot mount share $2 at $3"
    else
        n=0; while ! dev=$(disk "$2") && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
        [ -n "$dev" ] || fail "no disk with serial $2"
        mount -t "$4" "$dev" "/newroot$3" || fail "cannot mount disk $2 at $3"
    fi
}
nfiles=0
bind_file() {
    # A read-only root without the file keeps its own (nothing to mount over).
    [ -e "/newroot$1" ] || { mkdir -p "/newroot${1%/*}" && touch "/newroot$1"; } 2>/dev/null \
        || { log "cannot place $1 (read-only root?)"; return 0; }
    mount --bind "$2" "/newroot$1" && mount -o remount,bind,ro "/newroot$1" \
        || fail "cannot place $1"
}
zos_file() {
    nfiles=$((nfiles+1)); printf '%s' "$2" > "/run/file$nfiles"; bind_file "$1" "/run/file$nfiles"
}
cwd=/
zos_cwd() { cwd=$1; }
cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/zos/config/raw
[ -r "$cfg" ] || fail "no settings (fw_cfg opt/zos/config)"
cat "$cfg" > /run/config
set --
. /run/config
[ -f /run/resolv.conf ] && bind_file /etc/resolv.conf /run/resolv.conf
# A missing working directory is made, as runc makes it (not on a read-only root).
mkdir -p "/newroot$cwd" 2>/dev/null
[ -d "/newroot$cwd" ] || { log "no working directory $cwd: starting in /"; cwd=/; }
wd=/newroot$cwd

# env -i "<env>"... nsenter -r/newroot -w"$wd" "<argv>"...: the eval'd text holds only
# "${N}" and "$wd" references, never a value. nsenter opens the directory, then enters
# the root (chroot would change to its /).
cmd="env -i"; i=0; split=""
for a in "$@"; do
    i=$((i+1))
    if [ -z "$split" ] && [ "$a" = -- ]; then
        split=1; cmd="$cmd /bin/nsenter -F -r/newroot \"-w\$wd\""; continue
    fi
    cmd="$cmd \"\${$i}\""
done
[ -n "$split" ] || fail "the settings name no entrypoint"

# ---- the power button: busybox acpid runs /etc/acpi/PWRF/00000080
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\nkill -USR2 1\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
stopping=""; trapped=""
stop() {
    trapped=1
    [ -n "$stopping" ] && return
    stopping=1; log "power button: stopping"; kill -TERM -1 2>/dev/null
}
trap stop TERM USR2

log "starting entrypoint"
eval "$cmd" < /dev/null &
child=$!
# wait returns early when a trapped signal arrives (the trap then runs): wait again.
while :; do
    wait "$child"; status=$?
    [ -n "$trapped" ] || break
    trapped=""
done
log "entrypoint exited with status $status"
halt_now
"""
