"""The README's main-job command, `scripts/demo`, from a clean state: it starts a grid,
deploys the example app, and the page it prints answers from the host, through the port
forwarder and over HTTPS through the app's gateway (checked against pebble's root, as
the curl it prints does); run again, it re-uses the grid and replaces the app. Then
`zos grid down` leaves nothing behind."""

from __future__ import annotations

import re
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from gridhelpers import (
    GRID_MARKS,
    NOTHING,
    URL,
    emergency_sweep,
    env_for,
    leftovers,
    pids_of,
    zos_cli,
)

from zos.grid.state import load
from zos.primitives import nsclient

pytestmark = [*GRID_MARKS, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = re.compile(r"Over HTTPS:\s+(https://(\S+))\s+\(from here: (.+)\)")


def demo(env: dict[str, str], state_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run scripts/demo; check it succeeded and its printed address serves the page."""
    run = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    m = URL.search(run.stdout)
    assert m, run.stdout
    page = urllib.request.urlopen(m.group(1), timeout=10).read().decode()
    assert "<h1>Hello from a zos zmachine</h1>" in page
    assert "zos rm hello" in run.stdout and "zos grid down" in run.stdout
    https_page(run.stdout, state_dir)
    return run


def https_page(stdout: str, state_dir: Path) -> None:
    """The gateway's URL the demo printed serves the page over HTTPS, by its name at the
    gateway node's address, with a certificate pebble's root verifies; so does the curl
    command it printed."""
    m = GATEWAY.search(stdout)
    assert m, stdout
    url, host, curl = m.groups()
    state = load(state_dir)
    assert state is not None
    [node] = [n for n in state.nodes if host.endswith(f".{n.domain}")]
    assert url == f"https://hello.{node.domain}"
    addr = node.address.split("/")[0]
    assert f"--resolve {host}:443:{addr}" in curl and f"--cacert {state.acme_root}" in curl
    trust = ssl.create_default_context(cafile=state.acme_root)
    resp = nsclient.http_get(None, addr, 443, "/", hostname=host, tls=trust, timeout=10)
    assert resp.status == 200 and "<h1>Hello from a zos zmachine</h1>" in resp.text
    run = subprocess.run(curl.split(), capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0 and "<h1>Hello from a zos zmachine</h1>" in run.stdout, run.stderr


def test_demo_then_fetch_the_page_then_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "grid"
    env = env_for(state_dir, tmp_path / "key.json")
    try:
        first = demo(env, state_dir)
        state = load(state_dir)
        assert state is not None and len(state.nodes) == 2
        pids = pids_of(state)

        # Again: the same grid, the app replaced (and answering at its new address).
        second = demo(env, state_dir)
        assert "a grid is already running here" in second.stdout
        assert "deployment hello                replacing" in second.stderr
        again = load(state_dir)
        assert again is not None and pids_of(again) == pids
        assert URL.search(first.stdout) and URL.search(second.stdout)
        down = zos_cli(env, "grid", "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert leftovers(state_dir, pids) == NOTHING
    finally:
        emergency_sweep(state_dir)
