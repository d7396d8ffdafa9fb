"""Hosting the services: one service per process (``upm service NAME``), all of them under
``upm up`` with an embedded nats-server, and ``upm down`` to stop what ``up`` started.

Where to find NATS: ``--nats URL``, else ``NATS_URL``, else the state file ``upm up`` wrote in
the data folder (``./.upm`` by default, ``UPM_DATA`` or ``--data``). Each service connects as
``upm-<service>``, each CLI call as its caller (:func:`services.security.access.whoami`); with TLS each
uses its own client certificate, and with an access file the server enforces what each may do
(:mod:`upm.natsauth`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
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
import msgspec
from nats.aio.client import Client as NATS

from projections.errors import ProjectionUnavailable
from projections.limits import memory_limit
from services.common import cluster, logs, metrics, retry, tracing
from services.common.connection import (
    SECURITY_ACCESS,
    SECURITY_OPEN,
    SECURITY_TLS,
    TLS_ENV,
    close,
    connect,
    ensure_stream,
    open_as,
)
from services.common.errors import ConfigError, ServerStartFailed
from services.common.runtime import Runner, ServiceSpec
from services.common.settings import INSTANCE_ENV, Settings
from services.common.statefile import STATE_FILE, read_state, write_state
from services.security.access import ASKER, Access, service_identity
from services.security.access import ENV_VAR as ACCESS_ENV
from services.security.access import load as load_access
from services.security.scope import load_scope
from services.security.tls import Pki, ensure_pki
from upm import emulators, health, instances, processes, supervisor
from upm.natsserver import private_log

nats_log = logging.getLogger("upm.nats")

# Each hosted service's modules are imported by its factory, when called: `upm service planner` loads the
# planner's stack and no other, and the supervisor none (a process per service pays only for its own).


class Hosted(Protocol):
    """Anything ``upm service`` can run: it sets ``ready`` once it is serving."""

    async def run(self, *, ready: anyio.Event | None = None) -> None: ...


def _lazy(reference: str) -> Callable[..., Any]:
    """``"module:attribute"`` as a callable that imports its module on the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        module, attribute = reference.split(":")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    return call


PIPELINE: dict[str, Callable[[], ServiceSpec]] = {
    "planner": _lazy("services.planner.service:spec"),
    "preflight": _lazy("services.preflight.service:spec"),
    "executor": _lazy("services.executor:spec"),
    "verifier": _lazy("services.verifier.service:spec"),
    "auditor": _lazy("services.auditor.service:spec"),
}


def _planner(nc: NATS, settings: Settings) -> Hosted:
    from services.planner import service as planner

    return Runner(nc, planner.spec(scope=load_scope(data=settings.data)))


def _verifier(nc: NATS, settings: Settings) -> Hosted:
    from services import verifier

    return Runner(nc, verifier.spec())


def _preflight(nc: NATS, settings: Settings) -> Hosted:
    from services import preflight

    return preflight.Host(nc, scope=load_scope(data=settings.data))


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


def _auditor(nc: NATS, settings: Settings) -> Hosted:
    from services.auditor import service as auditor

    witness = auditor.Witness(nc, settings.data)
    responder = health.Responder(nc, witness.witnessed(), services=SERVICE_NAMES, durables=tuple(PIPELINE),
                                 access=load_access())
    return Together(Runner(nc, auditor.spec()), witness, responder)


def _projector(nc: NATS, settings: Settings) -> Hosted:
    from projections.projector import Projector

    copy = settings.instance  # each copy its own DuckDB files (one writer per file)
    return Projector(nc, settings.data / ("projections" if copy == "1" else f"projections-{copy}"))


def _executor(nc: NATS, settings: Settings) -> Hosted:
    from services import executor

    return Together(Runner(nc, executor.spec(scope=load_scope(data=settings.data))), executor.CommandService(nc))


def _gateway(nc: NATS, settings: Settings) -> Hosted:
    from services.gateway.service import Gateway

    return Gateway(nc)


def _drift(nc: NATS, settings: Settings) -> Hosted:
    from services.verifier import config as verifier_config
    from services.verifier.drift import DriftLoop

    config = verifier_config.load()
    return DriftLoop(nc, config.drift, secrets=config.secrets.resolver())


HOSTED: dict[str, Callable[[NATS, Settings], Hosted]] = {  # each service's factory, given its process's settings
    "gateway": _gateway,
    "planner": _planner,
    "preflight": _preflight,  # checks, plus the approve/deny commands and the window release loop
    "executor": _executor,  # plans and rollbacks, plus the resume/rollback/cancel commands
    "verifier": _verifier,
    "auditor": _auditor,  # closes changes; its witness signs log heads and publishes evidence
    "drift": _drift,
    "projector": _projector,  # DuckDB projections, and SQL over the bus
}
SERVICE_NAMES = tuple(HOSTED)


def _console(nc: NATS, settings: Settings) -> Hosted:
    from projections.console.server import Hosted as Console

    return Console(nc, settings.data)


OWN_PROCESS = ("preflight", "executor", "projector")
"""Under ``upm up`` each of these runs in a process of its own: the executor runs the operator's commands (with
the operator's umask, and the targets' credentials in its environment); the projector is the one writer of its
DuckDB files and the busiest reader; pre-flight's Rego engine (C++, through ctypes) fragments a shared heap
(measured: a process hosting it with the others grew by about 33 MiB per 1,000 changes, alone it stays flat).
The other services share one process, ``services``: one interpreter and one copy of the libraries instead of
five (about 185 MiB less), each service still its own NATS identity, its own durable consumer and its own
health beacon; ``upm up --process-per-service`` gives each its own process."""
SHARED_PROCESS = "services"


def layout(process_per_service: bool = False) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The processes ``upm up`` runs, each with the services it hosts."""
    if process_per_service:
        return tuple((name, (name,)) for name in SERVICE_NAMES)
    shared = tuple(name for name in SERVICE_NAMES if name not in OWN_PROCESS)
    return ((SHARED_PROCESS, shared), *((name, (name,)) for name in OWN_PROCESS))


OPTIONAL: dict[str, Callable[[NATS, Settings], Hosted]] = {
    "console": _console,  # the web console (`upm up --console`): as upm-serve, on UPM_CONSOLE_HOST:PORT
}
CONSOLE = "console"
PROCESS_NAMES = (*SERVICE_NAMES, *OPTIONAL)  # what `upm service NAME` runs


async def serve(nc: NATS, names: tuple[str, ...], settings: Settings, *,
                ready: Callable[[str], None] | None = None) -> None:
    """Run the named services on ``nc`` until cancelled (once the event stream is there, at the replicas of
    :func:`services.common.cluster.replicas`; a cluster still electing its leaders is waited for)."""
    if any(name not in OPTIONAL for name in names):  # the console only asks: it needs no stream rights
        await retry.keep_running("ensuring the event stream", functools.partial(ensure_stream, nc))
    async with anyio.create_task_group() as tg:
        for name in names:
            with logs.serving(name):  # its tasks' records name it, in a process hosting several
                event = anyio.Event()
                tg.start_soon(functools.partial((HOSTED | OPTIONAL)[name](nc, settings).run, ready=event))
                await event.wait()
                if name not in OPTIONAL:  # the console is no service of the pipeline: `upm health` does not ping it
                    beacon = anyio.Event()  # answers `upm health`'s ping (upm/health.py)
                    tg.start_soon(functools.partial(health.Beacon(nc, name).run, ready=beacon))
                    await beacon.wait()
            if ready is not None:
                ready(name)


def run_service_process(names: tuple[str, ...], url: str, ready_dir: Path | None, settings: Settings) -> None:
    """The body of ``upm service``: run until SIGTERM or SIGINT."""
    unknown = [n for n in names if n not in SERVICE_NAMES and n not in OPTIONAL]
    if unknown:
        raise ConfigError(f"unknown service {', '.join(unknown)}: choose from {', '.join((*SERVICE_NAMES, *OPTIONAL))}")

    logs.configure("+".join(names))
    tracing.configure("+".join(names))

    def mark(name: str) -> None:
        if ready_dir is not None:
            ready_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            marker = ready_dir / f"{name}.ready"
            marker.unlink(missing_ok=True)
            with private_log(marker) as out:
                out.write(str(os.getpid()).encode())

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            connections = []
            for name in names:  # each service as its own identity, so the server applies its permissions
                nc = await connect(url, service=True, identity=identity_of(name))
                stack.push_async_callback(close, nc)
                connections.append(nc)
            async with anyio.create_task_group() as tg:
                for name, nc in zip(names, connections, strict=True):
                    tg.start_soon(functools.partial(serve, nc, (name,), settings, ready=mark))
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        break

    anyio.run(main)


def identity_of(name: str) -> str:
    """The identity a hosted process connects as: ``upm-<service>``; the console asks as ``upm-serve``."""
    return ASKER if name == CONSOLE else service_identity(name)


def _console_env(folder: Path, acl: Access | None, port: int) -> dict[str, str]:
    """Where the console of `upm up --console` listens (loopback; ``port`` 0: a free one chosen now, so a
    restart finds the same), its settings checked first: a bad tokens file stops `upm up` with the reason."""
    from projections.console import server
    from projections.errors import AccessDenied

    try:
        server.settings(folder, "127.0.0.1", rules=acl or Access.open())
    except AccessDenied as err:
        raise ConfigError(f"--console: {err}") from None
    if not port:
        probe = server.bind("127.0.0.1", 0)
        port = int(probe.getsockname()[1])
        probe.close()
    return {server.HOST_ENV: "127.0.0.1", server.PORT_ENV: str(port)}


CONFIG_VARS = ("UPM_PREFLIGHT_CONFIG", "UPM_VERIFIER_CONFIG", "UPM_EXECUTOR_CONFIG", "UPM_PLANNER_CONFIG",
               "UPM_SCOPE_CONFIG")
"""The configuration files services read, by environment variable (recorded in the state file)."""


def up(
    folder: Path,
    *,
    external_url: str | None = None,
    timeout: float = 30.0,
    extras: tuple[str, ...] = (),
    aws_endpoint: str | None = None,
    postgres_dsn: str | None = None,
    tls: bool = False,
    access: Path | None = None,
    cluster_size: int = 0,
    copies: int = 1,
    approvers: tuple[str, ...] = (),
    preflight_config: Path | None = None,
    console: bool = False,
    console_port: int = 0,
    process_per_service: bool = False,
    aws_front: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Start nats-server (unless ``external_url``; ``cluster_size`` servers forming a JetStream
    cluster, on loopback, with every stream and store at ``UPM_REPLICAS``, 3 unless set), the
    targets of ``extras`` (``aws``: a moto server, ``postgres``: an embedded PostgreSQL;
    ``aws_endpoint``/``postgres_dsn`` use existing ones instead) and ``copies`` processes per
    service (sharing its durable consumer); wait until ready.

    With ``tls`` the embedded server requires client certificates from a CA made under
    ``<folder>/tls``; each service connects with its own (``upm-<service>``), the CLI with ``cli``
    (``UPM_TLS_DIR``).
    With ``access`` (an access file; implies ``tls``) it is copied to ``<folder>``, every person in it and
    every service gets its own certificate, and the server enforces each identity's permissions
    (:mod:`upm.natsauth`); services get ``UPM_ACCESS``. ``state["security"]`` says which.

    ``approvers`` become members of ``platform-owners`` in every tenant (a pre-flight configuration
    written to ``<folder>/preflight.json``); ``preflight_config`` is the operator's own file (else
    ``UPM_PREFLIGHT_CONFIG``). Either reaches the services as ``UPM_PREFLIGHT_CONFIG``.

    The services run in the processes of :func:`layout` (``process_per_service``: one each).

    ``console`` also runs the web console (:mod:`projections.console`) as one more supervised process on
    loopback (``console_port``, else a free port); its URL is ``state["console"]``. ``aws_front`` (given
    moto's endpoint, the one services use) puts something in front of the moto server it starts.

    Services learn where the targets are from environment variables (``upm/emulators.py``);
    the state file records the emulators' pids and endpoints (``targets``), never a secret.
    """
    from services.executor.config import ENV_VAR as EXECUTOR_CONFIG_ENV
    from services.preflight.config import ENV_VAR as PREFLIGHT_CONFIG_ENV
    from services.security.secrets import ENV_PREFIX as SECRET_ENV
    from upm import natsauth

    existing = read_state(folder)
    if existing is not None and _alive(existing):
        raise ConfigError(f"UPM is already running for {folder} (see {folder / STATE_FILE}); `upm down` first")
    acl = load_access(access) if access is not None else None
    if cluster_size and cluster_size < 3:
        raise ConfigError(f"--cluster {cluster_size}: a JetStream cluster needs at least 3 servers (to keep a quorum "
                          "when one is lost); use --cluster 3, or leave --cluster out for one server")
    if cluster_size and external_url is not None:
        raise ConfigError("--cluster starts a cluster of embedded servers; with --nats URL / NATS_URL UPM uses your "
                          f"servers instead (list them all, comma-separated, and set {cluster.REPLICAS_ENV}): "
                          "give one of them")
    count = cluster.replicas_of(os.environ.get(cluster.REPLICAS_ENV, "3" if cluster_size else "1"))
    if count > max(cluster_size, 1) and external_url is None:
        raise ConfigError(f"{cluster.REPLICAS_ENV}={count} needs a cluster of at least {count} servers: use "
                          f"--cluster {count}, or point NATS_URL at your cluster")
    if acl is not None and external_url is not None:
        raise ConfigError("--access configures the users of the embedded nats-server; with --nats URL configure "
                          "your server's users yourself (upm.natsauth.authorization_block), or drop --nats")
    try:
        memory_limit()  # a cap that is no size stops `upm up`, not the projector at every restart
    except ProjectionUnavailable as err:
        raise ConfigError(str(err)) from None
    where = _console_env(folder, acl, console_port) if console else None  # a bad tokens file: before anything starts
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # an existing folder too: it holds keys, state and the log
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} as the data folder: {exc.strerror or exc}; give --data a folder "
                          "you own (it is created if missing)") from None
    logs = folder / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    for stale in (folder / "run").glob("**/*.ready"):
        stale.unlink()
    state: dict[str, Any] = {"pids": {}, "data": str(folder), "security": SECURITY_TLS if tls else SECURITY_OPEN}
    gates = _preflight_config(folder, approvers, preflight_config)
    targets = emulators.start(folder, extras, aws_endpoint=aws_endpoint, postgres_dsn=postgres_dsn, aws_front=aws_front)
    state["targets"] = targets.state()
    write_state(folder, state)
    executor_config = _executor_config(folder, targets)
    service_env = {k: v for k, v in os.environ.items() if k not in (ACCESS_ENV, INSTANCE_ENV)}
    service_env[metrics.MULTIPROC_ENV] = str(metrics.prepare_dir(folder))  # the supervisor serves their sum
    if cluster_size:
        service_env.setdefault(cluster.REPLICAS_ENV, "3")
    if gates is not None:
        service_env[PREFLIGHT_CONFIG_ENV] = str(gates)
        state |= {"preflight_config": str(gates), "approvers": list(approvers)}
    # what the services were started with, for whoever plays against this instance (`upm conformance
    # --data`): each configuration file by its variable, and the names (never the values) of the secrets
    state["config"] = {k: v for k, v in sorted(service_env.items()) if k in CONFIG_VARS} | (
        {EXECUTOR_CONFIG_ENV: str(executor_config)} if executor_config is not None else {})
    state["secret_names"] = sorted(k.removeprefix(SECRET_ENV) for k in service_env if k.startswith(SECRET_ENV))
    authorization = ""
    if acl is not None and access is not None:
        copy = _copy_access(access, folder)
        state |= {"access": str(copy), "access_source": str(access.resolve()), "security": SECURITY_ACCESS}
        service_env[ACCESS_ENV] = str(copy)
        users = natsauth.users(acl, SERVICE_NAMES, outputs_bucket=_outputs_bucket(executor_config))
        authorization = natsauth.authorization_block(users)
        pki: Pki | None = ensure_pki(folder / "tls", (*acl.principals(), *identities()))
    else:
        # each service its own certificate; the CLI shares `cli` (without an access file, names are not checked)
        pki = ensure_pki(folder / "tls", ("services", "cli", *identities())) if tls else None
    if pki is not None:
        state["tls_dir"] = str(pki.folder)
        service_env[TLS_ENV] = str(pki.folder)
    write_state(folder, state)
    services = []
    if where is not None:
        state["console"] = f"http://{where['UPM_CONSOLE_HOST']}:{where['UPM_CONSOLE_PORT']}/"
        services.append(supervisor.ServicePlan(name=CONSOLE, env=service_env | where))
        write_state(folder, state)
    for instance in range(1, copies + 1):
        for process, hosted in layout(process_per_service):
            env = service_env | targets.service_env(process) | ({INSTANCE_ENV: str(instance)} if instance > 1 else {})
            if process == "executor" and executor_config is not None:
                env[EXECUTOR_CONFIG_ENV] = str(executor_config)
            # the executor's umask shapes the resources it makes: the operator's own (-1: inherited)
            services.append(supervisor.ServicePlan(name=process, hosts=hosted, env=env,
                                                   umask=-1 if process == "executor" else 0o077, instance=instance))
    plan = supervisor.Plan(folder=str(folder), services=tuple(services), external_url=external_url,
                           cluster=cluster_size,
                           tls_dir=str(pki.folder) if pki is not None else None, authorization=authorization)
    started = _start_supervisor(folder, plan, service_env, timeout * (1 + copies) / 2)
    if started is None:
        down(folder)
        raise ServerStartFailed(f"the supervisor exited during start-up: {_last_line(logs / 'supervisor.log')}; "
                                f"see {logs}")
    instances.register(folder)
    return started


def _start_supervisor(
    folder: Path, plan: supervisor.Plan, env: dict[str, str], timeout: float
) -> dict[str, Any] | None:
    """Start the supervisor (detached; its plan on standard input) and wait until every service is
    ready; the state then, or ``None`` when the supervisor exited."""
    logs = folder / "logs"
    markers = {supervisor.process_name(name, s.instance): supervisor.ready_dir(folder, s.instance) / f"{name}.ready"
               for s in plan.services for name in s.services}
    with private_log(logs / "supervisor.log") as log:
        proc = subprocess.Popen([sys.executable, "-m", "upm.supervisor"], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(msgspec.json.encode(plan))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        state = read_state(folder) or {}
        missing = [n for n, marker in markers.items() if not marker.exists()]
        if state.get("supervisor") and not missing:
            return state
        dead = [n for n in missing if n in (state.get("restarts") or {})]
        if dead:
            down(folder)
            raise ConfigError(f"service {', '.join(dead)} exited during start-up; see {logs}")
        time.sleep(0.05)
    down(folder)
    raise ConfigError(f"services not ready within {timeout}s; see {logs}")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def identities() -> tuple[str, ...]:
    """The identities of UPM itself: ``upm-<service>`` for every service, ``upm-serve``, ``upm-admin``."""
    from upm import natsauth

    return (*(service_identity(n) for n in SERVICE_NAMES), natsauth.SERVE, natsauth.ADMIN)


def security_summary(state: dict[str, Any]) -> str:
    """One sentence on who may do what on this deployment."""
    mode = state.get("security", SECURITY_OPEN)
    if mode == SECURITY_ACCESS:
        return (f"secure: mTLS, and NATS lets each identity do only what {state.get('access_source')} allows "
                f"(certificates in {state.get('tls_dir')})")
    if mode == SECURITY_TLS:
        return (f"mTLS only: any holder of a certificate from {state.get('tls_dir')} may do anything, and "
                "identities are not checked; use --access FILE for roles")
    return ("OPEN: any local process can submit, approve and read everything, as anyone; "
            "use --access FILE for identities and roles enforced by NATS")


def _outputs_bucket(executor_config: Path | None) -> str:
    """The object-store bucket the executor keeps long step outputs in (its identity may write it)."""
    from services.executor.config import load_config as load_executor_config
    from services.executor.errors import ExecutorConfigInvalid

    try:
        return load_executor_config(executor_config).output.bucket
    except ExecutorConfigInvalid as exc:
        raise ConfigError(str(exc)) from exc


def _copy_access(source: Path, folder: Path) -> Path:
    """A private copy of the access file, so the server and the services read the same one."""
    copy = folder / f"access{'.json' if source.suffix == '.json' else '.yaml'}"
    copy.write_bytes(source.read_bytes())
    copy.chmod(0o600)
    return copy


async def create_stream(url: str, tls: ssl.SSLContext) -> None:
    """Create the event stream as ``upm-admin`` (services may not create it under an access file)."""
    from upm import natsauth

    nc = await open_as(url, natsauth.ADMIN, tls)
    try:
        await retry.keep_running("creating the event stream", functools.partial(ensure_stream, nc))
    finally:
        await nc.close()


APPROVER_GROUP = "platform-owners"  # the group the built-in approval lanes ask (policies/approvals.rego)


def _preflight_config(folder: Path, approvers: tuple[str, ...], explicit: Path | None) -> Path | None:
    """The pre-flight configuration the services get: the operator's (checked now, so a bad file stops
    ``up`` rather than every pre-flight), else one making ``approvers`` the approvers of every tenant."""
    from services.preflight.config import ENV_VAR as PREFLIGHT_CONFIG_ENV
    from services.preflight.config import load_config

    given = explicit or (Path(os.environ[PREFLIGHT_CONFIG_ENV]) if os.environ.get(PREFLIGHT_CONFIG_ENV)
                         else None)
    if given is not None and approvers:
        raise ConfigError(f"--approvers writes its own pre-flight configuration, and {given} is one already: add "
                          f"them to it under groups: {{'*': {{{APPROVER_GROUP}: [{', '.join(approvers)}]}}}}, or "
                          "leave one of the two out")
    if given is not None:
        load_config(given)  # PreflightConfigError (a ConfigError) says what is wrong in it
        return given.resolve()
    if not approvers:
        return None
    path = folder / "preflight.json"
    path.write_text(json.dumps({"groups": {"*": {APPROVER_GROUP: list(approvers)}}}, indent=2))
    return path


def _executor_config(folder: Path, targets: emulators.Targets) -> Path | None:
    """With targets and no ``UPM_EXECUTOR_CONFIG`` of the operator's, a policy naming their brokers."""
    from services.executor.config import ENV_VAR as EXECUTOR_CONFIG_ENV

    if (targets.aws is None and targets.postgres is None) or os.environ.get(EXECUTOR_CONFIG_ENV):
        return None
    brokers = {"local": "none"} | ({"aws": "sts"} if targets.aws else {}) | (
        {"postgres": "postgres"} if targets.postgres else {})
    path = folder / "executor.json"
    path.write_text(json.dumps({"credentials": {"brokers": brokers}}, indent=2))
    return path


def down(folder: Path, timeout: float = 10.0) -> list[str]:
    """Stop everything ``up`` started for ``folder``: the supervisor stops the services and
    nats-server (:mod:`upm.supervisor`); whatever still runs after it (a supervisor killed
    with SIGKILL leaves its processes behind) is stopped here; then the emulators. Return what
    was stopped."""
    state = read_state(folder)
    if state is None:
        return []
    running = {n for n, pid in state.get("pids", {}).items() if processes.alive(int(pid))}
    stopped: list[str] = []
    boss = state.get("supervisor")
    if boss and processes.stop(int(boss), signal.SIGTERM, timeout * 2 + 5):
        stopped.append("supervisor")
    state = read_state(folder) or state  # its last word: the pids it had when it stopped
    pids: dict[str, int] = {k: int(v) for k, v in state.get("pids", {}).items()}
    running |= {n for n in pids if processes.alive(pids[n])}
    leftover = {pids[n] for n in pids if not supervisor.is_nats(n) and processes.alive(pids[n])}  # a pid per process
    for pid in leftover:  # signal them all first: they drain in parallel
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in leftover:
        processes.stop(pid, signal.SIGTERM, timeout)
    for name in [n for n in pids if supervisor.is_nats(n)]:
        processes.stop(pids[name], signal.SIGTERM, timeout)
    stopped += sorted(running)
    stopped += emulators.stop(state.get("targets") or {}, timeout)
    (folder / STATE_FILE).unlink(missing_ok=True)
    instances.unregister(folder)
    return stopped


def is_running(folder: Path) -> bool:
    """Whether ``upm up`` runs for ``folder`` (its state file names a live process)."""
    state = read_state(folder)
    return state is not None and _alive(state)


def _alive(state: dict[str, Any]) -> bool:
    pids = [*state.get("pids", {}).values(), *([state["supervisor"]] if state.get("supervisor") else [])]
    return any(processes.alive(int(pid)) for pid in pids)
