"""ext4 file encryption (fscrypt, policy v2) through the kernel's own ioctls.

A directory on an ext4 made with `mkfs.ext4 -O encrypt` (`filesystem.mkfs_ext4(...,
encrypt=True)`) gets a v2 policy: file contents in AES-256-XTS, names in AES-256-CTS
padded to 32 bytes, every file under a key the kernel derives (HKDF-SHA512) from one
master key and the file's random nonce. The master key lives only in the filesystem's
keyring in the kernel: `add_key` puts it there, `remove_key` (or unmounting, or a
reboot) takes it away, and then every file below the directory answers "Required key
not available" and its names are listed as ciphertext.

Keys are `KEY_SIZE` = 32 random bytes. A v2 master key needs only the security
strength of its modes (AES-256: 256 bits); the kernel stretches it per file, so 64
bytes (what v1 policies needed for AES-256-XTS) would add length, not strength. 32 bytes
is also the size of every other secret here (X25519, secretbox), so a client makes and
seals a data key like the rest. The kernel itself accepts 16 to 64 bytes and only
refuses a too-short key when a file is opened; `add_key` refuses anything but 32 up
front. Functions take a key as `bytes` or as a `bytearray` the caller zeroes after use;
this module wipes its own ctypes copy once the kernel has it.

The filesystem's root cannot be encrypted (ext4 keeps `lost+found` there, in clear):
encrypt an empty directory under it, e.g. `<mount>/data`, and give a workload only that
directory (bind it, or put an overlay's upper *and* work directories in it: overlayfs
writes copy-ups into `work` first).

What someone holding the disk (the farmer) still sees, because fscrypt encrypts only
file contents, names and symlink targets:
- the image's size and how much of it is allocated, so roughly how much was written;
- per inode: its number, type, size (in blocks; exact for regular files), mode, owner,
  link count, and timestamps (created, modified, changed, accessed);
- how many files and directories there are and the tree's shape (which inode is in
  which directory), and each name's length rounded up to 32 bytes;
- extended attributes (names and values are not encrypted), and the policy itself:
  its modes and the 16-byte key identifier, which names the key without revealing it.

A key removed while files are open or mapped (a running container, an overlay still
mounted) is only partly removed: the kernel wipes the secret but keeps the open files
readable until they are closed (`Removal.files_busy`, status `INCOMPLETELY_REMOVED`).
Unmount what uses the directory first, as a reboot would; unmounting the filesystem
itself drops its keyring with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
IDENTIFIER_SIZE = 16

POLICY_V2 = 2
MODE_AES_256_XTS = 1
MODE_AES_256_CTS = 4
FLAGS_PAD_32 = 0x03  # pad names to 32 bytes: their lengths leak less

_KEY_SPEC_TYPE_IDENTIFIER = 2
_REMOVAL_FILES_BUSY = 0x1
_REMOVAL_OTHER_USERS = 0x2


class _KeySpecifier(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("identifier", ctypes.c_uint8 * 32),  # a union; v2 uses its first 16 bytes
    )


class _PolicyV2(ctypes.Structure):
    _fields_ = (
        ("version", ctypes.c_uint8),
        ("contents_mode", ctypes.c_uint8),
        ("filenames_mode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 4),
        ("identifier", ctypes.c_uint8 * IDENTIFIER_SIZE),
    )


class _GetPolicyExArg(ctypes.Structure):
    _fields_ = (("policy_size", ctypes.c_uint64), ("policy", _PolicyV2))


class _AddKeyArg(ctypes.Structure):
    _fields_ = (
        ("key_spec", _KeySpecifier),
        ("raw_size", ctypes.c_uint32),
        ("key_id", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 8),
        ("raw", ctypes.c_uint8 * KEY_SIZE),  # the kernel reads raw_size bytes here
    )


class _RemoveKeyArg(ctypes.Structure):
    _fields_ = (
        ("key_spec", _KeySpecifier),
        ("removal_status_flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 5),
    )


class _KeyStatusArg(ctypes.Structure):
    _fields_ = (
        ("key_spec", _KeySpecifier),
        ("reserved", ctypes.c_uint32 * 6),
        ("status", ctypes.c_uint32),
        ("status_flags", ctypes.c_uint32),
        ("user_count", ctypes.c_uint32),
        ("out_reserved", ctypes.c_uint32 * 13),
    )


def _ioc(direction: int, nr: int, size: int) -> int:
    # <linux/ioctl.h>: dir(2 bits) | size(14) | type(8) | nr(8); type 'f' for fscrypt
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


_W, _R = 1, 2
# The sizes are the ones in <linux/fscrypt.h>'s definitions, which are part of the numbers.
_SET_POLICY = _ioc(_R, 19, 12)  # declared with the v1 struct; the version byte decides
_GET_POLICY_EX = _ioc(_R | _W, 22, 9)
_ADD_KEY = _ioc(_R | _W, 23, _AddKeyArg.raw.offset)  # the header, without raw[]
_REMOVE_KEY = _ioc(_R | _W, 24, ctypes.sizeof(_RemoveKeyArg))
_REMOVE_KEY_ALL_USERS = _ioc(_R | _W, 25, ctypes.sizeof(_RemoveKeyArg))
_GET_KEY_STATUS = _ioc(_R | _W, 26, ctypes.sizeof(_KeyStatusArg))
# What only the node may do with keys (a container's seccomp profile refuses them).
KEY_IOCTLS = (_ADD_KEY, _REMOVE_KEY, _REMOVE_KEY_ALL_USERS)


class FscryptError(Exception):
    """A refused fscrypt operation; the message names the path and the rule."""


class InvalidKey(FscryptError, ValueError):
    """A key or key identifier of the wrong type or length."""


class WrongKey(FscryptError):
    """The key is not the one the directory's policy names."""


class KeyNotAdded(FscryptError):
    """No key with this identifier is in the filesystem's keyring."""


class NotSupported(FscryptError):
    """The filesystem cannot encrypt (not ext4, or ext4 without the encrypt feature)."""


class DirectoryRefused(FscryptError):
    """The directory cannot take this policy (root, not empty, encrypted otherwise...)."""


class KeyStatus(enum.IntEnum):
    ABSENT = 1
    PRESENT = 2
    INCOMPLETELY_REMOVED = 3  # secret wiped, files still open keep it alive


@dataclass(frozen=True)
class Policy:
    """A directory's encryption policy, as the kernel reports it."""

    version: int
    contents_mode: int
    filenames_mode: int
    flags: int
    identifier: bytes  # for v1 policies: the 8-byte descriptor


@dataclass(frozen=True)
class Removal:
    """What FS_IOC_REMOVE_ENCRYPTION_KEY reported."""

    files_busy: bool  # files still in use keep the key alive: status INCOMPLETELY_REMOVED
    other_users: bool  # only this user's claim went; the key stays for the others


def key_identifier(key: bytes) -> bytes:
    """The kernel's identifier for a v2 master key: HKDF-SHA512(key, "fscrypt\\0" + 0x01).

    Lets a key be checked against a directory's policy before it reaches the kernel.
    """
    _check_key(key)
    hkdf = HKDF(algorithm=hashes.SHA512(), length=IDENTIFIER_SIZE, salt=None, info=b"fscrypt\0\1")
    return hkdf.derive(key)


def add_key(path: Path, key: bytes) -> bytes:
    """Add `key` to the keyring of the filesystem `path` is on; return its identifier.

    Adding a key already there is harmless (the kernel counts this user's claim once).
    """
    _check_key(key)
    arg = _AddKeyArg(raw_size=len(key))
    arg.key_spec.type = _KEY_SPEC_TYPE_IDENTIFIER
    arg.raw[:] = key
    try:
        with _open(path) as fd:
            _ioctl(fd, _ADD_KEY, arg, path, "add key")
        return bytes(arg.key_spec.identifier[:IDENTIFIER_SIZE])
    finally:
        ctypes.memset(ctypes.addressof(arg), 0, ctypes.sizeof(arg))


@dataclass(frozen=True)
class KeyringKey:
    """A key the kernel holds in a keyring (`zos.primitives.keyring`), named by its serial,
    with the identifier it must have: this process never sees the key itself."""

    serial: int
    identifier: bytes


def add_keyring_key(path: Path, key: KeyringKey) -> bytes:
    """Add the keyring key `key.serial` to the keyring of the filesystem `path` is on.

    The kernel copies it from the keyring; a key whose identifier is not
    `key.identifier` is removed again and refused (WrongKey).
    """
    _check_identifier(key.identifier)
    arg = _AddKeyArg(raw_size=0, key_id=key.serial)
    arg.key_spec.type = _KEY_SPEC_TYPE_IDENTIFIER
    with _open(path) as fd:
        _ioctl(fd, _ADD_KEY, arg, path, "add key")
    identifier = bytes(arg.key_spec.identifier[:IDENTIFIER_SIZE])
    if identifier != key.identifier:
        # Not the key its holder meant: it has no business on this filesystem.
        with contextlib.suppress(FscryptError):
            remove_key(path, identifier)
        raise WrongKey(
            f"{path}: keyring key {key.serial} has identifier {identifier.hex()}, "
            f"not {key.identifier.hex()}"
        )
    return identifier


def remove_key(path: Path, identifier: bytes, *, all_users: bool = True) -> Removal:
    """Remove the key `identifier` from the keyring of the filesystem `path` is on.

    `all_users` (needs CAP_SYS_ADMIN) removes every user's claim, as a reboot would;
    otherwise only this user's. Raises KeyNotAdded when the key is not there.
    """
    arg = _RemoveKeyArg(key_spec=_spec(identifier))
    with _open(path) as fd:
        _ioctl(fd, _REMOVE_KEY_ALL_USERS if all_users else _REMOVE_KEY, arg, path, "remove key")
    flags = arg.removal_status_flags
    return Removal(
        files_busy=bool(flags & _REMOVAL_FILES_BUSY),
        other_users=bool(flags & _REMOVAL_OTHER_USERS),
    )


def key_status(path: Path, identifier: bytes) -> KeyStatus:
    """Whether key `identifier` is in the keyring of the filesystem `path` is on."""
    arg = _KeyStatusArg(key_spec=_spec(identifier))
    with _open(path) as fd:
        _ioctl(fd, _GET_KEY_STATUS, arg, path, "key status")
    return KeyStatus(arg.status)


def get_policy(directory: Path) -> Policy | None:
    """The encryption policy of `directory` (or file), None when it is not encrypted.

    A directory on a filesystem that cannot encrypt is not encrypted: None too.
    """
    arg = _GetPolicyExArg(policy_size=ctypes.sizeof(_PolicyV2))
    with _open(directory) as fd:
        try:
            _ioctl(fd, _GET_POLICY_EX, arg, directory, "get policy")
        except (_NoData, NotSupported):
            return None
    p = arg.policy
    raw = bytes(p.identifier) if p.version == POLICY_V2 else bytes(p)[4:12]
    return Policy(p.version, p.contents_mode, p.filenames_mode, p.flags, raw)


def set_policy(directory: Path, identifier: bytes) -> None:
    """Encrypt the empty `directory` (not a filesystem root) under key `identifier`.

    The key must be in the filesystem's keyring (root could set a policy for an absent
    key; nothing could then be written there). Setting the policy a directory already
    has is a no-op; a directory encrypted under another key is refused.
    """
    arg = _PolicyV2(
        version=POLICY_V2,
        contents_mode=MODE_AES_256_XTS,
        filenames_mode=MODE_AES_256_CTS,
        flags=FLAGS_PAD_32,
    )
    arg.identifier[:] = _check_identifier(identifier)
    with _open(directory) as fd:
        _check_encryptable(directory, identifier)
        if key_status(directory, identifier) != KeyStatus.PRESENT:
            raise KeyNotAdded(f"{directory}: key {identifier.hex()} is not on this filesystem")
        _ioctl(fd, _SET_POLICY, arg, directory, "set policy")


def encrypt_directory(directory: Path, key: bytes) -> bytes:
    """Add `key` and encrypt the empty `directory` with it; return the key identifier.

    A refused directory is refused before the key reaches the kernel; should the kernel
    still refuse the policy, the key is removed again if this call added it.
    """
    return _encrypt(directory, key_identifier(key), lambda: add_key(directory, key))


def encrypt_directory_with(directory: Path, key: KeyringKey) -> bytes:
    """`encrypt_directory` with a key the kernel holds in a keyring."""
    return _encrypt(directory, key.identifier, lambda: add_keyring_key(directory, key))


def _encrypt(directory: Path, identifier: bytes, add: Callable[[], bytes]) -> bytes:
    _check_encryptable(directory, identifier)
    had_key = key_status(directory, identifier) != KeyStatus.ABSENT
    add()
    try:
        set_policy(directory, identifier)
    except BaseException:
        if not had_key:
            with contextlib.suppress(FscryptError):
                remove_key(directory, identifier)
        raise
    return identifier


def unlock(directory: Path, key: bytes) -> bytes:
    """Give the kernel `key` for the encrypted `directory`; return its identifier.

    A key that is not the one the directory's policy names is refused before it reaches
    the kernel (WrongKey), so a wrong key changes nothing.
    """
    _check_policy_names(directory, key_identifier(key))
    return add_key(directory, key)


def unlock_with(directory: Path, key: KeyringKey) -> bytes:
    """`unlock` with a key the kernel holds in a keyring."""
    _check_policy_names(directory, key.identifier)
    return add_keyring_key(directory, key)


def _check_policy_names(directory: Path, identifier: bytes) -> None:
    policy = get_policy(directory)
    if policy is None:
        raise DirectoryRefused(f"{directory}: not encrypted")
    if policy.identifier != identifier:
        raise WrongKey(
            f"{directory}: the key's identifier {identifier.hex()} is not the policy's "
            f"({policy.identifier.hex()})"
        )


# -- plumbing -----------------------------------------------------------------------------


class _NoData(Exception):
    pass


def _check_encryptable(directory: Path, identifier: bytes) -> None:
    # The kernel's rules (it checks them again), so that a refusal changes nothing.
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise DirectoryRefused(f"{directory}: not a directory")
    if os.path.ismount(directory):
        raise DirectoryRefused(
            f"{directory}: a filesystem's root cannot be encrypted (ext4 keeps lost+found "
            "there in clear); encrypt an empty directory under it"
        )
    policy = get_policy(directory)
    if policy is not None:
        wanted = Policy(POLICY_V2, MODE_AES_256_XTS, MODE_AES_256_CTS, FLAGS_PAD_32, identifier)
        if policy != wanted:
            raise DirectoryRefused(f"{directory}: already encrypted under another key or policy")
        return
    with os.scandir(directory) as entries:
        if next(entries, None) is not None:
            raise DirectoryRefused(f"{directory}: only an empty directory can be encrypted")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise InvalidKey(f"key: bytes expected, not {type(key).__name__}")
    if len(key) != KEY_SIZE:
        raise InvalidKey(f"key: {KEY_SIZE} bytes expected, got {len(key)}")


def _check_identifier(identifier: bytes) -> bytes:
    if not isinstance(identifier, bytes) or len(identifier) != IDENTIFIER_SIZE:
        raise InvalidKey(f"key identifier: {IDENTIFIER_SIZE} bytes expected")
    return identifier


def _spec(identifier: bytes) -> _KeySpecifier:
    spec = _KeySpecifier(type=_KEY_SPEC_TYPE_IDENTIFIER)
    spec.identifier[:IDENTIFIER_SIZE] = _check_identifier(identifier)
    return spec


@contextlib.contextmanager
def _open(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise FscryptError(f"{path}: {e.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _ioctl(fd: int, request: int, arg: ctypes.Structure, path: Path, what: str) -> None:
    # libc's ioctl with the struct's address, not fcntl.ioctl: that copies a small buffer
    # (the key with it) to a scratch area of its own and leaves it there.
    if _libc.ioctl(fd, request, ctypes.addressof(arg)) != 0:
        raise _translate(ctypes.get_errno(), path, what)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


def _translate(code: int | None, path: Path, what: str) -> Exception:
    if code == errno.ENODATA and what == "get policy":
        return _NoData()
    if code in (errno.ENOTTY, errno.EOPNOTSUPP):
        return NotSupported(
            f"{path}: {what}: the filesystem cannot encrypt (fscrypt needs ext4 made with "
            "mkfs.ext4 -O encrypt)"
        )
    if code == errno.ENOKEY:
        return KeyNotAdded(f"{path}: {what}: no such key on this filesystem")
    if code == errno.ENOTEMPTY:
        return DirectoryRefused(f"{path}: only an empty directory can be encrypted")
    if code == errno.EEXIST:
        return DirectoryRefused(f"{path}: already encrypted under another key or policy")
    if code == errno.ENOTDIR:
        return DirectoryRefused(f"{path}: not a directory")
    if code == errno.EPERM:
        return DirectoryRefused(f"{path}: {what}: not permitted (root directory, or immutable)")
    return FscryptError(f"{path}: {what}: {os.strerror(code or 0)}")
