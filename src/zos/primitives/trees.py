"""Directory trees of any depth, walked without recursion.

A tree a tenant controls (an flist's prepared tree, a container's writable layer) may
be thousands of directories deep: deeper than Python's recursion limit (`shutil.rmtree`
and, before 3.12, `os.walk` recurse) and than PATH_MAX (so paths from the root cannot be
used either). `remove_tree` goes down one directory fd at a time and comes back up
through "..", keeping only the names on the way, so depth costs neither stack nor fds.
It never follows a symlink and never enters another file system: a mount left inside a
tree is an error (or, with `ignore_errors`, left alone), never emptied.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | Path, *, ignore_errors: bool = False) -> None:
    """Remove `path` (a directory tree, a file or a symlink); a no-op if it is gone.

    With `ignore_errors`, whatever cannot be removed is left and the rest goes.
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        _empty(path, st.st_dev, ignore_errors)
        os.rmdir(path)
    except FileNotFoundError:
        return
    except OSError:
        if not ignore_errors:
            raise


def clear_directory(target: str | Path) -> None:
    """Remove everything under `target`, keep `target`."""
    st = os.lstat(target)
    _empty(os.fspath(target), st.st_dev, ignore_errors=False)


def _empty(path: str, device: int, ignore_errors: bool) -> None:
    fd = _open_dir(path, None)
    names: list[str] = []  # from `path` down to the directory `fd` is
    kept: list[set[str]] = [set()]  # per level: names left in place (ignore_errors)
    try:
        while True:
            child = _unlink_files(fd, kept[-1], ignore_errors)
            if child is not None:
                try:
                    sub = _open_dir(child, fd)
                    if os.fstat(sub).st_dev != device:
                        os.close(sub)
                        raise OSError(errno.EBUSY, f"{child!r} is a mount point inside the tree")
                except OSError:
                    if not ignore_errors:
                        raise
                    kept[-1].add(child)
                    continue
                os.close(fd)
                fd = sub
                names.append(child)
                kept.append(set())
                continue
            if not names:
                return
            # Back up one level and remove the directory just emptied.
            name = names.pop()
            kept.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError:
                if not ignore_errors:
                    raise
                kept[-1].add(name)
    finally:
        os.close(fd)


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:  # a directory without r or x (not root): make it ours to empty
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _unlink_files(fd: int, kept: set[str], ignore_errors: bool) -> str | None:
    """Unlink every non-directory in `fd`; the name of a subdirectory to go into, if any."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.name in kept:
                continue
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            try:
                _unlink(entry.name, fd)
            except FileNotFoundError:
                continue
            except OSError:
                if not ignore_errors:
                    raise
                kept.add(entry.name)
    return None


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except PermissionError:  # in a read-only directory (not root)
        os.fchmod(dir_fd, 0o700)
        os.unlink(name, dir_fd=dir_fd)


def allocated_bytes(directory: str | Path) -> int:
    """Bytes the files under `directory` occupy on its file system (mounts inside it are
    not entered: a volume's content is its own), walked without recursion."""
    try:
        device = os.lstat(directory).st_dev
    except FileNotFoundError:
        return 0
    total, stack = 0, [os.fspath(directory)]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_dev != device:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    else:
                        total += st.st_blocks * 512
    return total


def open_inside(root: str | Path, relative: str) -> int:
    """A read-only fd of the regular file `relative` under `root`, reached without
    following any symlink (a tenant's tree may point a name at the host's files); an
    OSError (ELOOP, ENOTDIR, ENOENT, EINVAL for a non-regular file) otherwise."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise OSError(errno.EINVAL, f"invalid path {relative!r}")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        out = os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise OSError(errno.EINVAL, f"{relative} is not a regular file")
    return out
