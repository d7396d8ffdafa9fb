"""Ephemeral, per-change credentials for the executor's targets.

A :class:`CredentialsBroker` issues short-lived credentials scoped to one change's target and
revokes them when the change stops running. What it issues is split in two: what the step's
process needs (``env``: never argv, never an event) and what the log may hold (``ref``,
``expires_at``). Every value is also returned in ``secrets``, which the executor registers with
the guard's redactor, so it is masked in every output, event, log line and evidence file.

Brokers by kind:

- ``none`` (:class:`NoCredentials`): targets that need none (the local filesystem).
- ``token`` (:class:`LocalTokenBroker`): a random token with an expiry for local CLIs that
  authenticate with one; it keeps only the token's sha256 in its store folder, and
  :func:`check_local_token` is how a CLI checks what it was handed.

- ``sts`` (:class:`StsBroker`): per change and target, an IAM role ``upm-chg-…`` trusted only by
  the broker's own identity, allowed the services the aws provider drives, assumed with STS for
  ``ttl_s`` (clamped to STS's 900–3600 s); steps get ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``. Revoking puts a deny-everything policy on the
  role, which refuses the session at once, and tags it ``upm:revoked-at`` (epoch seconds). At most
  once per ``SWEEP_EVERY_S``, ``issue`` first sweeps (best effort) the ``upm-chg-`` roles no session
  can still use: revoked more than ``keep_s`` (``STS_MAX_S``) ago, or never revoked (a run that
  crashed and was not resumed, an issue that failed half-way) and created more than ``STS_MAX_S`` +
  ``keep_s`` ago, since a role is assumed once, when it is created, for at most ``STS_MAX_S``.
  Its own identity is the usual AWS environment of the executor process (``upm up --with aws``
  gives it the moto server's root user); the endpoint is ``UPM_AWS_ENDPOINT`` (none: real AWS).
- ``postgres`` (:class:`PostgresBroker`): per change and target, a login role ``upm_c_…`` with a
  random password, ``VALID UNTIL`` now + ``ttl_s``, member of ``upm_operator``, which the session
  acts as (``PGOPTIONS=-c role=upm_operator``) so that what it creates outlives it; revoking drops
  the role. Its own identity is the superuser DSN in ``UPM_POSTGRES_DSN`` (executor only).

A broker that cannot issue or revoke raises :class:`CredentialsUnavailable` (a
:class:`services.common.errors.UpmServiceError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio

from services.common.errors import ConfigError, UpmServiceError
from services.common.targets import (
    AWS_ENDPOINT,
    AWS_REGION,
    DEFAULT_REGION,
    PG_OPERATOR,
    POSTGRES_DSN,
    psql_dsn,
)

log = logging.getLogger(__name__)


class CredentialsUnavailable(UpmServiceError):
    """A broker could not issue or revoke credentials for a target (the message says why)."""


TOKEN_ENV = "UPM_LOCAL_TOKEN"
TOKEN_STORE_ENV = "UPM_LOCAL_TOKEN_STORE"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IssuedCredentials:
    """Credentials for one target of one change. Only ``ref`` and ``expires_at`` may be logged."""

    target: str
    kind: str
    ref: str
    expires_at: str
    env: Mapping[str, str] = dataclasses.field(repr=False)
    secrets: tuple[str, ...] = dataclasses.field(repr=False)


class CredentialsBroker(Protocol):
    """Issues and revokes short-lived credentials (see the module docstring)."""

    kind: str

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials | None:
        """Credentials for ``target`` valid ``ttl_s`` seconds, or ``None`` when it needs none."""
        ...

    async def revoke(self, ref: str) -> None:
        """Make ``ref``'s credentials unusable now (revoking twice is harmless)."""
        ...


class NoCredentials:
    """The broker of targets that need no credentials."""

    kind = "none"

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials | None:
        return None

    async def revoke(self, ref: str) -> None:
        return None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LocalTokenBroker:
    """Random tokens with an expiry; the store folder keeps one file per token (hash only)."""

    kind = "token"

    def __init__(self, store: Path) -> None:
        self.store = store

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials:
        try:
            self.store.mkdir(parents=True, exist_ok=True, mode=0o700)
            token = "upmtok_" + secrets.token_urlsafe(32)
            ref = f"token:{uuid.uuid4()}"
            expires = time.time() + ttl_s
            record = {"sha256": _digest(token), "tenant": tenant, "change_id": change_id, "target": target,
                      "expires": expires}
            path = self._path(ref)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
        except OSError as exc:
            raise CredentialsUnavailable(
                f"the token broker cannot write its store {self.store}: {exc}; fix credentials.token_store"
            ) from exc
        return IssuedCredentials(
            target=target,
            kind=self.kind,
            ref=ref,
            expires_at=_rfc3339(expires),
            env={TOKEN_ENV: token, TOKEN_STORE_ENV: str(self.store)},
            secrets=(token,),
        )

    async def revoke(self, ref: str) -> None:
        try:
            self._path(ref).unlink(missing_ok=True)
        except OSError as exc:
            raise CredentialsUnavailable(f"cannot revoke {ref} in {self.store}: {exc}") from exc

    def _path(self, ref: str) -> Path:
        return self.store / (ref.replace(":", "-") + ".json")


def check_local_token(store: Path, token: str, *, now: float | None = None) -> str | None:
    """The ref of the live (issued, unexpired, unrevoked) token ``token``, or ``None``."""
    want = _digest(token)
    moment = time.time() if now is None else now
    for path in sorted(store.glob("token-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if secrets.compare_digest(str(record.get("sha256", "")), want) and float(record["expires"]) > moment:
            return path.stem.replace("token-", "token:", 1)
    return None


_CHANGE_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*", "sqs:*", "dynamodb:*", "ec2:*", "sns:*", "ssm:*", "logs:*", "ecr:*"], "Resource": "*"}],
}
_REVOKED_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
STS_MIN_S, STS_MAX_S = 900, 3600
ROLE_PREFIX, REVOKED_AT_TAG = "upm-chg-", "upm:revoked-at"
SWEEP_EVERY_S, SWEEP_MAX_ROLES = 600.0, 50  # how often issue sweeps; how many old roles one sweep examines


def _short(tenant: str, change_id: str, target: str) -> str:
    return hashlib.sha256(f"{tenant}/{change_id}/{target}/{uuid.uuid4()}".encode()).hexdigest()[:16]


class StsBroker:
    """Per-change IAM roles assumed through STS for a short duration (see the module docstring)."""

    kind = "sts"

    def __init__(self, *, endpoint: str | None, region: str, keep_s: float = STS_MAX_S,
                 sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.endpoint = endpoint
        self.region = region
        self.keep_s = keep_s  # how long a revoked role is kept before a sweep deletes it
        self.sweep_every_s = sweep_every_s
        self._principal: str | None = None
        self._session: Any = None
        self._swept_at: float | None = None  # time.monotonic() of this instance's last sweep
        # botocore logs whole response bodies at DEBUG, AssumeRole's secrets included: never here.
        logging.getLogger("botocore").setLevel(logging.INFO)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StsBroker:
        return cls(endpoint=env.get(AWS_ENDPOINT) or None, region=env.get(AWS_REGION) or DEFAULT_REGION)

    def _client(self, service: str) -> Any:
        import boto3  # type: ignore[import-untyped]

        if self._session is None:  # its own session: boto3's default one caches the first credentials it saw
            self._session = boto3.session.Session(region_name=self.region)
        return self._session.client(service, endpoint_url=self.endpoint)

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(fn)
        except Exception as exc:  # botocore raises many unrelated types; all mean the same here
            where = self.endpoint or "AWS"
            raise CredentialsUnavailable(
                f"the sts broker could not {what} at {where}: {type(exc).__name__}: {exc}; check the "
                "executor's AWS credentials (the usual AWS_* variables) and UPM_AWS_ENDPOINT"
            ) from exc

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials:
        await self._sweep_now_and_then()
        role = f"{ROLE_PREFIX}{_short(tenant, change_id, target)}"
        duration = int(min(max(ttl_s, STS_MIN_S), STS_MAX_S))
        iam, sts = self._client("iam"), self._client("sts")
        if self._principal is None:
            self._principal = str((await self._call("identify itself", sts.get_caller_identity))["Arn"])
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": self._principal}, "Action": "sts:AssumeRole"}]}

        def make() -> Any:
            arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust),
                                  MaxSessionDuration=STS_MAX_S,
                                  Tags=[{"Key": "upm:tenant", "Value": tenant},
                                        {"Key": "upm:change", "Value": change_id}])["Role"]["Arn"]
            iam.put_role_policy(RoleName=role, PolicyName="upm-change", PolicyDocument=json.dumps(_CHANGE_ROLE_POLICY))
            return sts.assume_role(RoleArn=arn, RoleSessionName=role, DurationSeconds=duration)["Credentials"]

        creds = await self._call(f"create and assume the role {role}", make)
        expires = creds["Expiration"]
        values = (str(creds["AccessKeyId"]), str(creds["SecretAccessKey"]), str(creds["SessionToken"]))
        return IssuedCredentials(
            target=target,
            kind=self.kind,
            ref=f"sts:{role}",
            expires_at=_rfc3339(expires.timestamp() if isinstance(expires, datetime) else time.time() + duration),
            env={"AWS_ACCESS_KEY_ID": values[0], "AWS_SECRET_ACCESS_KEY": values[1], "AWS_SESSION_TOKEN": values[2]},
            secrets=values,
        )

    async def revoke(self, ref: str) -> None:
        role = ref.removeprefix("sts:")
        iam = self._client("iam")

        def deny() -> None:
            try:
                iam.put_role_policy(RoleName=role, PolicyName="upm-revoked", PolicyDocument=json.dumps(_REVOKED_POLICY))
                iam.tag_role(RoleName=role, Tags=[{"Key": REVOKED_AT_TAG, "Value": str(int(time.time()))}])
            except iam.exceptions.NoSuchEntityException:  # swept already: no session of it works
                log.info("the sts role %s is already deleted: nothing to revoke", role)

        await self._call(f"revoke the role {role}", deny)

    async def _sweep_now_and_then(self) -> None:
        """Sweep if this instance has not for ``sweep_every_s``; a failure is logged, never raised."""
        moment = time.monotonic()
        if self._swept_at is not None and moment - self._swept_at < self.sweep_every_s:
            return
        self._swept_at = moment  # claimed first: concurrent issues do not sweep twice
        try:
            await self.sweep(time.time())
        except CredentialsUnavailable as exc:
            log.warning("the sts broker skipped sweeping its old roles (issuing goes on): %s", exc)

    async def sweep(self, now: float) -> list[str]:
        """Delete the ``upm-chg-`` roles no session can use any more at ``now`` (epoch seconds), at
        most ``SWEEP_MAX_ROLES`` examined; return the names deleted. A role that cannot be deleted is
        logged and skipped; a failure to list the roles raises :class:`CredentialsUnavailable`."""
        iam = self._client("iam")
        old = await self._call("list its roles", lambda: self._old_roles(iam, now))
        deleted = [role for role, created in old.items()
                   if await anyio.to_thread.run_sync(self._sweep_role, iam, role, created, now)]
        if deleted:
            log.info("the sts broker deleted %d old role(s): %s", len(deleted), ", ".join(deleted))
        return deleted

    def _old_roles(self, iam: Any, now: float) -> dict[str, float]:
        """The broker's roles created more than ``keep_s`` ago (one revoked since is not old enough),
        with their creation time."""
        old: dict[str, float] = {}
        for page in iam.get_paginator("list_roles").paginate():
            for role in page["Roles"]:
                created = role["CreateDate"].timestamp()
                if role["RoleName"].startswith(ROLE_PREFIX) and now - created > self.keep_s:
                    old[role["RoleName"]] = created
                    if len(old) == SWEEP_MAX_ROLES:
                        return old
        return old

    def _sweep_role(self, iam: Any, role: str, created: float, now: float) -> bool:
        """Delete ``role`` (its inline policies first) if it is past its keep; True if deleted."""
        try:
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role)["Tags"]}
            if not self._expired(tags, created, now):
                return False
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
                for policy in page["PolicyNames"]:
                    iam.delete_role_policy(RoleName=role, PolicyName=policy)
            iam.delete_role(RoleName=role)
        except iam.exceptions.NoSuchEntityException:
            log.info("the sts role %s was deleted meanwhile", role)
            return False
        except Exception as exc:  # botocore raises many unrelated types; the next role may still go
            log.warning("the sts broker could not delete its old role %s: %s: %s", role, type(exc).__name__, exc)
            return False
        return True

    def _expired(self, tags: Mapping[str, str], created: float, now: float) -> bool:
        if REVOKED_AT_TAG in tags:
            return now - float(tags[REVOKED_AT_TAG]) > self.keep_s
        return now - created > STS_MAX_S + self.keep_s  # never revoked: its one session has expired


class PostgresBroker:
    """Per-change login roles ``VALID UNTIL`` the credentials' expiry (see the module docstring)."""

    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        parts = urllib.parse.urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ConfigError(f"{POSTGRES_DSN} must be postgresql://USER:PASSWORD@HOST:PORT/DB (a superuser's)")
        self.dsn = dsn
        self.host = parts.hostname
        self.port = parts.port or 5432

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PostgresBroker:
        dsn = env.get(POSTGRES_DSN)
        if not dsn:
            raise CredentialsUnavailable(
                f"the postgres broker needs {POSTGRES_DSN} (a superuser's DSN) in the executor's environment; "
                "`upm up --with postgres` or `--postgres-dsn` sets it"
            )
        return cls(dsn)

    async def _sql(self, what: str, *statements: str) -> None:
        try:
            await anyio.to_thread.run_sync(lambda: psql_dsn(self.dsn, statements))
        except ConfigError as exc:
            raise CredentialsUnavailable(f"the postgres broker could not {what}: {exc}") from exc

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials:
        role = f"upm_c_{_short(tenant, change_id, target)}"
        password = secrets.token_urlsafe(24)
        expires = time.time() + ttl_s
        until = datetime.fromtimestamp(expires, UTC).isoformat()
        await self._sql(f"create the login role {role}",
                        f"CREATE ROLE {role} LOGIN PASSWORD '{password}' VALID UNTIL '{until}' IN ROLE {PG_OPERATOR}")
        return IssuedCredentials(
            target=target,
            kind=self.kind,
            ref=f"postgres:{role}",
            expires_at=_rfc3339(expires),
            env={"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": role, "PGPASSWORD": password,
                 "PGDATABASE": "postgres", "PGOPTIONS": f"-c role={PG_OPERATOR}"},
            secrets=(password,),
        )

    async def revoke(self, ref: str) -> None:
        role = ref.removeprefix("postgres:")
        await self._sql(f"drop the login role {role}",
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = "
                        f"'{role}'", f"DROP ROLE IF EXISTS {role}")


def broker_for(kind: str, *, token_store: str | None) -> CredentialsBroker:
    """The broker of ``kind`` (a value of ``credentials.brokers`` in the executor policy).

    ``sts`` and ``postgres`` read where their target is from this process's environment
    (``UPM_AWS_ENDPOINT``/``UPM_AWS_REGION`` and the usual AWS credentials; ``UPM_POSTGRES_DSN``).
    """
    if kind == "none":
        return NoCredentials()
    if kind == "token":
        if not token_store:
            raise CredentialsUnavailable(
                "the token broker needs a store folder: set credentials.token_store in the executor policy"
            )
        return LocalTokenBroker(Path(token_store))
    if kind == "sts":
        return StsBroker.from_env(os.environ)
    if kind == "postgres":
        return PostgresBroker.from_env(os.environ)
    raise CredentialsUnavailable(f"unknown credentials broker {kind!r}: use 'none', 'token', 'sts' or 'postgres'")
