"""Data keys held by the kernel alone: `fscrypt-provisioning` keys in root's user keyring.

A node must be able to encrypt a deployment's next filesystem (a volume added by an
update, a machine's root layer) long after its owner handed the key over, and after an
agent restart, without keeping the key itself. The kernel's key retention service has
a key type for exactly this: an `fscrypt-provisioning` key cannot be read back by any
process (the type has no read operation); `FS_IOC_ADD_ENCRYPTION_KEY` takes its serial
instead of the raw key (`fscrypt.add_key_from_keyring`). It lives in root's user keyring,
which outlives the agent and not the machine: a reboot empties it, as it empties every
filesystem's keyring.

The key's description names its owner (`zos:<node>:<contract>`), so several nodes on one
machine (tests) keep apart. Keys are made with the possessor's rights and the owning
user's view and search (a later agent process of the same user finds and uses them).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

KEY_TYPE = b"fscrypt-provisioning"
USER_KEYRING = -4  # KEY_SPEC_USER_KEYRING
_FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER = 2

_KEYCTL_SETPERM = 5
_KEYCTL_UNLINK = 9
_KEYCTL_SEARCH = 10
_KEYCTL_INVALIDATE = 21
# possessor: everything; owning user: view and search (no read: the type has none anyway)
_PERM = 0x3F000000 | 0x00090000

_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219)}  # add_key, keyctl


class KeyringError(Exception):
    """The kernel refused a keyring operation; the message names it."""


def _numbers() -> tuple[int, int]:
    try:
        return _SYSCALLS[platform.machine()]
    except KeyError:
        raise KeyringError(f"keyring: no syscall numbers for {platform.machine()}") from None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Payload(ctypes.Structure):
    # struct fscrypt_provisioning_key_payload { __u32 type; __u32 __reserved; __u8 raw[]; }
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("raw", ctypes.c_uint8 * 32),
    )


def _fail(what: str) -> KeyringError:
    code = ctypes.get_errno()
    return KeyringError(f"keyring: {what}: {os.strerror(code)}")


def add(description: str, key: bytes) -> int:
    """Put `key` (32 bytes) into the user keyring as `description`; its serial.

    A key already there under that description is replaced (the kernel's add_key rule).
    """
    if not isinstance(key, bytes | bytearray) or len(key) != 32:
        raise KeyringError("keyring: key: 32 bytes expected")
    add_key, keyctl = _numbers()
    payload = _Payload(type=_FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER)
    payload.raw[:] = key
    try:
        serial = _libc.syscall(
            ctypes.c_long(add_key),
            ctypes.c_char_p(KEY_TYPE),
            ctypes.c_char_p(description.encode()),
            ctypes.c_void_p(ctypes.addressof(payload)),
            ctypes.c_size_t(ctypes.sizeof(payload)),
            ctypes.c_int(USER_KEYRING),
        )
    finally:
        ctypes.memset(ctypes.addressof(payload), 0, ctypes.sizeof(payload))
    if serial < 0:
        raise _fail(f"add {description}")
    if _libc.syscall(ctypes.c_long(keyctl), _KEYCTL_SETPERM, ctypes.c_long(serial), _PERM) < 0:
        error = _fail(f"set the rights of {description}")
        invalidate(int(serial))
        raise error
    return int(serial)


def find(description: str) -> int | None:
    """The serial of the key `description` in the user keyring, None when there is none."""
    _, keyctl = _numbers()
    serial = _libc.syscall(
        ctypes.c_long(keyctl),
        _KEYCTL_SEARCH,
        ctypes.c_int(USER_KEYRING),
        ctypes.c_char_p(KEY_TYPE),
        ctypes.c_char_p(description.encode()),
        0,
    )
    if serial < 0:
        if ctypes.get_errno() in (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED):
            return None
        raise _fail(f"search {description}")
    return int(serial)


def invalidate(serial: int) -> None:
    """Destroy key `serial` at once (what a reboot does to every key); gone already: fine."""
    _, keyctl = _numbers()
    failed = _libc.syscall(ctypes.c_long(keyctl), _KEYCTL_INVALIDATE, ctypes.c_long(serial)) < 0
    if failed and ctypes.get_errno() not in (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED):
        raise _fail(f"invalidate key {serial}")


def forget(description: str) -> bool:
    """Invalidate the key `description` if it is there; whether it was."""
    serial = find(description)
    if serial is None:
        return False
    invalidate(serial)
    return True


def descriptions(prefix: str) -> list[str]:
    """Descriptions of this user's provisioning keys starting with `prefix` (/proc/keys)."""
    found = []
    with open("/proc/keys") as f:
        for line in f:
            fields = line.split(None, 8)
            # /proc/keys cuts type names at 9 characters; an invalidated (i), revoked (R)
            # or dead (D) key stays listed until the kernel's collector runs
            if len(fields) != 9 or set(fields[1]) & set("iRD"):
                continue
            if fields[7] == KEY_TYPE.decode()[:9]:
                desc = fields[8].split(": ", 1)[0].strip()  # "<description>: <size> [<type>]"
                if desc.startswith(prefix):
                    found.append(desc)
    return found
