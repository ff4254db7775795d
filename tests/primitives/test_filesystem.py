"""Sparse images, ext4, loop mounts and online growth on real loop devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zos.primitives import capacity, filesystem, loop
from zos.primitives.command import CommandError, run

MiB = 1024 * 1024


def test_sparse_file_has_exact_size_and_no_blocks(tmp_path: Path) -> None:
    image = tmp_path / "a.img"
    filesystem.create_sparse(image, 64 * MiB + 17)
    assert image.stat().st_size == 64 * MiB + 17
    assert filesystem.allocated_bytes(image) < MiB
    assert oct(image.stat().st_mode & 0o777) == "0o600"
    filesystem.grow_sparse(image, 128 * MiB)
    assert image.stat().st_size == 128 * MiB
    filesystem.grow_sparse(image, 32 * MiB)  # never shrinks
    assert image.stat().st_size == 128 * MiB


def test_mountinfo_unescapes_spaces() -> None:
    assert filesystem._unescape(r"/a\040b\134c") == "/a b\\c"
    assert any(m.target == Path("/") for m in filesystem.mounts())


@pytest.mark.root
async def test_mkfs_mount_grow_umount_leaves_nothing(workdir: Path) -> None:
    image, target = workdir / "v.img", workdir / "mnt"
    filesystem.create_sparse(image, 64 * MiB)
    await filesystem.mkfs_ext4(image, label="test")
    assert await filesystem.ext4_size(image) == 64 * MiB

    await filesystem.mount_image(image, target)
    mount = filesystem.mount_of(target)
    assert mount is not None and mount.fstype == "ext4" and mount.source.startswith("/dev/loop")
    assert loop.devices_for(image) == [mount.source]
    (target / "data").write_bytes(b"x" * 4096)
    before = os.statvfs(target)

    filesystem.grow_sparse(image, 128 * MiB)
    await filesystem.grow_ext4(image, target)
    await filesystem.grow_ext4(image, target)  # idempotent
    after = os.statvfs(target)
    assert after.f_blocks * after.f_frsize > before.f_blocks * before.f_frsize + 50 * MiB
    assert (target / "data").read_bytes() == b"x" * 4096

    await filesystem.umount(target)
    assert filesystem.mount_of(target) is None
    assert loop.devices_for(image) == []  # auto-clear freed the loop device
    assert await filesystem.ext4_size(image) == 128 * MiB


@pytest.mark.root
async def test_attach_detach(workdir: Path) -> None:
    image = workdir / "raw.img"
    filesystem.create_sparse(image, 8 * MiB)
    dev = await loop.attach(image)
    assert loop.devices_for(image) == [dev]
    assert dev in loop.devices_under(workdir)
    await loop.detach(dev)
    assert loop.devices_for(image) == []


async def test_command_error_names_program_and_reason(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"^mkfs.ext4: .*") as e:
        await run("mkfs.ext4", "-q", str(tmp_path / "missing" / "x.img"))
    assert e.value.code != 0
    with pytest.raises(CommandError, match="not installed"):
        await run("zos-no-such-program")


def test_measure_and_sockets(tmp_path: Path) -> None:
    m = capacity.measure(tmp_path)
    assert m.cores >= 1 and m.memory > 0 and m.disk >= m.disk_free > 0
    assert capacity.rss_bytes(os.getpid()) > 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = capacity.listening_sockets(os.getpid())
        assert any(f.endswith(f":{port:04X}") for f in found), found
    assert not any(f.endswith(f":{port:04X}") for f in capacity.listening_sockets(os.getpid()))


@pytest.mark.root
async def test_grow_never_corrupts_a_filesystem_held_by_another_mount(workdir: Path) -> None:
    image, target, other = workdir / "v.img", workdir / "mnt", workdir / "other"
    filesystem.create_sparse(image, 32 * MiB)
    await filesystem.mkfs_ext4(image)
    await filesystem.mount_image(image, target)
    (target / "keep").write_text("data")
    other.mkdir()
    await run("mount", "--bind", str(target), str(other))  # as a container would hold it
    filesystem.grow_sparse(image, 64 * MiB)
    try:
        await filesystem.grow_ext4(image, target)  # online where allowed
    except RuntimeError as e:  # offline growth is refused while the other mount lives
        assert "another mount" in str(e)
    assert filesystem.mount_of(target) is not None
    assert (target / "keep").read_text() == "data"
    await filesystem.umount(other)
    await filesystem.umount(target)
    await run("e2fsck", "-f", "-n", str(image))  # clean
