"""`zos registry serve`, `zos twin`, `zos farm` as a user runs them, against a real NATS.

The registry and a few commands run in their own process (the entry point, its exit status
and stderr); the other commands go through the same `main()` in this process, since each
new interpreter costs seconds of imports on a busy machine and checks nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zos.cli import main
from zos.grid.natsserver import NatsServer, authorization_config
from zos.identity import Identity, new_mnemonic, write_key_file
from zos.registry import Capacity, RegistryClient

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

READER = new_mnemonic()  # a key for commands that only read


def zos(
    *args: str,
    mnemonic: str | None = READER,
    check: bool = True,
    registry_key: str = "",
    own_process: bool = False,
) -> subprocess.CompletedProcess:
    """`zos ARGS` with only the environment given here (no ZOS_* of the caller's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOS_")}
    env["ZOS_KEY_FILE"] = "/nonexistent/key.json"
    env["ZOS_GRID_DIR"] = "/nonexistent/grid"
    env["ZOS_REGISTRY_KEY"] = registry_key or REGISTRY_KEY[0]
    if mnemonic:
        env["ZOS_MNEMONIC"] = mnemonic
    if own_process:
        proc = subprocess.run(
            [sys.executable, "-m", "zos.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    else:
        proc = _in_process(list(args), env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _in_process(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


REGISTRY_KEY = [Identity.generate().public_hex]  # set by the test that runs the registry


def test_registry_and_farm_commands(
    nats_server: NatsServer, registry_identity: Identity, tmp_path: Path
) -> None:
    url = nats_server.url
    key_file = tmp_path / "registry-key.json"
    write_key_file(key_file, registry_identity)
    REGISTRY_KEY[0] = registry_identity.public_hex
    config = zos(
        "registry", "nats-config", "--key-file", str(key_file), mnemonic=None, own_process=True
    ).stdout
    assert config == authorization_config(registry_identity.public_key) + "\n"
    serve = subprocess.Popen(
        [sys.executable, "-m", "zos.cli", "registry", "serve", "--nats", url],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),  # noqa: SIM115
        stdin=subprocess.DEVNULL,
        env={**os.environ, "ZOS_REGISTRY_KEY_FILE": str(key_file)},
    )
    try:
        farmer, other = new_mnemonic(), new_mnemonic()
        deadline = time.monotonic() + 30
        while (
            first := zos(
                "twin", "register", "--nats", url, mnemonic=farmer, check=False, own_process=True
            )
        ).returncode:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.2)
        assert first.stdout.strip() == "1"
        assert zos("twin", "register", "--nats", url, mnemonic=farmer).stdout.strip() == "1"
        shown = json.loads(zos("twin", "show", "1", "--nats", url, "--json").stdout)
        assert shown["id"] == 1 and len(shown["public_key"]) == 64
        other_twin = int(zos("twin", "register", "--nats", url, mnemonic=other).stdout)
        # Answers signed by another key than the one given are refused.
        impostor = Identity.generate().public_hex
        wrong = zos(
            "twin", "show", "1", "--nats", url, registry_key=impostor, check=False, own_process=True
        )
        assert wrong.returncode == 1 and "bad_signature" in wrong.stderr

        farm_id = zos("farm", "create", "my-farm", "--nats", url, mnemonic=farmer).stdout.strip()
        assert farm_id == "1"
        dup = zos("farm", "create", "my-farm", "--nats", url, mnemonic=other, check=False)
        assert dup.returncode == 1 and "conflict" in dup.stderr and "taken" in dup.stderr
        token = zos("farm", "token", "1", "--expires", "1h", "--nats", url, mnemonic=farmer)
        assert len(token.stdout.strip()) > 100
        stolen = zos("farm", "token", "1", "--nats", url, mnemonic=other, check=False)
        assert stolen.returncode == 1 and "forbidden" in stolen.stderr
        bad = zos("farm", "token", "1", "--expires", "soon", "--nats", url, check=False)
        assert bad.returncode == 1 and "duration" in bad.stderr
        # A new key's twin is registered on first use.
        newcomer = zos("farm", "create", "x-farm", "--nats", url, mnemonic=new_mnemonic())
        assert newcomer.stdout.strip() == "2"

        listed = zos("farm", "list", "--nats", url).stdout
        assert "my-farm" in listed and "owner twin 1" in listed
        farms = json.loads(zos("farm", "list", "--json", "--nats", url).stdout)
        assert [f["name"] for f in farms] == ["my-farm", "x-farm"]
        assert json.loads(zos("farm", "nodes", "1", "--json", "--nats", url).stdout) == []
        missing = zos("farm", "show", "9", "--nats", url, check=False)
        assert missing.returncode == 1 and "not_found" in missing.stderr
        # The farmer gives a node a public config; `zos nodes` shows its domain.
        node_id = asyncio.run(_join(url, registry_identity, token.stdout.strip()))
        public = ("farm", "public-config", str(node_id), "--nats", url)
        gateway = ("--ipv4", "185.1.2.3/24", "--gw4", "185.1.2.1", "--domain", "gw.example.com")
        stranger = zos(*public, *gateway, mnemonic=other, check=False)
        assert stranger.returncode == 1 and "forbidden" in stranger.stderr
        half = zos(*public, "--ipv4", "185.1.2.3/24", mnemonic=farmer, check=False)
        assert half.returncode == 1 and "gw4" in half.stderr
        assert "domain gw.example.com" in zos(*public, *gateway, mnemonic=farmer).stdout
        assert "domain gw.example.com" in zos("farm", "nodes", "1", "--nats", url).stdout
        listed = zos("nodes", "--nats", url).stdout.splitlines()
        assert listed[0].split()[-1] == "GATEWAY" and listed[1].split()[-1] == "gw.example.com"
        assert len(zos("nodes", "--gateway", "--nats", url).stdout.splitlines()) == 2
        assert "domain" not in zos(*public, "--clear", mnemonic=farmer).stdout
        assert "no nodes match" in zos("nodes", "--gateway", "--nats", url).stdout
        assert zos("nodes", "--nats", url).stdout.splitlines()[1].split()[-1] == "-"
        # A twin moves to another key; the new key is that twin from then on.
        new_key = tmp_path / "new-key.json"
        write_key_file(new_key, Identity.generate())
        args = ("--nats", url, "--json")
        rotated = zos("twin", "rotate-key", "--new-key-file", str(new_key), *args, mnemonic=other)
        assert json.loads(rotated.stdout)["id"] == other_twin
        shown = zos("twin", "show", "--key-file", str(new_key), *args, mnemonic=None)
        assert json.loads(shown.stdout)["id"] == other_twin
        keyless = zos("farm", "list", "--nats", url, mnemonic=None, check=False, own_process=True)
        assert keyless.returncode == 1 and "no key" in keyless.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(timeout=15) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()


async def _join(url: str, registry: Identity, token: str) -> int:
    """A node joins farm 1 with `token`; its id."""
    async with RegistryClient(url, Identity.generate(), registry_key=registry.public_key) as node:
        await node.register_twin()
        capacity = Capacity(cru=4, mru=8 << 30, sru=100 << 30)
        return (await node.register_node(1, token, capacity)).id


def test_unreachable_nats_is_one_line() -> None:
    proc = zos("farm", "list", "--nats", "nats://127.0.0.1:1", check=False, own_process=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: unavailable: cannot reach NATS")
    assert "Traceback" not in proc.stderr
