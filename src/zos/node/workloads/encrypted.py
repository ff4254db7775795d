"""A workload's data under its deployment's key: `<mount>/data` on an encrypt-capable ext4.

A filesystem's root cannot be encrypted (ext4 keeps `lost+found` there in clear), so an
encrypted volume, root layer or zdb namespace is the directory `data` under its image's
mount: made empty and encrypted on first use, unlocked on every later one. A deployment
without a key (a ThreeFold client sends none) keeps the plain layout: the mount itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from zos.node.workloads.base import WorkloadContext, WorkloadError
from zos.primitives import fscrypt

DATA = "data"


def deployment_key(ctx: WorkloadContext) -> fscrypt.KeyringKey | None:
    """The deployment's key in the kernel; None when its data is not encrypted.

    A locked deployment (the kernel lost the key in a reboot) is a WorkloadError: the
    engine does not build locked deployments, so this is only a last guard.
    """
    from zos.node.keystore import KeyStoreError

    keys = ctx.node.keys
    if keys is None:
        return None
    try:
        return keys.kernel_key(ctx.contract_id)
    except KeyStoreError as e:
        raise WorkloadError(e.message) from None


def open_tree(mount: Path, key: fscrypt.KeyringKey) -> Path:
    """`<mount>/data`, encrypted under `key` and unlocked; made when it is not there."""
    tree = mount / DATA
    try:
        if not tree.exists():
            tree.mkdir(mode=0o755)
        if fscrypt.get_policy(tree) is None:
            # new, or a crash came between mkdir and the policy: still empty, or refused
            fscrypt.encrypt_directory_with(tree, key)
        else:
            # checks the policy names this key; adding a key already there is harmless
            fscrypt.unlock_with(tree, key)
    except (fscrypt.FscryptError, OSError) as e:
        raise WorkloadError(f"encrypted data: {e}") from None
    return tree


def tree_of(mount: Path) -> Path:
    """Where a workload's data is under `mount`: `data` if it is encrypted, else the mount."""
    tree = mount / DATA
    if os.path.isdir(tree) and not os.path.islink(tree):
        try:
            if fscrypt.get_policy(tree) is not None:
                return tree
        except fscrypt.FscryptError:
            pass
    return mount
