"""`zos registry serve`, `zos twin`, `zos farm` as a user runs them, against a real NATS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zos.grid.natsserver import NatsServer
from zos.identity import new_mnemonic

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]


def zos(*args: str, mnemonic: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ZOS_MNEMONIC", "ZOS_NATS")}
    env["ZOS_KEY_FILE"] = "/nonexistent/key.json"
    if mnemonic:
        env["ZOS_MNEMONIC"] = mnemonic
    proc = subprocess.run(
        [sys.executable, "-m", "zos.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_registry_and_farm_commands(nats_server: NatsServer, tmp_path: Path) -> None:
    url = nats_server.url
    serve = subprocess.Popen(
        [sys.executable, "-m", "zos.cli", "registry", "serve", "--nats", url],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),  # noqa: SIM115
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while zos("farm", "list", "--nats", url, check=False).returncode != 0:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.2)

        farmer, other = new_mnemonic(), new_mnemonic()
        twin = zos("twin", "register", "--nats", url, mnemonic=farmer).stdout.strip()
        assert twin == "1"
        assert zos("twin", "register", "--nats", url, mnemonic=farmer).stdout.strip() == "1"
        shown = json.loads(zos("twin", "show", "1", "--nats", url, "--json").stdout)
        assert shown["id"] == 1 and len(shown["public_key"]) == 64
        zos("twin", "register", "--nats", url, mnemonic=other)

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
        unregistered = zos(
            "farm", "create", "x-farm", "--nats", url, mnemonic=new_mnemonic(), check=False
        )
        assert unregistered.returncode == 1 and "unknown_twin" in unregistered.stderr

        listed = zos("farm", "list", "--nats", url).stdout
        assert "my-farm" in listed and "owner twin 1" in listed
        farms = json.loads(zos("farm", "list", "--json", "--nats", url).stdout)
        assert [f["name"] for f in farms] == ["my-farm"]
        assert json.loads(zos("farm", "nodes", "1", "--json", "--nats", url).stdout) == []
        missing = zos("farm", "show", "9", "--nats", url, check=False)
        assert missing.returncode == 1 and "not_found" in missing.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(timeout=15) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()


def test_unreachable_nats_is_one_line() -> None:
    proc = zos("farm", "list", "--nats", "nats://127.0.0.1:1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: unavailable: cannot reach NATS")
    assert "Traceback" not in proc.stderr
