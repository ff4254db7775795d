"""Named network namespaces (the `ip netns` kind, bind-mounted under /var/run/netns).

Netlink work inside a namespace goes through `zos.primitives.links`; this module
creates and deletes the namespaces, runs Python code or a program inside one, and sets
its sysctls.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroute2 import netns as _netns

from zos.primitives.command import CommandError

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
# What `ip netns` accepts as a name, minus the odd characters we never generate.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    pass


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")
    return name


def path(name: str) -> Path:
    return NETNS_DIR / check_name(name)


def exists(name: str) -> bool:
    return path(name).exists() and os.path.ismount(path(name))


def create(name: str) -> None:
    """Create the namespace; a no-op if it exists already."""
    if exists(name):
        return
    p = path(name)
    if p.exists():
        # A file left by a crash between creating and mounting: start over.
        p.unlink()
    _netns.create(name)


def delete(name: str) -> None:
    """Delete the namespace; a no-op if it is gone. Links inside it go with it."""
    p = path(name)
    if not p.exists():
        return
    try:
        _netns.remove(name)
    except OSError:
        if os.path.ismount(p):
            raise
        p.unlink(missing_ok=True)


def names(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has joined the namespace (setns is per thread).

    The thread ends afterwards, so no pooled thread is ever left in a foreign namespace.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, name)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace `name`, then return to where it was.

    For short blocking work on a worker thread (cheaper than a thread per call); the
    thread goes back even when the block fails.
    """
    target = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, name)
        try:
            yield
        finally:
            _setns(saved, "the thread's own namespace")
    finally:
        os.close(target)
        os.close(saved)


def set_sysctl(name: str | None, key: str, value: str) -> None:
    """Write a net sysctl (e.g. `net/ipv4/ip_forward`) as seen from namespace `name`."""
    target = Path("/proc/sys") / key

    def write() -> None:
        if target.exists():
            target.write_text(value)

    if name is None:
        write()
    else:
        run_in(name, write)


def argv_in(name: str | None, argv: list[str]) -> list[str]:
    """The command line that runs `argv` in namespace `name` (None: as it is). nsenter
    joins the namespace and execs the program, so the pid is the program's."""
    return ["nsenter", f"--net={path(name)}", "--", *argv] if name else list(argv)


async def exec_in(name: str | None, *argv: str, input: bytes | None = None) -> str:
    """Run a program in namespace `name` (None: the agent's own); return its stdout."""
    full = argv_in(name, list(argv))
    proc = await asyncio.create_subprocess_exec(
        *full,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(input)
    if proc.returncode != 0:
        raise CommandError(list(argv), proc.returncode or 1, err.decode(errors="replace"))
    return out.decode(errors="replace")
