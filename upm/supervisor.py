"""The supervisor ``upm up`` leaves behind: one small detached process that starts nats-server
and every service, restarts whichever dies, and stops them all when ``upm down`` asks.

``upm up`` starts ``python -m upm.supervisor`` with its :class:`Plan` as JSON on standard
input (the services' environments never touch the disk), and records its pid in the state file.
The supervisor:

* starts the embedded nats-server (unless the plan names an external URL), or with ``cluster``
  that many forming one JetStream cluster (``nats-server-1`` …), and keeps each one's ports and
  data folder for every restart, so the services' connections come back by themselves;
* starts ``replicas`` processes per service (``executor``, ``executor.2`` …: they share the
  service's durable consumer), each writing to ``<data>/logs/<process>.log``;
* polls them; one that exited is started again after the :mod:`services.common.retry` policy's delay
  (exponential, with jitter; a process that ran for ``stable_after_s`` starts from the first
  delay again), and each restart is counted in the state file (``restarts``: count, last exit
  code, when) and logged as one JSON line in ``<data>/logs/supervisor.log``;
* on SIGTERM (what ``upm down`` sends) stops the services (SIGTERM, then SIGKILL after a
  timeout), then nats-server, and exits 0.

:func:`restart_due` decides when a dead child starts again; :class:`Supervisor` is the shell.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from services.common import logs, metrics
from services.common.errors import ServerStartFailed
from services.common.retry import RetryPolicy
from services.common.statefile import read_state, write_state
from upm import processes
from upm.natsserver import EmbeddedCluster, EmbeddedNats, private_log

log = logging.getLogger("upm.supervisor")

NATS = "nats-server"
POLL_S = 0.1
POLICY = RetryPolicy(initial_s=0.25, backoff=2.0, maximum_s=15.0, jitter=0.3, stable_after_s=30.0)


class ServicePlan(msgspec.Struct, frozen=True):
    """One service process: its name, the services it hosts (``hosts``; none: the one named ``name``), its
    whole environment, its umask, which copy it is."""

    name: str
    env: dict[str, str]
    umask: int = 0o077  # -1: the supervisor's own (the operator's)
    instance: int = 1  # replicas of a service share its durable consumer; each is a process
    hosts: tuple[str, ...] = ()

    @property
    def process(self) -> str:
        """The process's name in its log's: ``executor``, ``executor.2``, ``services`` …"""
        return process_name(self.name, self.instance)

    @property
    def services(self) -> tuple[str, ...]:
        return self.hosts or (self.name,)


def process_name(service: str, instance: int) -> str:
    return service if instance == 1 else f"{service}.{instance}"


def ready_dir(folder: Path, instance: int) -> Path:
    """Where a service process marks itself ready (``upm service --ready-dir``): ``<data>/run``, or
    ``<data>/run/<instance>`` for a further copy."""
    return folder / "run" if instance == 1 else folder / "run" / str(instance)


def is_nats(name: str) -> bool:
    """Whether a supervised process is a nats-server (``nats-server``, or ``nats-server-<i>`` of a cluster)."""
    return name == NATS or name.startswith(f"{NATS}-")


class Plan(msgspec.Struct, frozen=True):
    """What the supervisor runs for one data folder."""

    folder: str
    services: tuple[ServicePlan, ...]
    python: str = sys.executable
    external_url: str | None = None  # use this server instead of starting one
    cluster: int = 0  # start this many servers forming a JetStream cluster instead of one
    tls_dir: str | None = None  # the embedded server requires client certificates from this CA
    authorization: str = ""  # its users and permissions (upm.natsauth), with an access file
    stop_timeout_s: float = 10.0

    @property
    def data(self) -> Path:
        return Path(self.folder)


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    attempt: int = 0  # consecutive failed runs
    restart_at: float | None = None  # when it is due again, once it died
    last_exit: int | None = None
    restarts: int = 0
    hosts: tuple[str, ...] = ()  # the services it runs, as the state file names them (none: itself)


def restart_due(child: Child, now: float, draw: float, policy: RetryPolicy = POLICY) -> float | None:
    """When a child whose process exited may start again (its attempt count advanced), or
    ``None`` when its process is still running."""
    if child.process is None or child.process.poll() is None:
        return None
    child.last_exit = child.process.returncode
    child.attempt = policy.next_attempt(child.attempt, now - child.started_at)
    return now + policy.delay(child.attempt, draw)


@dataclass
class Supervisor:
    plan: Plan
    policy: RetryPolicy = POLICY
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    url: str = ""
    metrics: str | None = None  # the URL of its /metrics endpoint

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        folder = self.plan.data
        nats = None if self.plan.external_url else self._nats()
        if nats is not None:
            try:
                self.url = nats.start(detach=True)
            except ServerStartFailed as exc:
                log.error("nats-server did not start: %s", exc)
                return 1
            nodes = nats.nodes if isinstance(nats, EmbeddedCluster) else [nats]
            for i, node in enumerate(nodes, 1):
                assert node.process is not None
                name = f"{NATS}-{i}" if isinstance(nats, EmbeddedCluster) else NATS
                self.children.append(Child(name, functools.partial(self._restart_nats, node), node.process,
                                           time.monotonic()))
            self._write_state()
            if self.plan.authorization and self.plan.tls_dir:
                self._create_stream()
        else:
            assert self.plan.external_url is not None
            self.url = self.plan.external_url
        for service in self.plan.services:
            child = Child(service.process, self._service_spawner(service, folder),
                          hosts=tuple(process_name(name, service.instance) for name in service.services))
            self._start(child)
            self.children.append(child)
        self.metrics = metrics.serve_aggregate()  # every process's samples, summed (services/common/metrics.py)
        self._write_state()
        log.info("supervising %s", ", ".join(c.name for c in self.children),
                 extra={"fields": {"url": self.url, "pid": os.getpid(), "metrics": self.metrics}})
        while not self.stopping:
            self._round(time.monotonic())
            time.sleep(POLL_S)
        self._stop_all()
        return 0

    def _round(self, now: float) -> None:
        changed = False
        for child in self.children:
            if child.restart_at is None:
                child.restart_at = restart_due(child, now, random.random(), self.policy)
                if child.restart_at is not None and child.process is not None:
                    metrics.process_gone(child.process.pid)
            elif now >= child.restart_at and not self.stopping:
                self._restart(child, now)
                changed = True
        if changed:
            self._write_state()

    def _restart(self, child: Child, now: float) -> None:
        ran = now - child.started_at
        try:
            self._start(child)
        except (OSError, ServerStartFailed) as exc:  # counted as one more failed run
            log.error("%s did not start again: %s", child.name, exc)
            child.attempt += 1
            child.restart_at = now + self.policy.delay(child.attempt, random.random())
            return
        child.restarts += 1
        metrics.RESTARTS.labels(child.name).inc()
        assert child.process is not None
        log.warning("restarted %s", child.name, extra={"fields": {
            "event": "restart", "process": child.name, "services": list(child.hosts or (child.name,)),
            "count": child.restarts, "exit": child.last_exit, "ran_s": round(ran, 3), "attempt": child.attempt,
            "pid": child.process.pid}})

    def _start(self, child: Child) -> None:
        child.process = child.spawn()
        child.started_at = time.monotonic()
        child.restart_at = None

    def _nats(self) -> EmbeddedNats | EmbeddedCluster:
        from services.security.tls import Pki  # with TLS only: cryptography is no small import

        logs_dir = self.plan.data / "logs"
        pki = Pki(Path(self.plan.tls_dir)) if self.plan.tls_dir else None
        if self.plan.cluster:
            return EmbeddedCluster(self.plan.data, self.plan.cluster, log_dir=logs_dir, tls=pki,
                                   authorization=self.plan.authorization)
        return EmbeddedNats(self.plan.data, log_file=logs_dir / f"{NATS}.log", tls=pki,
                            authorization=self.plan.authorization)

    @staticmethod
    def _restart_nats(server: EmbeddedNats) -> subprocess.Popen[bytes]:
        server.start(detach=True)  # the port of its first start, the same store
        assert server.process is not None
        return server.process

    def _service_spawner(self, service: ServicePlan, folder: Path) -> Callable[[], subprocess.Popen[bytes]]:
        argv = [self.plan.python, "-m", "upm.cli", "service", *service.services, "--nats", self.url,
                "--ready-dir", str(ready_dir(folder, service.instance)), "--data", str(folder)]

        def spawn() -> subprocess.Popen[bytes]:
            with private_log(folder / "logs" / f"{service.process}.log") as out:
                return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=service.env, umask=service.umask)

        return spawn

    def _create_stream(self) -> None:
        """With an access file the services may not create the event stream: create it as ``upm-admin``."""
        import anyio

        from services.security.tls import Pki
        from upm.app import create_stream
        from upm.natsauth import ADMIN

        assert self.plan.tls_dir is not None
        anyio.run(create_stream, self.url, Pki(Path(self.plan.tls_dir)).client_context(ADMIN))

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        """Services first (they drain in parallel), nats-server last."""
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        services = [c for c in running if not is_nats(c.name)]
        for child in services:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        for child in (*services, *(c for c in running if is_nats(c.name))):
            assert child.process is not None
            processes.stop(child.process.pid, signal.SIGTERM, self.plan.stop_timeout_s)
            child.process.poll()
        log.info("stopped %s", ", ".join(c.name for c in running) or "nothing")

    def _write_state(self) -> None:
        state = read_state(self.plan.data) or {}
        restarts = dict(state.get("restarts") or {})
        for child in self.children:
            if child.restarts:  # per service: a service restarts with the process hosting it
                for name in child.hosts or (child.name,):
                    restarts[name] = {"count": child.restarts, "last_exit": child.last_exit,
                                      "last_at": datetime.now(UTC).isoformat(timespec="seconds")}
        pids = {name: c.process.pid for c in self.children if c.process is not None for name in c.hosts or (c.name,)}
        hosting = {c.name: list(c.hosts) for c in self.children if c.hosts}
        state |= {"url": self.url, "pids": pids, "processes": hosting, "restarts": restarts,
                  "supervisor": os.getpid(), "metrics": self.metrics}
        write_state(self.plan.data, state)


def main() -> int:
    """``python -m upm.supervisor`` (started by ``upm up``): the plan comes on standard input."""
    logs.configure("supervisor")
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=Plan)
    try:
        return Supervisor(plan).run()
    except Exception:
        log.exception("the supervisor failed; stop what is left with `upm down --data %s`", plan.folder)
        return 1


if __name__ == "__main__":
    sys.exit(main())
