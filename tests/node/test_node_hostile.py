"""The findings of an outside probe of the node (issue 12), each one a real node agent
(subprocess) on a real registry and nats-server: what a hostile tenant, flist or full
disk did before, and what the node answers now."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import random
import socket
import stat
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from netzm_helpers import listen_in, machine, network_data
from nodehelpers import MiB, NodeProcess, remove_leftovers
from test_node_refusals import _refused

from zos.flist import BLOCK_SIZE, DirStore, FlistWriter, Router, encrypt_block, pack
from zos.primitives import links, netns

pytestmark = [
    pytest.mark.nats,
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.runc,
    pytest.mark.slow,
]

ZOS = [sys.executable, "-m", "zos.cli"]


async def test_a_deep_tree_in_the_cache_stops_neither_start_nor_wipe(
    make_user, make_node, deep_tree
) -> None:
    # Finding 1: a tree thousands of directories deep left in the flist cache made
    # `zos node run` and `zos node wipe` exit with "maximum recursion depth exceeded".
    user = await make_user()
    node: NodeProcess = await make_node(user)
    node.stop()
    trees = node.data_dir / "flist-cache" / "trees"
    deep_tree(trees / ".0123abcd.half", 1500)
    node.start()
    await node.wait_ready(user)
    assert list(trees.iterdir()) == []
    node.stop()

    deep_tree(trees / ("f" * 64), 1500)  # a tree the cache's index does not know
    wiped = subprocess.run(
        [*ZOS, "node", "wipe", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wiped.returncode == 0, wiped.stderr
    assert list(trees.iterdir()) == []


def _wipe(node: NodeProcess, prefix: str) -> None:
    node.stop()
    wiped = subprocess.run(
        [*ZOS, "node", "wipe", "--data-dir", str(node.data_dir), "--netns-prefix", prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wiped.returncode == 0, wiped.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _remote_host() -> Iterator[tuple[str, str, str]]:
    """A "remote" machine: a namespace behind a veth of the host, on a /29 of a
    documentation range; yields (its namespace, its address, the host's address there)."""
    base = 8 * random.randrange(1, 31)
    ns, veth = f"zt-r-{uuid.uuid4().hex[:8]}", f"zr{uuid.uuid4().hex[:8]}"
    netns.create(ns)
    try:
        links.ensure_veth(veth, "eth0", None, ns)
        links.set_addresses(veth, [IPv4Interface(f"203.0.113.{base + 1}/29")])
        links.set_up(veth)
        links.set_addresses("eth0", [IPv4Interface(f"203.0.113.{base + 2}/29")], ns)
        links.set_up("eth0", ns)
        links.set_up("lo", ns)
        yield ns, f"203.0.113.{base + 2}", f"203.0.113.{base + 1}"
    finally:
        links.delete(veth)
        netns.delete(ns)


def _serve_in(
    ns: str, directory: Path, seen: list[str] | None = None
) -> http.server.ThreadingHTTPServer:
    """An HTTP server of `directory` (a hub's layout) inside `ns`; `seen` gets each path."""

    class Handler(_Quiet):
        def log_message(self, format: str, *args: Any) -> None:
            if seen is not None:
                seen.append(self.path)

    handler = functools.partial(Handler, directory=str(directory))
    server = netns.run_in(ns, lambda: http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _banner_in(ns: str, banner: bytes) -> socket.socket:
    """A service that is not a hub: it says its banner (NATS' INFO, say) and hangs up."""
    listener = listen_in(ns)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(banner)

    threading.Thread(target=serve, daemon=True).start()
    return listener


async def _flist_routed_to(tmp: Path, dest: Path, url: str) -> None:
    """An flist of its own content (so none of its blocks is cached yet) whose blocks
    are said to be at `url`."""
    src = tmp / f"src-{dest.stem}"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "data").write_bytes(os.urandom(4096))
    store = DirStore(tmp / "elsewhere")
    store.url = url
    await pack(src, dest, Router([(0, 255, store)]))


async def test_a_tenant_flist_cannot_make_the_node_fetch_from_itself(
    make_user, make_node, farm, busybox_rootfs: Path, tmp_path: Path
) -> None:
    # Finding 3: the node fetched whatever a tenant named: errors echoed the NATS INFO
    # banner, a zdb:// route to the node's own zdb was a password oracle, a dir:// route
    # read the node's own disk. Now tenant flists use only network stores that are not
    # the node, its loopback or the control plane, and errors never say what a remote said.
    secret = "SECRET-server-id-do-not-echo"
    prefix = f"zh{os.getpid() % 100000}-"
    user = await make_user()
    node: NodeProcess = await make_node(user, "--disk", "4G", "--netns-prefix", prefix)
    with _remote_host() as (ns, remote, host_side):
        www = tmp_path / "www"
        www.mkdir()
        hub = _serve_in(ns, www)
        base = f"http://{remote}:{hub.server_address[1]}"
        banner = _banner_in(ns, f'INFO {{"server_id":"{secret}"}}\r\n'.encode())
        garbage = f"http://{remote}:{banner.getsockname()[1]}"
        mine = listen_in(None, 0, host_side)  # the node's own address: nobody may dial it
        mine.setblocking(False)
        try:
            store = DirStore(www)  # written here, read over HTTP from the remote
            store.url = base
            await pack(busybox_rootfs, www / "ok.fl", Router([(0, 255, store)]))
            own_zdb = f"zdb://{host_side}:{mine.getsockname()[1]}/victim"
            for name, route in [
                ("dir", f"dir://{node.data_dir}"),
                ("self", own_zdb),
                ("garbage", garbage),
            ]:
                await _flist_routed_to(tmp_path, www / f"{name}.fl", route)
            nats_port = urllib.parse.urlsplit(farm.nats).port
            dep = user.deployment(
                [
                    {"name": "net", "type": "network", "data": network_data("10.66.1.0/24")},
                    machine("ok", f"{base}/ok.fl", "10.66.1.2"),
                    machine("dir", f"{base}/dir.fl", "10.66.1.3"),
                    machine("self", f"{base}/self.fl", "10.66.1.4"),
                    machine("garbageroute", f"{base}/garbage.fl", "10.66.1.5"),
                    machine("loopback", f"http://127.0.0.1:{nats_port}/x.fl", "10.66.1.6"),
                    machine("garbageurl", f"{garbage}/x.fl", "10.66.1.7"),
                ]
            )
            await user.deploy(node, dep)
            want = {"ok": "ok", "dir": "error", "self": "error", "garbageroute": "error"}
            want |= {"loopback": "error", "garbageurl": "error"}
            got = await user.wait_states(node, dep.contract_id, want)
            said = {wl["name"]: wl["result"]["message"] for wl in got["workloads"]}
            assert "dir:// stores (a path on the node) are not allowed" in said["dir"]
            assert f"{host_side} is an address of this node" in said["self"]
            assert "127.0.0.1 is the node's loopback" in said["loopback"]
            assert "did not answer as an HTTP server" in said["garbageurl"], said
            assert "block" in said["garbageroute"]
            for name, text in said.items():
                assert secret not in text and "INFO" not in text, (name, text)
                assert str(node.data_dir) not in text, (name, text)
            with pytest.raises(BlockingIOError):
                mine.accept()  # the node never dialled its own address for a tenant
        finally:
            _wipe(node, prefix)
            mine.close()
            banner.close()
            hub.shutdown()
            hub.server_close()


async def test_an_flist_larger_than_the_root_or_the_cache_is_refused_before_any_fetch(
    make_user, make_node, tmp_path: Path
) -> None:
    # Finding 4: a 2.6 MB .fl describing a 6 GiB file of one repeated block filled the
    # node's data disk though the machine's root was 500 MB. The size an flist declares
    # is known before anything is fetched: here 1 GiB, for a 500 MiB root and a 768 MiB
    # cache.
    prefix = f"zs{os.getpid() % 100000}-"
    user = await make_user()
    node: NodeProcess = await make_node(
        user, "--disk", "8G", "--cache-size", "768M", "--netns-prefix", prefix
    )
    with _remote_host() as (ns, remote, _):
        www, seen = tmp_path / "www", []
        www.mkdir()
        hub = _serve_in(ns, www, seen)
        base = f"http://{remote}:{hub.server_address[1]}"
        try:
            block, cipher = encrypt_block(bytes(BLOCK_SIZE))
            (www / block.id.hex()[:2]).mkdir()
            (www / block.id.hex()[:2] / block.id.hex()).write_bytes(cipher)
            writer = FlistWriter(www / "big.fl")
            root = writer.inode(0, "/", size=0, uid=0, gid=0, mode=stat.S_IFDIR | 0o755, mtime=0)
            big = writer.inode(
                root, "big", size=1 << 30, uid=0, gid=0, mode=stat.S_IFREG | 0o644, mtime=0
            )
            writer.blocks(big, [block] * ((1 << 30) // BLOCK_SIZE))
            writer.route(0, 255, base)
            writer.close()
            roomy = machine("roomy", f"{base}/big.fl", "10.67.1.3")
            roomy["data"]["size"] = 2 << 30
            dep = user.deployment(
                [
                    {"name": "net", "type": "network", "data": network_data("10.67.1.0/24")},
                    machine("small", f"{base}/big.fl", "10.67.1.2"),
                    roomy,
                ]
            )
            await user.deploy(node, dep)
            got = await user.wait_states(
                node, dep.contract_id, {"small": "error", "roomy": "error"}
            )
            said = {wl["name"]: wl["result"]["message"] for wl in got["workloads"]}
            assert (
                "declares 1073741824 bytes of files, more than the machine's root file"
                in (said["small"])
            ), said
            assert "more than this node's flist cache holds (805306368 bytes)" in said["roomy"]
            assert set(seen) == {"/big.fl"}, "no block was fetched"
            cache = node.data_dir / "flist-cache"
            assert list((cache / "trees").iterdir()) == []
            assert not [p for p in (cache / "blocks").rglob("*") if p.is_file()]
        finally:
            _wipe(node, prefix)
            hub.shutdown()
            hub.server_close()


async def test_zero_capacity_workloads_are_bounded(make_user, make_node) -> None:
    # Finding 7: one deployment of 1,000 `network` workloads made 1,000 namespaces and
    # was charged nothing. Workloads per deployment and networks per twin per node are
    # bounded, and the excess is refused whole.
    prefix = f"zn{os.getpid() % 100000}-"
    user = await make_user()
    node: NodeProcess = await make_node(user, "--netns-prefix", prefix)
    nets = [
        {"name": f"n{i}", "type": "network", "data": network_data(f"10.68.{i}.0/24")}
        for i in range(100)
    ]
    try:
        await _refused(
            user.deploy(node, user.deployment(nets)),
            "invalid",
            "workloads: 100 in one deployment, at most 64",
        )
        assert await user.node(node).list() == []
        assert netns.names(prefix) == []
        first = await user.deploy(node, user.deployment(nets[:16]))
        await user.wait_states(node, first.contract_id, {f"n{i}": "ok" for i in range(16)})
        await _refused(
            user.deploy(node, user.deployment(nets[16:17])),
            "capacity",
            f"networks: twin {user.twin_id} would have 17 networks on this node, at most 16",
        )
        shared = await user.deploy(node, user.deployment(nets[3:4]))  # the same network
        await user.wait_states(node, shared.contract_id, {"n3": "ok"})
        assert len(await user.node(node).list()) == 2
    finally:
        _wipe(node, prefix)


async def test_capacity_a_node_does_not_have_is_refused(make_user, make_node) -> None:
    # Finding 8: a `cpu: 8` machine on a 2-core node was accepted (its used cores then
    # passed its total and hid it from every listing), and zdb space was accepted on a
    # node offering no hru. Both are refused at deploy now; nothing is created.
    user = await make_user()
    node: NodeProcess = await make_node(user, "--cores", "2")
    big = machine("big", "http://hub.invalid/x.fl", "10.69.1.2")
    big["data"]["compute_capacity"]["cpu"] = 8
    await _refused(
        user.deploy(node, user.deployment([big])),
        "capacity",
        "workload 'big': compute_capacity.cpu: needs 8 cores, this node has 2",
    )
    zdb = {"name": "db", "type": "zdb", "data": {"size": MiB, "mode": "user", "public": False}}
    await _refused(
        user.deploy(node, user.deployment([zdb])),
        "capacity",
        "hru: this node offers no HDD capacity (what zdb takes)",
    )
    assert await user.node(node).list() == []
    [listed] = await user.registry.list_nodes()
    assert listed.id == node.node_id and listed.capacity.hru == 0


async def test_a_full_data_disk_is_a_refusal_that_changes_nothing(
    make_user, farm, tmp_path: Path
) -> None:
    # Finding 10: a full data disk answered "internal: internal error handling
    # 'zos.deployment.deploy'". Now a refusal that says what is full, and changes nothing.
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "zt-full", str(small)], check=True)
    user = await make_user()
    node = NodeProcess(farm, small / "node", ["--disk", "40M"])
    try:
        node.start()
        await node.wait_ready(user)
        filler = small / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        dep = user.deployment([{"name": "v", "type": "volume", "data": {"size": 8 * MiB}}])
        await _refused(
            user.deploy(node, dep),
            "capacity",
            "the node's data disk is full",
            "nothing was changed",
        )
        assert await user.node(node).list() == []
        filler.unlink()
        # The same deployment again: nothing of the refused one was kept.
        await user.node(node).deploy(dep)
        await user.wait_states(node, dep.contract_id, {"v": "ok"})
    finally:
        _wipe(node, "")
        await remove_leftovers(small)
        subprocess.run(["umount", "-l", str(small)], check=False)
