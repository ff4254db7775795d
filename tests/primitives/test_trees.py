"""Trees of any depth are removed and measured without recursion (issue 12, finding 1:
a 3,000-deep flist tree hit Python's recursion limit in shutil.rmtree and stayed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from zos.primitives.trees import allocated_bytes, clear_directory, open_inside, remove_tree


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path, deep_tree) -> None:
    # Finding 1: shutil.rmtree raised RecursionError on such a tree and left it in place.
    deep_tree(tmp_path / "t", 1500)
    with pytest.raises(RecursionError):
        shutil.rmtree(tmp_path / "t")
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_symlinks_are_removed_never_followed(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep").write_text("x")
    tree = tmp_path / "t"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "out").symlink_to(tmp_path / "outside")
    (tree / "link").symlink_to(tmp_path / "outside" / "keep")
    remove_tree(tree)
    assert not tree.exists() and (tmp_path / "outside" / "keep").read_text() == "x"
    remove_tree(tree)  # gone: a no-op
    (tmp_path / "file").write_text("y")
    remove_tree(tmp_path / "file")
    assert not (tmp_path / "file").exists()


def test_read_only_directories_are_emptied(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "ro" / "sub").mkdir(parents=True)
    (tree / "ro" / "sub" / "f").write_text("x")
    (tree / "ro" / "sub").chmod(0o500)
    (tree / "ro").chmod(0o000)
    clear_directory(tree)
    assert tree.is_dir() and list(tree.iterdir()) == []


@pytest.mark.root
def test_a_mount_inside_is_never_emptied(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    mnt = tree / "a" / "mnt"
    mnt.mkdir(parents=True)
    (tree / "a" / "f").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "t", str(mnt)], check=True)
    try:
        (mnt / "data").write_text("kept")
        with pytest.raises(OSError, match="mount point"):
            remove_tree(tree)
        remove_tree(tree, ignore_errors=True)  # everything else goes
        assert (mnt / "data").read_text() == "kept"
        assert not (tree / "a" / "f").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    remove_tree(tree)
    assert not tree.exists()


def test_allocated_bytes_of_a_deep_tree(tmp_path: Path, deep_tree) -> None:
    deep_tree(tmp_path / "t", 1200)
    (tmp_path / "t" / "data").write_bytes(os.urandom(64 * 1024))
    assert allocated_bytes(tmp_path / "t") >= 64 * 1024
    assert allocated_bytes(tmp_path / "missing") == 0


def test_open_inside_reads_only_the_trees_own_regular_files(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz").write_bytes(b"kernel")
    secret = tmp_path / "host-secret"
    secret.write_text("host")
    (root / "boot" / "initrd.img").symlink_to(secret)  # a name pointed at a host file
    (root / "link").symlink_to(root / "boot")  # a directory reached through a symlink
    (root / "fifo").mkdir()
    fd = open_inside(root, "boot/vmlinuz")
    with os.fdopen(fd, "rb") as f:
        assert f.read() == b"kernel"
    for bad in ("boot/initrd.img", "link/vmlinuz", "fifo", "../host-secret", "boot/../x"):
        with pytest.raises(OSError):
            os.close(open_inside(root, bad))
    with pytest.raises(FileNotFoundError):
        open_inside(root, "boot/missing")
