"""fscrypt-provisioning keys in the kernel's keyring: held there alone, used by serial."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fscrypt import count, files_under, make_volume

from zos.primitives import filesystem, fscrypt, keyring

_KEYCTL_READ = 11


@pytest.fixture
def description() -> Iterator[str]:
    desc = f"zos:test-{os.getpid()}-{secrets.token_hex(4)}"
    yield desc
    keyring.forget(desc)


@pytest.mark.root
def test_a_key_is_found_by_description_and_never_read_back(description: str) -> None:
    key = secrets.token_bytes(32)
    serial = keyring.add(description, key)
    assert keyring.find(description) == serial
    assert description in keyring.descriptions("zos:test-")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)
    got = libc.syscall(250, _KEYCTL_READ, ctypes.c_long(serial), buf, 256)
    assert got == -1 and ctypes.get_errno() == errno.EOPNOTSUPP  # the type has no read
    assert key not in buf.raw
    assert keyring.forget(description) is True
    assert keyring.find(description) is None
    assert keyring.forget(description) is False


@pytest.mark.root
@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_of_another_length_is_refused(description: str, size: int) -> None:
    with pytest.raises(keyring.KeyringError, match="32 bytes expected"):
        keyring.add(description, secrets.token_bytes(size))
    assert keyring.find(description) is None


@pytest.mark.root
async def test_a_directory_encrypted_and_unlocked_by_serial(
    workdir: Path, description: str
) -> None:
    vol = await make_volume(workdir, "vol")
    key = secrets.token_bytes(32)
    held = fscrypt.KeyringKey(keyring.add(description, key), fscrypt.key_identifier(key))
    assert fscrypt.encrypt_directory_with(vol.data, held) == held.identifier
    (vol.data / "marker").write_bytes(b"marker-" + description.encode())
    os.sync()
    fscrypt.remove_key(vol.mount, held.identifier)
    await filesystem.umount(vol.mount)
    assert count(vol.image, b"marker-" + description.encode()) == 0
    await filesystem.mount_image(vol.image, vol.mount)

    other = secrets.token_bytes(32)
    wrong = fscrypt.KeyringKey(keyring.add(description + "-other", other), held.identifier)
    try:
        with pytest.raises(fscrypt.WrongKey):
            fscrypt.unlock_with(vol.data, wrong)  # a serial whose key is not the policy's
        assert fscrypt.key_status(vol.mount, fscrypt.key_identifier(other)) == (
            fscrypt.KeyStatus.ABSENT
        )
    finally:
        keyring.forget(description + "-other")
    assert fscrypt.unlock_with(vol.data, held) == held.identifier
    assert (vol.data / "marker").read_bytes() == b"marker-" + description.encode()
    assert all(count(f, key) == 0 for f in files_under(workdir))
