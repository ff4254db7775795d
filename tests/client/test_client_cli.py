"""The user commands' errors, without a grid: one line naming the problem and what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gridhelpers import env_for

ROOT = Path(__file__).resolve().parents[2]


def zos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_for(tmp_path / "nogrid", tmp_path / "key.json")
    return subprocess.run(
        [sys.executable, "-m", "zos.cli", *args], env=env, capture_output=True, text=True
    )


def test_a_bad_manifest_is_refused_with_its_line_before_anything(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("name: x\nmachines:\n  - name: web\n    flist: http://h/x.fl\n    memroy: 1G\n")
    run = zos(tmp_path, "deploy", "-f", str(app))
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: {app}:5: machines[0].memroy: unknown key 'memroy'")
    assert run.stdout == ""


def test_the_example_manifest_checks(tmp_path: Path) -> None:
    run = zos(tmp_path, "deploy", "--check", "-f", str(ROOT / "examples/hello/app.yaml"))
    assert run.returncode == 0, run.stderr
    assert "ok (1 machines, 1 disks)" in run.stdout


def test_no_key_and_no_grid_say_what_to_do(tmp_path: Path) -> None:
    run = zos(tmp_path, "ps")
    assert run.returncode == 1
    assert "no grid found" in run.stderr and "zos grid up" in run.stderr
    run = zos(tmp_path, "ps", "--nats", "nats://127.0.0.1:1")
    assert run.returncode == 1 and "no registry key for nats://127.0.0.1:1" in run.stderr
    assert "--registry-key HEX" in run.stderr
    key = ["--registry-key", "ab" * 32]
    run = zos(tmp_path, "ps", "--nats", "nats://127.0.0.1:1", "--registry-key", "nothex")
    assert run.returncode == 1 and "registry key: public key: not hex" in run.stderr
    run = zos(tmp_path, "ps", "--nats", "nats://127.0.0.1:1", *key)
    assert run.returncode == 1 and "no key: create one with `zos key new`" in run.stderr
    run = zos(tmp_path, "grid", "status")
    assert run.returncode == 3 and "no grid in" in run.stderr
    assert zos(tmp_path, "key", "new", "--key-file", str(tmp_path / "key.json")).returncode == 0
    run = zos(tmp_path, "nodes", "--nats", "nats://127.0.0.1:1", *key)
    assert run.returncode == 1
    assert "cannot reach the grid at nats://127.0.0.1:1" in run.stderr
    assert "`zos grid up` starts a local one" in run.stderr
