"""ext4 fscrypt on real loop-mounted images: lock, unlock, what reaches the disk, refusals."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from zos.primitives import filesystem, fscrypt, overlay
from zos.primitives.fscrypt import KeyStatus

MiB = 1024 * 1024


@dataclass
class Volume:
    image: Path
    mount: Path

    @property
    def data(self) -> Path:
        # the root cannot be encrypted: the encrypted tree is one directory below it
        return self.mount / "data"


async def make_volume(workdir: Path, name: str, *, encrypt: bool = True) -> Volume:
    vol = Volume(workdir / f"{name}.img", workdir / name)
    filesystem.create_sparse(vol.image, 64 * MiB)
    await filesystem.mkfs_ext4(vol.image, encrypt=encrypt)
    await filesystem.mount_image(vol.image, vol.mount)
    vol.data.mkdir()
    return vol


async def encrypted_volume(workdir: Path, name: str) -> tuple[Volume, bytes, bytes]:
    """A volume whose `data` is encrypted under a new key: (volume, key, identifier)."""
    vol = await make_volume(workdir, name)
    key = secrets.token_bytes(fscrypt.KEY_SIZE)
    return vol, key, fscrypt.encrypt_directory(vol.data, key)


async def reboot(vol: Volume, identifier: bytes) -> None:
    """What a reboot does to the kernel's keys: gone, and the filesystem unmounted."""
    removal = fscrypt.remove_key(vol.mount, identifier)
    assert removal == fscrypt.Removal(files_busy=False, other_users=False)
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.ABSENT
    await filesystem.umount(vol.mount)


def count(path: Path, needle: bytes) -> int:
    """Occurrences of `needle` in the raw bytes of `path` (chunks overlap by its length)."""
    found, tail = 0, b""
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            window = tail + chunk
            found += window.count(needle)
            tail = window[-(len(needle) - 1) :]
    return found


def files_under(root: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names]


@dataclass
class Markers:
    """A known marker written as file contents, file and directory names and a link target."""

    token: str

    @property
    def contents(self) -> bytes:
        return f"contents-{self.token}".encode()

    @property
    def big(self) -> bytes:
        return self.contents * (64 * 1024 // len(self.contents))

    @property
    def names(self) -> list[bytes]:
        return [f"{kind}-{self.token}".encode() for kind in ("file", "dir", "link", "target")]

    def write(self, directory: Path) -> None:
        (directory / f"file-{self.token}").write_bytes(self.big)
        (directory / f"dir-{self.token}").mkdir()
        (directory / f"dir-{self.token}" / "small").write_bytes(self.contents)
        os.symlink(f"target-{self.token}", directory / f"link-{self.token}")
        os.sync()

    def check(self, directory: Path) -> None:
        assert (directory / f"file-{self.token}").read_bytes() == self.big
        assert (directory / f"dir-{self.token}" / "small").read_bytes() == self.contents
        assert os.readlink(directory / f"link-{self.token}") == f"target-{self.token}"

    def found_in(self, path: Path) -> list[bytes]:
        return [n for n in (self.contents, *self.names) if count(path, n)]


@pytest.mark.root
async def test_plain_image_shows_the_markers(workdir: Path) -> None:
    """The control for the scans below: without encryption every marker is on the disk."""
    vol = await make_volume(workdir, "plain", encrypt=False)
    markers = Markers(secrets.token_hex(12))
    markers.write(vol.data)
    await filesystem.umount(vol.mount)
    assert markers.found_in(vol.image) == [markers.contents, *markers.names]


@pytest.mark.root
async def test_volume_locked_by_reboot_keeps_marker_and_key_off_the_disk(workdir: Path) -> None:
    vol = await make_volume(workdir, "vol")
    key = secrets.token_bytes(fscrypt.KEY_SIZE)
    identifier = fscrypt.encrypt_directory(vol.data, key)
    assert identifier == fscrypt.key_identifier(key)
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.PRESENT
    assert fscrypt.get_policy(vol.data) == fscrypt.Policy(
        version=2,
        contents_mode=fscrypt.MODE_AES_256_XTS,
        filenames_mode=fscrypt.MODE_AES_256_CTS,
        flags=fscrypt.FLAGS_PAD_32,
        identifier=identifier,
    )
    markers = Markers(secrets.token_hex(12))
    markers.write(vol.data)
    digest = hashlib.sha256((vol.data / f"file-{markers.token}").read_bytes()).hexdigest()

    # the key removed (not yet unmounted): contents refused, names shown as ciphertext
    assert fscrypt.remove_key(vol.mount, identifier).files_busy is False
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.ABSENT
    listed = os.listdir(vol.data)
    assert len(listed) == 3 and not any(markers.token in name for name in listed)
    locked_file = next(vol.data / n for n in listed if (vol.data / n).is_file())
    with pytest.raises(OSError) as refused:
        locked_file.read_bytes()
    assert refused.value.errno == errno.ENOKEY
    assert refused.value.strerror == "Required key not available"
    with pytest.raises(OSError) as refused:
        (vol.data / "new").write_bytes(b"x")
    assert refused.value.errno == errno.ENOKEY
    # what a farmer still sees: the size of the file
    assert locked_file.stat().st_size == len(markers.big)

    await filesystem.umount(vol.mount)
    assert markers.found_in(vol.image) == []
    assert all(count(f, key) == 0 for f in files_under(workdir))

    # after the "reboot" the kernel has no key until it is given again
    await filesystem.mount_image(vol.image, vol.mount)
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.ABSENT
    assert fscrypt.unlock(vol.data, key) == identifier
    markers.check(vol.data)
    assert hashlib.sha256((vol.data / f"file-{markers.token}").read_bytes()).hexdigest() == digest
    (vol.data / "after-unlock").write_bytes(b"writable again")
    await reboot(vol, identifier)
    assert all(count(f, key) == 0 for f in files_under(workdir))


@pytest.mark.root
async def test_overlay_upper_on_encrypted_layer(workdir: Path) -> None:
    """A container's writable layer: upper and work both inside the encrypted directory."""
    lower = workdir / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "motd").write_text("from the image\n")
    layer, key, identifier = await encrypted_volume(workdir, "layer")
    rootfs = workdir / "rootfs"
    upper, work = layer.data / "upper", layer.data / "work"

    await overlay.mount_overlay(lower, upper, work, rootfs)
    markers = Markers(secrets.token_hex(12))
    markers.write(rootfs)
    with (rootfs / "etc" / "motd").open("a") as f:  # a copy-up, through `work`
        f.write(f"appended-{markers.token}\n")
    assert fscrypt.get_policy(upper / f"file-{markers.token}") is not None
    await overlay.unmount(rootfs)
    await reboot(layer, identifier)

    assert markers.found_in(layer.image) == []
    assert count(layer.image, f"appended-{markers.token}".encode()) == 0
    assert all(count(f, key) == 0 for f in files_under(workdir))

    await filesystem.mount_image(layer.image, layer.mount)
    with pytest.raises(OSError) as locked:  # a locked layer cannot become a root file system
        await overlay.mount_overlay(lower, upper, work, rootfs)
    assert locked.value.errno == errno.ENOKEY
    assert not overlay.is_mounted(rootfs)
    fscrypt.unlock(layer.data, key)
    await overlay.mount_overlay(lower, upper, work, rootfs)
    markers.check(rootfs)
    assert (rootfs / "etc" / "motd").read_text() == f"from the image\nappended-{markers.token}\n"
    assert (lower / "etc" / "motd").read_text() == "from the image\n"
    await overlay.unmount(rootfs)


@pytest.mark.root
async def test_open_files_keep_the_key_until_closed(workdir: Path) -> None:
    """Why the wiring unmounts what uses a directory before removing its key."""
    vol, _, identifier = await encrypted_volume(workdir, "busy")
    (vol.data / "open").write_bytes(b"still open")
    with (vol.data / "open").open("rb") as held:
        removal = fscrypt.remove_key(vol.mount, identifier)
        assert removal.files_busy
        assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.INCOMPLETELY_REMOVED
        assert held.read() == b"still open"
    # once nothing holds them, a second removal finishes the job
    assert not fscrypt.remove_key(vol.mount, identifier).files_busy
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.ABSENT


@pytest.mark.root
async def test_adding_a_key_twice_and_the_same_policy_twice_are_harmless(workdir: Path) -> None:
    vol, key, identifier = await encrypted_volume(workdir, "again")
    (vol.data / "f").write_bytes(b"kept")
    assert fscrypt.add_key(vol.mount, key) == identifier
    assert fscrypt.unlock(vol.data, bytearray(key)) == identifier  # a key the caller can wipe
    fscrypt.set_policy(vol.data, identifier)  # the policy it has: a no-op, not a refusal
    assert (vol.data / "f").read_bytes() == b"kept"
    await reboot(vol, identifier)


# -- hostile input: a clear error, and nothing changed -------------------------------------


def kernel_identifier(raw: bytes) -> bytes:
    """The identifier the kernel would give any raw key (it accepts 16 to 64 bytes)."""
    return HKDF(hashes.SHA512(), 16, salt=None, info=b"fscrypt\0\1").derive(raw)


@pytest.mark.root
@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
async def test_key_of_wrong_length_refused(workdir: Path, size: int) -> None:
    vol = await make_volume(workdir, "len")
    raw = secrets.token_bytes(size)
    for call in (
        lambda: fscrypt.add_key(vol.mount, raw),
        lambda: fscrypt.encrypt_directory(vol.data, raw),
        lambda: fscrypt.unlock(vol.data, raw),
        lambda: fscrypt.key_identifier(raw),
    ):
        with pytest.raises(fscrypt.InvalidKey, match=f"key: 32 bytes expected, got {size}"):
            call()
    assert fscrypt.get_policy(vol.data) is None
    if size >= 16:
        assert fscrypt.key_status(vol.mount, kernel_identifier(raw)) == KeyStatus.ABSENT
    with pytest.raises(fscrypt.InvalidKey, match="bytes expected, not str"):
        fscrypt.add_key(vol.mount, "a" * 32)  # type: ignore[arg-type]


@pytest.mark.root
async def test_policy_on_a_non_empty_directory_refused(workdir: Path) -> None:
    vol = await make_volume(workdir, "full")
    (vol.data / "existing").write_bytes(b"in clear, and stays readable")
    key = secrets.token_bytes(fscrypt.KEY_SIZE)
    with pytest.raises(fscrypt.DirectoryRefused, match="only an empty directory"):
        fscrypt.encrypt_directory(vol.data, key)
    assert fscrypt.get_policy(vol.data) is None
    assert fscrypt.key_status(vol.mount, fscrypt.key_identifier(key)) == KeyStatus.ABSENT
    assert (vol.data / "existing").read_bytes() == b"in clear, and stays readable"


@pytest.mark.root
async def test_policy_on_an_encrypted_directory_refused(workdir: Path) -> None:
    vol = await make_volume(workdir, "twice")
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    identifier = fscrypt.encrypt_directory(vol.data, first)
    (vol.data / "sub").mkdir()  # inherits the policy: refused the same way
    for directory in (vol.data, vol.data / "sub"):
        with pytest.raises(fscrypt.DirectoryRefused, match="already encrypted"):
            fscrypt.encrypt_directory(directory, second)
        policy = fscrypt.get_policy(directory)
        assert policy is not None and policy.identifier == identifier
    assert fscrypt.key_status(vol.mount, fscrypt.key_identifier(second)) == KeyStatus.ABSENT
    # a second key added by someone else beforehand stays when the policy is refused
    other = fscrypt.add_key(vol.mount, second)
    with pytest.raises(fscrypt.DirectoryRefused, match="already encrypted"):
        fscrypt.encrypt_directory(vol.data, second)
    assert fscrypt.key_status(vol.mount, other) == KeyStatus.PRESENT


@pytest.mark.root
async def test_root_and_files_cannot_be_encrypted(workdir: Path) -> None:
    vol = await make_volume(workdir, "root")
    key = secrets.token_bytes(32)
    with pytest.raises(fscrypt.DirectoryRefused, match="root cannot be encrypted"):
        fscrypt.encrypt_directory(vol.mount, key)
    (vol.mount / "file").write_bytes(b"")
    with pytest.raises(fscrypt.DirectoryRefused, match="not a directory"):
        fscrypt.encrypt_directory(vol.mount / "file", key)
    assert fscrypt.get_policy(vol.mount) is None
    assert fscrypt.key_status(vol.mount, fscrypt.key_identifier(key)) == KeyStatus.ABSENT


@pytest.mark.root
async def test_identifier_not_on_the_filesystem(workdir: Path) -> None:
    vol = await make_volume(workdir, "noid")
    unknown = secrets.token_bytes(fscrypt.IDENTIFIER_SIZE)
    assert fscrypt.key_status(vol.mount, unknown) == KeyStatus.ABSENT
    with pytest.raises(fscrypt.KeyNotAdded, match="no such key"):
        fscrypt.remove_key(vol.mount, unknown)
    with pytest.raises(fscrypt.KeyNotAdded, match=f"key {unknown.hex()} is not on this"):
        fscrypt.set_policy(vol.data, unknown)
    assert fscrypt.get_policy(vol.data) is None
    for bad in (unknown[:8], unknown + b"\0", unknown.hex()):
        with pytest.raises(fscrypt.InvalidKey, match="identifier: 16 bytes expected"):
            fscrypt.key_status(vol.mount, bad)  # type: ignore[arg-type]
    # a key on another filesystem is not on this one
    other = await make_volume(workdir, "other")
    key = secrets.token_bytes(32)
    fscrypt.add_key(other.mount, key)
    with pytest.raises(fscrypt.KeyNotAdded):
        fscrypt.set_policy(vol.data, fscrypt.key_identifier(key))
    assert fscrypt.get_policy(vol.data) is None


@pytest.mark.root
async def test_wrong_key_for_the_policy_refused(workdir: Path) -> None:
    vol, key, identifier = await encrypted_volume(workdir, "wrong")
    wrong = secrets.token_bytes(32)
    (vol.data / "f").write_bytes(b"secret")
    await reboot(vol, identifier)
    await filesystem.mount_image(vol.image, vol.mount)

    with pytest.raises(fscrypt.WrongKey, match=f"not the policy's \\({identifier.hex()}\\)"):
        fscrypt.unlock(vol.data, wrong)
    assert fscrypt.key_status(vol.mount, fscrypt.key_identifier(wrong)) == KeyStatus.ABSENT
    assert fscrypt.key_status(vol.mount, identifier) == KeyStatus.ABSENT
    assert not (vol.data / "f").exists()  # names still ciphertext
    (vol.mount / "plain").mkdir()
    with pytest.raises(fscrypt.DirectoryRefused, match="not encrypted"):
        fscrypt.unlock(vol.mount / "plain", key)
    fscrypt.unlock(vol.data, key)
    assert (vol.data / "f").read_bytes() == b"secret"


@pytest.mark.root
async def test_filesystem_without_the_encrypt_feature_refused(workdir: Path) -> None:
    vol = await make_volume(workdir, "noenc", encrypt=False)
    key = secrets.token_bytes(32)
    for call in (
        lambda: fscrypt.add_key(vol.mount, key),
        lambda: fscrypt.encrypt_directory(vol.data, key),
        lambda: fscrypt.key_status(vol.mount, fscrypt.key_identifier(key)),
    ):
        with pytest.raises(fscrypt.NotSupported, match=r"mkfs\.ext4 -O encrypt"):
            call()
    assert fscrypt.get_policy(vol.data) is None
    (vol.data / "f").write_bytes(b"ok")  # still an ordinary filesystem
    with pytest.raises(fscrypt.FscryptError, match="No such file"):
        fscrypt.get_policy(vol.mount / "missing")


# bytes 0..31 as a key; the identifier the kernel (6.x) returned for it
VECTOR_KEY = bytes(range(32))
VECTOR_IDENTIFIER = bytes.fromhex("37d7d76a59400083289c185526730d34")


def test_key_identifier_matches_the_kernels_vector() -> None:
    assert fscrypt.key_identifier(VECTOR_KEY) == VECTOR_IDENTIFIER
    assert fscrypt.key_identifier(bytes(32)) != VECTOR_IDENTIFIER


@pytest.mark.root
async def test_kernel_gives_the_same_identifier(workdir: Path) -> None:
    vol = await make_volume(workdir, "vector")
    assert fscrypt.add_key(vol.mount, VECTOR_KEY) == VECTOR_IDENTIFIER
    assert fscrypt.key_status(vol.mount, VECTOR_IDENTIFIER) == KeyStatus.PRESENT
