"""Hosting the services: one service per process (``upm service NAME``), all of them under
``upm up`` with an embedded nats-server, and ``upm down`` to stop what ``up`` started.

Where to find NATS: ``--nats URL``, else ``NATS_URL``, else the state file ``upm up`` wrote in
the data folder (``./.upm`` by default, ``UPM_DATA`` or ``--data``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import nats
from nats.aio.client import Client as NATS

from events.store import EventStore
from projections.projector import Projector
from services import auditor, emulators, executor, preflight, processes, verifier
from services.errors import ConfigError, NotRunning
from services.executor.config import ENV_VAR as EXECUTOR_CONFIG_ENV
from services.gateway import Gateway
from services.natsserver import EmbeddedNats
from services.planner import service as planner
from services.runtime import Runner, ServiceSpec
from services.tls import Pki, ensure_pki
from services.verifier import config as verifier_config
from services.verifier.drift import DriftLoop


class Hosted(Protocol):
    """Anything ``upm service`` can run: it sets ``ready`` once it is serving."""

    async def run(self, *, ready: anyio.Event | None = None) -> None: ...


PIPELINE: dict[str, Callable[[], ServiceSpec]] = {
    "planner": planner.spec,
    "preflight": preflight.spec,
    "executor": executor.spec,
    "verifier": verifier.spec,
    "auditor": auditor.spec,
}


def _pipeline(make: Callable[[], ServiceSpec]) -> Callable[[NATS], Hosted]:
    return lambda nc: Runner(nc, make())


class Together:
    """Several hosted parts of one service on one connection (e.g. its consumer and its commands)."""

    def __init__(self, *parts: Hosted) -> None:
        self.parts = parts

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        async with anyio.create_task_group() as tg:
            for part in self.parts:
                started = anyio.Event()
                tg.start_soon(functools.partial(part.run, ready=started))
                await started.wait()
            if ready is not None:
                ready.set()


def _auditor(nc: NATS) -> Hosted:
    return Together(Runner(nc, auditor.spec()), auditor.Witness(nc, data_dir()))


def _projector(nc: NATS) -> Hosted:
    return Projector(nc, data_dir() / "projections")


def _executor(nc: NATS) -> Hosted:
    return Together(Runner(nc, executor.spec()), executor.CommandService(nc))


def _drift(nc: NATS) -> Hosted:
    return DriftLoop(nc, verifier_config.load().drift)


HOSTED: dict[str, Callable[[NATS], Hosted]] = {
    "gateway": Gateway,
    **{name: _pipeline(make) for name, make in PIPELINE.items()},
    "preflight": preflight.Host,  # checks, plus the approve/deny commands and the window release loop
    "executor": _executor,  # plans and rollbacks, plus the resume/rollback/cancel commands
    "auditor": _auditor,  # closes changes; its witness signs log heads and publishes evidence
    "drift": _drift,
    "projector": _projector,  # DuckDB projections, and SQL over the bus
}
SERVICE_NAMES = tuple(HOSTED)
STATE_FILE = "state.json"
TLS_ENV = "UPM_TLS_DIR"


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("UPM_DATA") or ".upm").resolve()


def resolve_url(explicit: str | None = None, data: str | None = None) -> str:
    """The NATS URL to use (see the module docstring for the order)."""
    if explicit:
        return explicit
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    state = read_state(data_dir(data))
    if state is None:
        raise NotRunning(
            f"no UPM is running for {data_dir(data)}: start one with `upm up`, "
            "or point at a server with --nats URL / NATS_URL"
        )
    return str(state["url"])


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); remove it and run `upm up` again") from exc
    return state if isinstance(state, dict) else None


def replicas() -> int:
    """Replicas of the event stream: 1 embedded, 3 in a cluster (``UPM_REPLICAS``)."""
    raw = os.environ.get("UPM_REPLICAS", "1")
    if raw not in ("1", "3", "5"):
        raise ConfigError(f"UPM_REPLICAS={raw!r}: use 1 (single server) or 3 / 5 (a JetStream cluster)")
    return int(raw)


def tls_context(service: bool, data: str | None = None) -> ssl.SSLContext | None:
    """The client certificate to connect with: ``UPM_TLS_DIR``, else the one ``upm up --tls``
    made for this data folder; ``None`` when TLS is off."""
    folder = os.environ.get(TLS_ENV)
    if folder is None:
        state = read_state(data_dir(data))
        folder = str(state["tls_dir"]) if state and state.get("tls_dir") else None
    return Pki(Path(folder)).client_context("services" if service else "cli") if folder else None


async def connect(url: str, *, service: bool = False, data: str | None = None) -> NATS:
    """Connect to NATS. A service reconnects for ever; a CLI call fails fast with a clear error."""
    attempts = -1 if service else 1
    try:
        return await nats.connect(
            url, connect_timeout=5, max_reconnect_attempts=attempts, reconnect_time_wait=0.5 if service else 0.1,
            tls=tls_context(service, data),
        )
    except (OSError, nats.errors.Error) as exc:
        raise NotRunning(f"cannot connect to NATS at {url}: {exc}. Is `upm up` running?") from exc


async def serve(nc: NATS, names: tuple[str, ...], *, ready: Callable[[str], None] | None = None) -> None:
    """Run the named services on ``nc`` until cancelled."""
    await EventStore(nc).ensure_stream(replicas())
    async with anyio.create_task_group() as tg:
        for name in names:
            event = anyio.Event()
            tg.start_soon(functools.partial(HOSTED[name](nc).run, ready=event))
            await event.wait()
            if ready is not None:
                ready(name)


def run_service_process(names: tuple[str, ...], url: str, ready_dir: Path | None) -> None:
    """The body of ``upm service``: run until SIGTERM or SIGINT."""
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        raise ConfigError(f"unknown service {', '.join(unknown)}: choose from {', '.join(SERVICE_NAMES)}")

    def mark(name: str) -> None:
        if ready_dir is not None:
            ready_dir.mkdir(parents=True, exist_ok=True)
            (ready_dir / f"{name}.ready").write_text(str(os.getpid()))

    async def main() -> None:
        nc = await connect(url, service=True)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(serve, nc, names, ready=mark))
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        break
        finally:
            with anyio.CancelScope(shield=True):
                await nc.drain()

    anyio.run(main)


def up(
    folder: Path,
    *,
    external_url: str | None = None,
    timeout: float = 30.0,
    extras: tuple[str, ...] = (),
    aws_endpoint: str | None = None,
    postgres_dsn: str | None = None,
    tls: bool = False,
) -> dict[str, Any]:
    """Start nats-server (unless ``external_url``), the targets of ``extras`` (``aws``: a moto
    server, ``postgres``: an embedded PostgreSQL; ``aws_endpoint``/``postgres_dsn`` use existing
    ones instead) and one process per service; wait until ready.

    With ``tls`` the embedded server requires client certificates from a CA made under
    ``<folder>/tls``; services connect as ``services``, the CLI as ``cli`` (``UPM_TLS_DIR``).

    Services learn where the targets are from environment variables (``services/emulators.py``);
    the state file records the emulators' pids and endpoints (``targets``), never a secret.
    """
    existing = read_state(folder)
    if existing is not None and _alive(existing):
        raise ConfigError(f"UPM is already running for {folder} (see {folder / STATE_FILE}); `upm down` first")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    ready_dir = folder / "run"
    for stale in ready_dir.glob("*.ready"):
        stale.unlink()
    pids: dict[str, int] = {}
    state: dict[str, Any] = {"pids": pids, "data": str(folder)}
    targets = emulators.start(folder, extras, aws_endpoint=aws_endpoint, postgres_dsn=postgres_dsn)
    state["targets"] = targets.state()
    _write_state(folder, state)
    pki = ensure_pki(folder / "tls", ("services", "cli")) if tls else None
    if pki is not None:
        state["tls_dir"] = str(pki.folder)
    if external_url is None:
        server = EmbeddedNats(folder, log_file=logs / "nats-server.log", tls=pki)
        url = server.start(detach=True)
        assert server.process is not None
        pids["nats-server"] = server.process.pid
    else:
        url = external_url
    state = {"url": url, **state}
    _write_state(folder, state)
    executor_config = _executor_config(folder, targets)
    for name in SERVICE_NAMES:
        env = os.environ | targets.service_env(name) | ({TLS_ENV: str(pki.folder)} if pki is not None else {})
        if name == "executor" and executor_config is not None:
            env[EXECUTOR_CONFIG_ENV] = str(executor_config)
        with (logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "service", name, "--nats", url, "--ready-dir", str(ready_dir),
                 "--data", str(folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        pids[name] = proc.pid
        _write_state(folder, state)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [n for n in SERVICE_NAMES if not (ready_dir / f"{n}.ready").exists()]
        if not missing:
            return state
        dead = [n for n in missing if not processes.alive(pids[n])]
        if dead:
            down(folder)
            raise ConfigError(f"service {', '.join(dead)} exited during start-up; see {logs}")
        time.sleep(0.05)
    down(folder)
    raise ConfigError(f"services not ready within {timeout}s; see {logs}")


def _executor_config(folder: Path, targets: emulators.Targets) -> Path | None:
    """With targets and no ``UPM_EXECUTOR_CONFIG`` of the operator's, a policy naming their brokers."""
    if (targets.aws is None and targets.postgres is None) or os.environ.get(EXECUTOR_CONFIG_ENV):
        return None
    brokers = {"local": "none"} | ({"aws": "sts"} if targets.aws else {}) | (
        {"postgres": "postgres"} if targets.postgres else {})
    path = folder / "executor.json"
    path.write_text(json.dumps({"credentials": {"brokers": brokers}}, indent=2))
    return path


def down(folder: Path, timeout: float = 10.0) -> list[str]:
    """Stop everything ``up`` started for ``folder`` (services, nats-server, then the emulators);
    return what was stopped."""
    state = read_state(folder)
    if state is None:
        return []
    pids: dict[str, int] = {k: int(v) for k, v in state.get("pids", {}).items()}
    order = [n for n in pids if n != "nats-server"] + (["nats-server"] if "nats-server" in pids else [])
    stopped = []
    for name in order:
        if processes.stop(pids[name], signal.SIGTERM, timeout):
            stopped.append(name)
    stopped += emulators.stop(state.get("targets") or {}, timeout)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    path = folder / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


def _alive(state: dict[str, Any]) -> bool:
    return any(processes.alive(int(pid)) for pid in state.get("pids", {}).values())
