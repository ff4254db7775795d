"""The initramfs built on the node: modules in dependency order, its contents, the cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from zos.primitives import initramfs

INIT = "#!/bin/sh\necho hello\n"


@pytest.fixture(scope="module")
def kernel() -> initramfs.Kernel:
    return initramfs.default_kernel()


def test_the_default_kernel_is_debians_newest_with_modules(kernel: initramfs.Kernel) -> None:
    assert kernel.image == Path("/boot") / f"vmlinuz-{kernel.version}"
    assert (kernel.modules / "modules.dep").is_file()
    assert kernel == initramfs.installed_kernels()[-1]


def test_modules_come_after_what_they_depend_on(kernel: initramfs.Kernel) -> None:
    order = [Path(p).name for p in initramfs.resolve_modules(kernel, ["virtio_blk", "ext4"])]
    assert order[-1] == "ext4.ko" and "jbd2.ko" in order and "mbcache.ko" in order
    assert order.index("jbd2.ko") < order.index("ext4.ko")
    assert order.index("virtio_ring.ko") < order.index("virtio.ko") < order.index("virtio_blk.ko")
    assert len(order) == len(set(order))  # shared dependencies once
    # A built-in module needs nothing; an unknown one is named.
    assert initramfs.resolve_modules(kernel, ["unix"]) == []
    with pytest.raises(initramfs.InitramfsError, match="no module 'nosuchmod'"):
        initramfs.resolve_modules(kernel, ["nosuchmod"])


def test_the_image_holds_busybox_modules_and_init(kernel: initramfs.Kernel, tmp_path: Path) -> None:
    data = initramfs.build(
        initramfs.Recipe(kernel, INIT, ["virtio_net"], files={"/etc/motd": b"hi\n"})
    )
    listing = subprocess.run(
        ["busybox", "cpio", "-t"], input=data, capture_output=True, check=True
    ).stdout.decode()
    names = set(listing.split())
    assert {"init", "bin/busybox", "bin/sh", "dev/console", "etc/motd", "newroot"} <= names
    assert "lib/modules/virtio_net.ko" in names and "lib/modules/failover.ko" in names
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=data, cwd=out, check=True)
    assert (out / "init").read_text() == INIT and (out / "init").stat().st_mode & 0o111
    load = (out / "lib/modules/load").read_text().split()
    assert load[-1] == "virtio_net.ko" and load.index("failover.ko") < load.index("virtio_net.ko")
    assert (out / "bin/sh").is_symlink() and (out / "bin/busybox").stat().st_size > 100_000
    # Deterministic: the same inputs give the same bytes.
    assert (
        initramfs.build(
            initramfs.Recipe(kernel, INIT, ["virtio_net"], files={"/etc/motd": b"hi\n"})
        )
        == data
    )


def test_built_once_per_kernel_and_content(kernel: initramfs.Kernel, tmp_path: Path) -> None:
    first = initramfs.ensure(tmp_path, initramfs.Recipe(kernel, INIT, ["virtio_net"]))
    assert kernel.version in first.name
    mtime = first.stat().st_mtime_ns
    assert initramfs.ensure(tmp_path, initramfs.Recipe(kernel, INIT, ["virtio_net"])) == first
    assert first.stat().st_mtime_ns == mtime  # not rebuilt
    other = initramfs.ensure(
        tmp_path, initramfs.Recipe(kernel, INIT + "# changed\n", ["virtio_net"])
    )
    assert other != first and other.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_no_busybox_is_a_clear_error(kernel: initramfs.Kernel, tmp_path: Path) -> None:
    with pytest.raises(initramfs.InitramfsError, match="busybox-static"):
        initramfs.build(initramfs.Recipe(kernel, INIT, [], busybox=tmp_path / "none"))
