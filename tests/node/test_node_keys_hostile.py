"""Hostile data keys against a real agent: each refused with an error naming the rule,
and nothing changes (no key in the kernel, no record, the deployment as it was).
A deployment sent without a key (a ThreeFold client) still deploys, not encrypted."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest
from nodehelpers import MiB, NodeProcess, User

from zos.bus import BusError
from zos.client.datakeys import DataKeys
from zos.identity import Identity
from zos.identity.datakey import seal_copy, seal_for_node
from zos.nodeapi import commands as api
from zos.primitives import fscrypt, keyring

pytestmark = [pytest.mark.nats, pytest.mark.root]


def node_keys(node: NodeProcess) -> list[str]:
    tag = hashlib.sha256(str(node.data_dir.resolve()).encode()).hexdigest()[:12]
    return keyring.descriptions(f"zos:{tag}:")


async def send(
    user: User,
    node: NodeProcess,
    contract_id: int,
    key: bytes,
    *,
    signer: Identity | None = None,
    sealed_to: bytes | None = None,
    node_twin: int | None = None,
    message_contract: int | None = None,
    timestamp: int | None = None,
    copies: dict[int, str] | None = None,
    sealed: str | None = None,
) -> Any:
    """A key message, with any one part made hostile."""
    node_public = (await user.registry.get_twin(node.twin_id)).public_key_bytes
    sealed = sealed or seal_for_node(
        signer or user.identity,
        user.twin_id,
        node.twin_id if node_twin is None else node_twin,
        sealed_to or node_public,
        message_contract or contract_id,
        key,
        timestamp=timestamp,
    )
    payload: dict[str, Any] = {"contract_id": contract_id, "key": sealed}
    if copies is not None:
        payload["copies"] = {str(t): c for t, c in copies.items()}
    return await user.call(node, api.UNLOCK, payload)


async def refused(code: str, match: str, attempt: Any) -> None:
    with pytest.raises(BusError) as e:
        await attempt
    assert e.value.code == code, e.value
    assert match in e.value.message, e.value.message


async def test_hostile_keys_are_refused_and_change_nothing(make_user, make_node) -> None:
    owner, other = await make_user(), await make_user()
    node = await make_node(owner, "--disk", "2G")
    volume = [{"name": "vol", "type": "volume", "data": {"size": 32 * MiB}}]

    # A ThreeFold client sends no key: deployed, shown as not encrypted, no key accepted later.
    plain = await owner.deploy(node, owner.deployment(volume))
    await owner.wait_states(node, plain.contract_id, {"vol": "ok"})
    status = await DataKeys(owner.identity, owner.twin_id, owner.registry).status(
        owner.node(node), plain.contract_id
    )
    assert status.encrypted is False and status.locked is False
    mount = node.data_dir / "storage" / "volumes" / f"{owner.twin_id}-{plain.contract_id}-vol"
    assert not (mount / "data").exists()
    key = secrets.token_bytes(32)
    own = seal_copy(owner.identity.public_key, plain.contract_id, key)
    await refused(
        "conflict",
        "deployed without a data key",
        send(owner, node, plain.contract_id, key, copies={owner.twin_id: own}),
    )

    dep = owner.deployment(volume)
    contract = await owner.registry.create_node_contract(node.node_id, dep.hash_hex())
    cid = contract.id
    own = seal_copy(owner.identity.public_key, cid, key)
    copies = {owner.twin_id: own}
    stranger = Identity.generate()
    hostile = [
        ("invalid", "must be 32 bytes, got 16", send(owner, node, cid, key[:16], copies=copies)),
        ("invalid", "must be 32 bytes, got 64", send(owner, node, cid, key * 2, copies=copies)),
        (
            "invalid",
            "sealed to another node's key",
            send(owner, node, cid, key, sealed_to=stranger.public_key, copies=copies),
        ),
        (
            "invalid",
            "meant for node twin",
            send(owner, node, cid, key, node_twin=node.twin_id + 100, copies=copies),
        ),
        (
            "invalid",
            f"the key is for deployment {cid + 7}",
            send(owner, node, cid, key, message_contract=cid + 7, copies=copies),
        ),
        (
            "invalid",
            "not signed by the sending twin",
            send(owner, node, cid, key, signer=other.identity, copies=copies),
        ),
        (
            "invalid",
            "older than",
            send(owner, node, cid, key, timestamp=int(time.time() * 1000) - 600_000, copies=copies),
        ),
        ("invalid", "cannot be opened", send(owner, node, cid, key, sealed="AAAA", copies=copies)),
        ("invalid", "owner's own sealed copy is required", send(owner, node, cid, key, copies={})),
        (
            "forbidden",
            "only the owner gives a deployment its key",
            send(other, node, cid, key, copies={other.twin_id: own}),
        ),
    ]
    for code, match, attempt in hostile:
        await refused(code, match, attempt)
        assert node_keys(node) == []
        await refused(
            "not_found",
            "no such deployment",
            owner.call(node, api.ENCRYPTION, {"contract_id": cid}),
        )

    # the owner's key, once; the same message again is a replay
    node_public = (await owner.registry.get_twin(node.twin_id)).public_key_bytes
    message = seal_for_node(owner.identity, owner.twin_id, node.twin_id, node_public, cid, key)
    await send(owner, node, cid, key, sealed=message, copies=copies)
    assert len(node_keys(node)) == 1
    await refused("replayed", "already used", send(owner, node, cid, key, sealed=message))
    # another key for this deployment, even from its owner: refused
    await refused(
        "forbidden",
        "not the data key of deployment",
        send(owner, node, cid, secrets.token_bytes(32)),
    )
    # another twin with the right key: refused
    await refused("forbidden", "may not unlock", send(other, node, cid, key))
    assert len(node_keys(node)) == 1

    dep.contract_id = cid
    dep.sign(owner.twin_id, owner.identity)
    await owner.node(node).deploy(dep)
    await owner.wait_states(node, cid, {"vol": "ok"})
    data = node.data_dir / "storage" / "volumes" / f"{owner.twin_id}-{cid}-vol" / "data"
    assert fscrypt.get_policy(data).identifier == fscrypt.key_identifier(key)  # type: ignore[union-attr]
    keys = DataKeys(owner.identity, owner.twin_id, owner.registry)
    status = await keys.status(owner.node(node), cid)
    assert status.encrypted is True and status.locked is False and status.shared == []
    # the node refuses to share with a twin that does not exist, or to unshare the owner
    share = {"contract_id": cid, "twin": 999_999, "copy": own}
    await refused("invalid", "not registered", owner.call(node, api.SHARE, share))
    unshare = {"contract_id": cid, "twin": owner.twin_id}
    await refused("invalid", "cannot be removed", owner.call(node, api.UNSHARE, unshare))
    share = {"contract_id": cid, "twin": other.twin_id, "copy": own}
    await refused("not_found", "no such deployment", other.call(node, api.SHARE, share))
    assert (await keys.status(owner.node(node), cid)).shared == []
    held = [p for p in node.data_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert [p for p in held if key in p.read_bytes()] == []

    # the node leaves the grid: its keys leave the kernel
    assert node.stop() == 0
    wiped = subprocess.run(
        [sys.executable, "-m", "zos.cli", "node", "wipe", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wiped.returncode == 0, wiped.stderr
    assert node_keys(node) == []
