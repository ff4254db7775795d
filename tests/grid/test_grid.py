"""`zos grid up` / `down`: a grid from nothing, found again by a second `up`, its stopped
pieces started again (the same grid), joined to an existing NATS (even one on the host's
loopback), and removed without a trace."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from gridhelpers import NOTHING, emergency_sweep, env_for, leftovers, pids_of, quiet, zos_cli

from zos.grid import procs
from zos.grid.local import down, up
from zos.grid.natsserver import NatsServer, authorization_config
from zos.identity import Identity, load_key_file, write_key_file
from zos.primitives import links, netns
from zos.registry import RegistryClient, RegistryService

pytestmark = [
    pytest.mark.root,
    pytest.mark.nats,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


def test_up_twice_restart_and_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "grid"
    try:
        state, started = up(state_dir, nodes=1, say=quiet)
        assert started and state.ready
        assert {p.name for p in state.procs} == {
            "nats",
            "registry",
            "hub",
            "acme-dns",
            "pebble",
            "explorer",
            "forward",
            "node1",
        }
        assert all(procs.alive(p) for p in state.procs)
        [node] = state.nodes
        assert netns.exists(node.netns)
        assert [str(a) for a in links.addresses("eth0", node.netns)] == [node.address]
        assert (state_dir / "grid.json").stat().st_mode & 0o777 == 0o600
        # The registry's key: kept 0600, named by nats-server's authorization, pinned by
        # the node at its first join.
        key = load_key_file(state_dir / "registry-key.json")
        assert (state_dir / "registry-key.json").stat().st_mode & 0o777 == 0o600
        assert key.public_hex == state.registry_key
        conf = next((state_dir / "nats").glob("*.conf")).read_text()
        assert authorization_config(key.public_key) in conf
        pinned = Path(node.data_dir) / "registry-key"
        assert pinned.read_text().strip() == state.registry_key

        again, started = up(state_dir, nodes=1, say=quiet)
        assert not started and pids_of(again) == pids_of(state)

        # A piece died: the next `up` starts it again, the rest stays as it is.
        registry = next(p for p in state.procs if p.name == "registry")
        os.kill(registry.pid, signal.SIGKILL)
        procs.stop(registry)
        said: list[str] = []
        fresh, started = up(state_dir, nodes=1, say=said.append)
        assert started and said == ["restarting what stopped: registry"]
        assert fresh.farm_id == state.farm_id and fresh.nodes == state.nodes
        changed = {p.name for p, q in zip(fresh.procs, state.procs, strict=True) if p.pid != q.pid}
        assert changed == {"registry"}
        assert all(procs.alive(p) for p in fresh.procs)

        # Everything stopped (as after a reboot, less the namespaces): all of it comes back.
        for p in fresh.procs:
            procs.stop(p)
        netns.delete(node.netns)
        again, started = up(state_dir, nodes=1, say=quiet)
        assert started and all(procs.alive(p) for p in again.procs)
        assert netns.exists(node.netns) and again.nodes == state.nodes

        assert down(state_dir, say=quiet)
        assert leftovers(state_dir, pids_of(state) + pids_of(again)) == NOTHING
        assert not down(state_dir, say=quiet)
    finally:
        emergency_sweep(state_dir)


async def _nodes(url: str, farm_id: int, registry: Identity, own_registry: bool = False) -> list:
    service = await RegistryService(url, registry).start() if own_registry else None
    try:
        key = registry.public_key
        async with RegistryClient(url, Identity.generate(), registry_key=key) as reg:
            await reg.ensure_twin()
            return await reg.list_nodes(farm=farm_id)
    finally:
        if service is not None:
            await service.stop()


def test_join_an_existing_nats_on_loopback(tmp_path: Path) -> None:
    import asyncio

    # The operator configured the server for the grid's registry key (`zos registry
    # nats-config`) and hands the key file to whoever runs that grid's registry.
    registry = Identity.generate()
    key_file = tmp_path / "registry-key.json"
    write_key_file(key_file, registry)
    server = NatsServer(store_dir=tmp_path / "nats", registry_key=registry.public_key).start()
    state_dir = tmp_path / "grid"
    env = env_for(state_dir, tmp_path / "key.json")
    try:
        run = zos_cli(env, "grid", "up", "--nodes", "1", "--nats", server.url)
        assert run.returncode == 1 and "--nats needs --registry-key-file" in run.stderr
        run = zos_cli(
            env,
            "grid", "up", "--nodes", "1", "--nats", server.url,
            "--registry-key-file", str(key_file), "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        info = json.loads(run.stdout)
        assert info["nats"] == server.url and info["not_running"] == []
        assert info["registry_key"] == registry.public_hex
        assert "nats" not in info["processes"]
        [node] = asyncio.run(_nodes(server.url, info["farm_id"], registry))
        assert node.status == "up" and node.id == info["nodes"][0]["node_id"]

        pids = list(info["processes"].values())
        run = zos_cli(env, "grid", "down")
        assert run.returncode == 0, run.stderr
        assert leftovers(state_dir, pids) == NOTHING
        assert server.proc is not None and server.proc.poll() is None  # not ours to stop
        # taken off the grid (the grid's registry is gone: ask one of our own)
        assert asyncio.run(_nodes(server.url, info["farm_id"], registry, own_registry=True)) == []
    finally:
        emergency_sweep(state_dir)
        server.stop()


def test_a_damaged_state_file_is_named_and_down_still_cleans(tmp_path: Path) -> None:
    state_dir = tmp_path / "grid"
    state_dir.mkdir()
    (state_dir / "grid.json").write_text('{"tag": 7')
    env = env_for(state_dir, tmp_path / "key.json")
    try:
        for args in (("grid", "up"), ("ps",)):
            run = zos_cli(env, *args)
            assert run.returncode == 1
            assert f"{state_dir / 'grid.json'} is damaged" in run.stderr
            assert "`zos grid down` removes what it can find" in run.stderr
        run = zos_cli(env, "grid", "down")
        assert run.returncode == 0, run.stderr
        assert not state_dir.exists()
    finally:
        emergency_sweep(state_dir)
