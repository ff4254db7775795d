"""zdb workloads through a real node agent (subprocess), registry and nats-server: the
node's one zdb server starts with the first zdb workload, serves each twin its own
namespace over RESP, is found again after `kill -9` of the agent (and restarted if it
dies itself), and stops with the last zdb workload. Refusals create nothing."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nodehelpers import GiB, MiB, NodeProcess, User, kill_zdb_server
from test_node_refusals import _refused

from zos.grid.natsserver import free_port
from zos.primitives.hostproc import start_time
from zos.zdb.client import RespClient, RespError

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]

HOST = "127.0.0.1"


def _server(node: NodeProcess) -> tuple[int, int] | None:
    """(pid, start time) of the node's zdb server, from the state file the agent keeps."""
    try:
        raw = json.loads((node.data_dir / "zdb-server" / "state.json").read_text())
    except OSError:
        return None
    return raw["pid"], raw["start_time"]


@pytest.fixture
async def zdb_node(make_node) -> AsyncIterator[Any]:
    """`make_node` with a zdb port of its own (make_node kills the zdb server afterwards:
    it outlives an agent on purpose)."""

    async def make(user: User, port: int) -> NodeProcess:
        return await make_node(
            user, "--disk", "6G", "--hdd", "4G", "--zdb-listen", f"{HOST}:{port}"
        )

    yield make


def _zdb(name: str, size: int, mode: str = "user", password: str = "", public: bool = False):
    data = {"size": size, "mode": mode, "password": password, "public": public}
    return {"name": name, "type": "zdb", "data": data}


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _until(check, what: str, timeout: float = 20.0) -> None:
    """Poll `check` (a function, plain or async) until it is true."""
    for _ in range(int(timeout / 0.05)):
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def _tenant(port: int, ns: str, password: str | None) -> AsyncIterator[RespClient]:
    c = RespClient(HOST, port, timeout=10)
    try:
        args = [b"SELECT", ns.encode()] + ([password.encode()] if password else [])
        assert await c.command(*args) == "OK"
        yield c
    finally:
        await c.close()


async def _select_error(port: int, ns: str, password: str | None) -> str:
    with pytest.raises(RespError) as e:
        async with _tenant(port, ns, password):
            pass
    return str(e.value)


def _nsinfo(text: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.decode().splitlines() if ": " in line)


async def _update(user: User, node: NodeProcess, dep, **data: Any) -> dict[str, Any]:
    """Raise the version and change the zdb's data; the workload's result afterwards."""
    dep.version += 1
    wl = dep.workloads[0]
    wl.version = dep.version
    for key, value in data.items():
        setattr(wl.data, key, value)
    await user.update(node, dep)
    for _ in range(400):
        got = await user.get(node, dep.contract_id)
        result = got["workloads"][0]["result"]
        if got["version"] == dep.version and result["state"] != "init":
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"update not done: {got}")


async def test_zdb_namespaces_per_twin_restart_and_last_one_stops(make_user, zdb_node) -> None:
    alice, bob = await make_user(), await make_user()
    port = free_port()
    node = await zdb_node(alice, port)
    assert not await _listening(port) and _server(node) is None

    a = await alice.deploy(node, alice.deployment([_zdb("db", MiB, password="alice-pw")]))
    got = await alice.wait_states(node, a.contract_id, {"db": "ok"})
    ns_a = f"{alice.twin_id}-{a.contract_id}-db"
    assert got["workloads"][0]["result"]["data"] == {"Namespace": ns_a, "IPs": [HOST], "Port": port}
    async with _tenant(port, ns_a, "alice-pw") as c:
        assert await c.command(b"SET", b"k", b"v") == b"k"
        assert await c.command(b"GET", b"k") == b"v"
        # maxsize is the workload's size: 1 MiB of values, not one byte more.
        assert await c.command(b"SET", b"big", b"x" * (MiB - 1)) == b"big"
        with pytest.raises(RespError, match="No space left"):
            await c.command(b"SET", b"more", b"y" * 2)
    assert "protected and private" in await _select_error(port, ns_a, None)
    # `default` belongs to nobody: a tenant that selects nothing cannot write there.
    stranger = RespClient(HOST, port, timeout=10)
    try:
        with pytest.raises(RespError, match="read-only"):
            await stranger.command(b"SET", b"k", b"v")
        with pytest.raises(RespError, match="Permission denied"):
            await stranger.command(b"NSNEW", b"mine")
    finally:
        await stranger.close()
    stats = await alice.node(node).statistics()
    assert stats.used.hru == MiB  # a zdb's size is hru, from the node's one disk

    b = await bob.deploy(
        node, bob.deployment([_zdb("db", 2 * MiB, mode="seq", password="bob-pw", public=True)])
    )
    got = await bob.wait_states(node, b.contract_id, {"db": "ok"})
    ns_b = f"{bob.twin_id}-{b.contract_id}-db"
    assert ns_b != ns_a and got["workloads"][0]["result"]["data"]["Namespace"] == ns_b
    assert "Access denied" in await _select_error(port, ns_b, "alice-pw")
    async with _tenant(port, ns_b, "bob-pw") as c:
        seq_id = await c.command(b"SET", b"", b"bob's")
        assert seq_id == (0).to_bytes(8, "little")
        assert _nsinfo(await c.command(b"NSINFO", ns_b.encode()))["mode"] == "sequential"
    async with _tenant(port, ns_b, None) as c:  # public: readable without the password
        assert await c.command(b"GET", seq_id) == b"bob's"
        with pytest.raises(RespError, match="read-only"):
            await c.command(b"SET", b"", b"not allowed")

    # Updates: grow; shrink below the data and change mode are refused, nothing changes;
    # a new password replaces the old one.
    result = await _update(alice, node, a, size=3 * MiB)
    assert result["state"] == "ok"
    async with _tenant(port, ns_a, "alice-pw") as c:
        assert await c.command(b"SET", b"more", b"y" * MiB) == b"more"
    result = await _update(alice, node, a, size=MiB)
    assert "size: the namespace holds" in result["message"], result
    result = await _update(alice, node, a, size=3 * MiB, mode="seq")
    assert "mode: cannot change from user to seq" in result["message"], result
    result = await _update(alice, node, a, mode="user", password="alice-new")
    assert result["state"] == "ok"
    assert "Access denied" in await _select_error(port, ns_a, "alice-pw")
    async with _tenant(port, ns_a, "alice-new") as c:
        info = _nsinfo(await c.command(b"NSINFO", ns_a.encode()))
        assert info["data_limits_bytes"] == str(3 * MiB) and info["mode"] == "userkey"
        assert await c.command(b"GET", b"k") == b"v"

    # kill -9 of the agent: the server runs on and is found again, not started twice.
    server = _server(node)
    node.kill()
    node.start()
    await node.wait_ready(alice)
    await alice.wait_states(node, a.contract_id, {"db": "ok"})
    assert _server(node) == server
    async with _tenant(port, ns_b, "bob-pw") as c:
        assert await c.command(b"GET", seq_id) == b"bob's"

    # The server itself dies: the agent starts it again, the data is still there.
    kill_zdb_server(node.data_dir)
    await _until(lambda: _server(node) not in (None, server), "a new zdb server")
    await _until(lambda: _listening(port), "the new zdb server to listen")
    async with _tenant(port, ns_a, "alice-new") as c:
        assert await c.command(b"GET", b"k") == b"v"

    # Delete: the namespace and its data go; the server stays for bob's.
    await alice.node(node).delete(a.contract_id)
    await alice.wait_states(node, a.contract_id, {"db": "deleted"})
    assert "Namespace not found" in await _select_error(port, ns_a, "alice-new")
    assert not (node.data_dir / "storage" / "zdb" / ns_a).exists()
    assert await _listening(port)

    # The agent restarts with another port: the server is replaced, bob's data kept.
    new_port = free_port()
    node.stop()
    node.args[node.args.index("--zdb-listen") + 1] = f"{HOST}:{new_port}"
    node.start()
    await node.wait_ready(bob)
    for _ in range(400):
        got = await bob.get(node, b.contract_id)
        if got["workloads"][0]["result"]["data"]["Port"] == new_port:
            break
        await asyncio.sleep(0.05)
    assert got["workloads"][0]["result"]["data"] == {
        "Namespace": ns_b,
        "IPs": [HOST],
        "Port": new_port,
    }
    assert not await _listening(port)
    async with _tenant(new_port, ns_b, "bob-pw") as c:
        assert await c.command(b"GET", seq_id) == b"bob's"

    # The last zdb workload goes: the server stops listening and its data is gone.
    last = _server(node)
    assert last is not None
    await bob.node(node).delete(b.contract_id)
    await bob.wait_states(node, b.contract_id, {"db": "deleted"})
    assert start_time(last[0]) != last[1]
    assert not await _listening(new_port)
    assert _server(node) is None
    assert not (node.data_dir / "storage" / "zdb").exists()


async def test_zdb_refusals_create_nothing(make_user, zdb_node) -> None:
    user = await make_user()
    port = free_port()
    node = await zdb_node(user, port)
    bad = [
        (_zdb("db", 0), "invalid", ["data.size", "more than 0"]),
        (_zdb("db", MiB, mode="fast"), "invalid", ["data.mode", "'user' or 'seq'"]),
        (_zdb("db", MiB, password="with space"), "invalid", ["data.password", "without spaces"]),
        (_zdb("db", MiB, password="p" * 64), "invalid", ["data.password", "at most 63"]),
        (_zdb("db", MiB, password="*"), "invalid", ["data.password"]),
        # hru is the part of the disk offered as HDD (4 GiB here): it cannot be overbooked.
        (_zdb("db", 5 * GiB), "capacity", ["hdd: needs"]),
    ]
    for workload, code, words in bad:
        await _refused(user.deploy(node, user.deployment([workload])), code, *words)
    assert await user.node(node).list() == []
    assert not await _listening(port) and _server(node) is None
    assert not (node.data_dir / "storage" / "zdb").exists()


def test_listen_setting_is_checked() -> None:
    from zos.node.workloads.zdbserver import parse_listen

    assert parse_listen(":9901") == (None, 9901)
    assert parse_listen("10.0.0.2") == ("10.0.0.2", 9900)
    assert parse_listen("127.0.0.1:7000") == ("127.0.0.1", 7000)
    for bad in ("host:", "host:0", "host:70000", "a b:1"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def test_server_outlives_agent_until_wipe(make_user, zdb_node) -> None:
    user = await make_user()
    port = free_port()
    node = await zdb_node(user, port)
    dep = await user.deploy(node, user.deployment([_zdb("db", MiB, password="pw")]))
    await user.wait_states(node, dep.contract_id, {"db": "ok"})
    server = _server(node)
    assert server is not None

    # A stopped agent leaves the namespaces served, as it leaves containers running.
    assert node.stop() == 0
    assert start_time(server[0]) == server[1] and await _listening(port)
    # `zos node wipe` (a machine leaving the grid) stops it and removes every namespace.
    argv = [sys.executable, "-m", "zos.cli", "node", "wipe", "--data-dir", str(node.data_dir)]
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL)
    try:
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert start_time(server[0]) != server[1] and not await _listening(port)
    assert _server(node) is None and not (node.data_dir / "storage" / "zdb").exists()


async def test_failed_restore_keeps_the_data(make_user, zdb_node) -> None:
    """After a restart the zdb cannot come back (its port is taken): the workload says
    so, but its namespace and data are kept, and the next start brings it back."""
    user = await make_user()
    port = free_port()
    node = await zdb_node(user, port)
    dep = await user.deploy(node, user.deployment([_zdb("db", MiB, password="pw")]))
    await user.wait_states(node, dep.contract_id, {"db": "ok"})
    ns = f"{user.twin_id}-{dep.contract_id}-db"
    async with _tenant(port, ns, "pw") as c:
        assert await c.command(b"SET", b"k", b"precious") == b"k"

    assert node.stop() == 0
    kill_zdb_server(node.data_dir)

    async def port_free() -> bool:
        return not await _listening(port)

    await _until(port_free, "the killed server to let go of its port")
    squatter = await asyncio.start_server(lambda r, w: w.close(), HOST, port)
    try:
        node.start()
        await node.wait_ready(user)
        got = await user.wait_states(node, dep.contract_id, {"db": "error"})
        message = got["workloads"][0]["result"]["message"]
        assert "could not be brought back after a restart" in message, message
        assert (node.data_dir / "storage" / "zdb" / ns).is_dir()
        stats = await user.node(node).statistics()
        assert stats.used.hru == MiB  # the kept data still holds its disk
        assert node.stop() == 0
    finally:
        squatter.close()
        await squatter.wait_closed()

    node.start()
    await node.wait_ready(user)
    await user.wait_states(node, dep.contract_id, {"db": "ok"})
    async with _tenant(port, ns, "pw") as c:
        assert await c.command(b"GET", b"k") == b"precious"
